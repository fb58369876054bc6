//! Partial ancestral graph (PAG) with edge marks, stored like causality-lab's `MixedGraph`:
//! for each node and mark, the set of neighbours whose edge carries that mark at this node.
//! Sets are [`PySet`]s so that every iteration follows causality-lab's order.

use std::collections::HashMap;

use super::pyset::PySet;

/// An edge mark at one end of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// `o`: not determined.
    Circle = 0,
    /// `>`: arrowhead.
    Arrow = 1,
    /// `-`: tail.
    Tail = 2,
}

/// The order in which causality-lab visits the three mark sets of a node (its `set` of mark
/// strings; the one place where its order depends on Python's string hashing).
pub const MARK_ORDER: [Mark; 3] = [Mark::Circle, Mark::Arrow, Mark::Tail];

const ALL_MARKS: [Mark; 3] = [Mark::Circle, Mark::Arrow, Mark::Tail];

/// A PAG over a set of positions.
#[derive(Debug, Clone)]
pub struct Pag {
    /// The nodes, as the Python set the graph was built from.
    pub nodes: PySet,
    /// Position → local index (`u32::MAX` for positions that are not nodes).
    local: Vec<u32>,
    /// Number of nodes.
    n: usize,
    /// `n × n`: mark at the row node on its edge with the column node (0 none, 1 + mark).
    mark: Vec<u8>,
    marks: Vec<[PySet; 3]>,
    /// Separating sets of removed edges, keyed by (smaller, larger) position.
    sepset: HashMap<(usize, usize), Vec<usize>>,
}

impl Pag {
    /// A complete graph of `o—o` edges over `nodes`.
    pub fn complete(nodes: PySet) -> Self {
        let node_list = nodes.to_vec();
        let n = node_list.len();
        let mut local = vec![u32::MAX; node_list.iter().max().map_or(0, |m| m + 1)];
        for (i, &p) in node_list.iter().enumerate() {
            local[p] = i as u32;
        }
        let marks = node_list
            .iter()
            .map(|&p| [nodes.minus(&[p]), PySet::new(), PySet::new()])
            .collect();
        let mut mark = vec![1 + Mark::Circle as u8; n * n];
        for i in 0..n {
            mark[i * n + i] = 0;
        }
        Self {
            nodes,
            local,
            n,
            mark,
            marks,
            sepset: HashMap::new(),
        }
    }

    fn li(&self, node: usize) -> usize {
        self.local[node] as usize
    }

    /// Whether the mark at `node` on its edge with `other` is `m`.
    pub fn has(&self, node: usize, m: Mark, other: usize) -> bool {
        self.mark[self.li(node) * self.n + self.li(other)] == 1 + m as u8
    }

    /// Node positions in the graph's iteration order.
    pub fn node_list(&self) -> Vec<usize> {
        self.nodes.to_vec()
    }

    /// The set of neighbours whose edge has mark `m` at `node`.
    pub fn at(&self, node: usize, m: Mark) -> &PySet {
        &self.marks[self.li(node)][m as usize]
    }

    fn at_mut(&mut self, node: usize, m: Mark) -> &mut PySet {
        let i = self.li(node);
        &mut self.marks[i][m as usize]
    }

    /// Whether `i` and `j` are adjacent.
    pub fn is_connected(&self, i: usize, j: usize) -> bool {
        self.mark[self.li(i) * self.n + self.li(j)] != 0
    }

    /// Whether the edge `i *-* j` has `mi` at `i` and `mj` at `j`.
    pub fn is_edge(&self, i: usize, j: usize, mi: Mark, mj: Mark) -> bool {
        self.has(i, mi, j) && self.has(j, mj, i)
    }

    /// The mark at `node` on its edge with `other`, if adjacent.
    pub fn mark_at(&self, node: usize, other: usize) -> Option<Mark> {
        ALL_MARKS
            .iter()
            .copied()
            .find(|&m| self.has(node, m, other))
    }

    /// Neighbours of `node` (any mark), optionally intersected with `pool`.
    pub fn adjacent(&self, node: usize, pool: Option<&PySet>) -> PySet {
        let mut out = PySet::new();
        for m in MARK_ORDER {
            out.update(self.at(node, m));
        }
        match pool {
            Some(p) => out.intersection(p),
            None => out,
        }
    }

    /// Removes the edge between `i` and `j`.
    pub fn delete_edge(&mut self, i: usize, j: usize) {
        for m in ALL_MARKS {
            self.at_mut(i, m).discard(j);
            self.at_mut(j, m).discard(i);
        }
        let (a, b) = (self.li(i), self.li(j));
        self.mark[a * self.n + b] = 0;
        self.mark[b * self.n + a] = 0;
    }

    /// Sets the mark at `target` on the edge from `source`.
    pub fn set_mark(&mut self, source: usize, target: usize, m: Mark) {
        for old in ALL_MARKS {
            self.at_mut(target, old).discard(source);
        }
        self.at_mut(target, m).add(source);
        let (t, s) = (self.li(target), self.li(source));
        self.mark[t * self.n + s] = 1 + m as u8;
    }

    /// Records the separating set of a removed edge.
    pub fn set_sepset(&mut self, i: usize, j: usize, cond: &[usize]) {
        self.sepset.insert((i.min(j), i.max(j)), cond.to_vec());
    }

    /// Whether `z` is in the separating set of `i` and `j` (empty when never set).
    pub fn in_sepset(&self, i: usize, j: usize, z: usize) -> bool {
        self.sepset
            .get(&(i.min(j), i.max(j)))
            .is_some_and(|s| s.contains(&z))
    }

    /// No arrowhead at `parent` and no tail at `child`: `parent` may be a parent of `child`.
    pub fn is_possible_parent(&self, parent: usize, child: usize) -> bool {
        parent != child
            && self.is_connected(parent, child)
            && !(self.has(child, Mark::Tail, parent) || self.has(parent, Mark::Arrow, child))
    }

    /// `parent —> child`.
    pub fn is_parent(&self, parent: usize, child: usize) -> bool {
        self.has(child, Mark::Arrow, parent) && self.has(parent, Mark::Tail, child)
    }

    /// Nodes of `en` (default: all but `parent`) that `parent` may be a parent of.
    pub fn possible_children(&self, parent: usize, en: Option<&PySet>) -> PySet {
        let default;
        let en = match en {
            Some(e) => e,
            None => {
                default = self.nodes.minus(&[parent]);
                &default
            }
        };
        en.iter()
            .filter(|&c| self.is_possible_parent(parent, c))
            .collect()
    }

    /// Nodes of `en` that may be parents of `child`.
    pub fn possible_parents(&self, child: usize, en: &PySet) -> PySet {
        en.iter()
            .filter(|&p| self.is_possible_parent(p, child))
            .collect()
    }

    /// Parents `p —> child`.
    pub fn parents(&self, child: usize) -> PySet {
        self.at(child, Mark::Arrow)
            .iter()
            .filter(|&p| self.has(p, Mark::Tail, child))
            .collect()
    }

    /// Whether a possibly directed path leads from `ancestor` to `descendant` through nodes of
    /// `en` (default: all nodes). causality-lab searches depth first with a shrinking pool; the
    /// answer is plain reachability, computed here breadth first.
    pub fn is_possible_ancestor(
        &self,
        ancestor: usize,
        descendant: usize,
        en: Option<&PySet>,
    ) -> bool {
        let allowed = |v: usize| en.is_none_or(|e| e.contains(v));
        if !allowed(descendant) {
            return false;
        }
        let mut seen = vec![ancestor];
        let mut stack = vec![ancestor];
        while let Some(v) = stack.pop() {
            for m in ALL_MARKS {
                for c in self.at(v, m).iter() {
                    if seen.contains(&c) || !allowed(c) || !self.is_possible_parent(v, c) {
                        continue;
                    }
                    if c == descendant {
                        return true;
                    }
                    seen.push(c);
                    stack.push(c);
                }
            }
        }
        false
    }

    /// Whether `mid` may be a collider on `x *-* mid *-* y`: the triple is a triangle or `mid`
    /// is a definite collider.
    pub fn is_possible_collider(&self, x: usize, mid: usize, y: usize) -> bool {
        if x == y || !self.is_connected(x, mid) || !self.is_connected(mid, y) {
            return false;
        }
        self.is_connected(x, y) || (self.has(mid, Mark::Arrow, x) && self.has(mid, Mark::Arrow, y))
    }

    /// Adjacency of the skeleton restricted to `en` (default: all nodes), as a lookup.
    pub fn skeleton(&self, en: Option<&PySet>) -> Skeleton {
        let nodes = match en {
            Some(e) => e.copy(),
            None => self.nodes.copy(),
        };
        let list = nodes.to_vec();
        let mut edges = std::collections::HashSet::new();
        for (a, &i) in list.iter().enumerate() {
            for &j in &list[a + 1..] {
                if self.is_connected(i, j) {
                    edges.insert((i.min(j), i.max(j)));
                }
            }
        }
        Skeleton { nodes, edges }
    }
}

/// An undirected graph (causality-lab's `UndirectedGraph` from `get_skeleton_graph`).
#[derive(Debug, Clone)]
pub struct Skeleton {
    nodes: PySet,
    edges: std::collections::HashSet<(usize, usize)>,
}

impl Skeleton {
    /// Neighbours of `i`, in the order of the node set with `i` removed.
    pub fn neighbors(&self, i: usize) -> Vec<usize> {
        self.nodes
            .minus(&[i])
            .iter()
            .filter(|&j| self.edges.contains(&(i.min(j), i.max(j))))
            .collect()
    }

    /// Removes the edge `i — j`.
    pub fn remove_edge(&mut self, i: usize, j: usize) {
        self.edges.remove(&(i.min(j), i.max(j)));
    }
}
