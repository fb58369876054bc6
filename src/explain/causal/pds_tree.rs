//! The possible-d-separation (PDS) tree of a node (causality-lab's `create_pds_tree` and
//! `PDSTree`): a breadth-first search over the skeleton that extends a path
//! `n1 *-* n2 *-* n3` when `n2` may be a collider on it, each skeleton edge used once.

use super::pag::Pag;
use super::pyset::{combinations, PySet};

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    /// The graph node (absolute position).
    pub position: usize,
    /// Distance from the root (the root has 0).
    pub depth: usize,
    /// Indices of the children in [`PdsTree::nodes`], in insertion order.
    pub children: Vec<usize>,
}

/// A PDS tree rooted at index 0 of `nodes`.
#[derive(Debug, Clone, PartialEq)]
pub struct PdsTree {
    /// Arena of tree nodes; index 0 is the root.
    pub nodes: Vec<TreeNode>,
}

impl PdsTree {
    fn new(root: usize) -> Self {
        Self {
            nodes: vec![TreeNode {
                position: root,
                depth: 0,
                children: Vec::new(),
            }],
        }
    }

    /// The root's position.
    pub fn root(&self) -> usize {
        self.nodes[0].position
    }

    fn add_branch(&mut self, parent: usize, position: usize) -> usize {
        let idx = self.nodes.len();
        let depth = self.nodes[parent].depth + 1;
        self.nodes.push(TreeNode {
            position,
            depth,
            children: Vec::new(),
        });
        self.nodes[parent].children.push(idx);
        idx
    }

    /// Smallest depth at which `position` occurs below the root.
    pub fn minimal_distance(&self, position: usize) -> Option<usize> {
        self.nodes[1..]
            .iter()
            .filter(|n| n.position == position)
            .map(|n| n.depth)
            .min()
    }

    /// Distinct positions at each depth ≥ 1, ascending (depth 1 first).
    pub fn per_depth(&self) -> Vec<Vec<usize>> {
        let max = self.nodes.iter().map(|n| n.depth).max().unwrap_or(0);
        let mut out = vec![Vec::new(); max];
        for n in &self.nodes[1..] {
            out[n.depth - 1].push(n.position);
        }
        for v in &mut out {
            v.sort_unstable();
            v.dedup();
        }
        out
    }

    /// Rows `(depth, position)` in depth-first order (children in insertion order), root first.
    pub fn rows(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            let n = &self.nodes[i];
            out.push((n.depth, n.position));
            stack.extend(n.children.iter().rev());
        }
        out
    }

    /// Whether `target` is reachable from the root through tree paths whose inner nodes are all
    /// in `allowed` (causality-lab's `is_reachable`).
    fn is_reachable(&self, from: usize, target: usize, allowed: &[usize]) -> bool {
        if allowed.is_empty() {
            return false;
        }
        for &c in &self.nodes[from].children {
            let p = self.nodes[c].position;
            if p == target {
                return true;
            }
            if allowed.contains(&p) && self.is_reachable(c, target, allowed) {
                return true;
            }
        }
        false
    }

    /// Conditioning sets of `size` nodes from `set_nodes` (in its iteration order) that are
    /// legal (every member reachable from the root through members), each with the sum of its
    /// members' minimal depths, sorted stably by that sum.
    ///
    /// causality-lab enumerates all `C(|set_nodes|, size)` subsets. When that count exceeds
    /// [`MAX_SUBSETS`] (a graph on which causality-lab would run for hours), none are returned
    /// and a warning is logged, so that the caller settles the edges instead of hanging.
    pub fn subsets(&self, set_nodes: &PySet, size: usize) -> Vec<(Vec<usize>, usize)> {
        if binomial(set_nodes.len(), size) > MAX_SUBSETS {
            tracing::warn!(
                nodes = set_nodes.len(),
                size,
                "CLEANN: too many conditioning sets to enumerate; this test round is skipped"
            );
            return Vec::new();
        }
        let items = set_nodes.to_vec();
        let dist: Vec<usize> = items
            .iter()
            .map(|&p| self.minimal_distance(p).unwrap_or(usize::MAX / 64))
            .collect();
        let pos_of = |p: usize| items.iter().position(|&q| q == p).unwrap_or(0);
        let mut out = Vec::new();
        combinations(&items, size, |subset| {
            if subset.iter().all(|&n| self.is_reachable(0, n, subset)) {
                let d = subset.iter().map(|&p| dist[pos_of(p)]).sum();
                // causality-lab stores `set(subset)`; its order only matters for rounding.
                let as_set: PySet = subset.iter().copied().collect();
                out.push((as_set.to_vec(), d));
            }
            true
        });
        out.sort_by_key(|s| s.1);
        out
    }
}

/// Most candidate conditioning sets enumerated for one node and size.
pub const MAX_SUBSETS: u64 = 1_000_000;

/// `C(n, k)`, saturating.
fn binomial(n: usize, k: usize) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k) as u64;
    let mut c: u64 = 1;
    for i in 0..k {
        c = c.saturating_mul(n as u64 - i) / (i + 1);
    }
    c
}

/// Builds the PDS tree of `root` in `pag` over the nodes `en` (default: all), to `max_depth`
/// (default: unlimited). Returns the tree and the possible-d-separation set (without the root).
pub fn create_pds_tree(
    pag: &Pag,
    root: usize,
    en: Option<&PySet>,
    max_depth: Option<usize>,
) -> (PdsTree, PySet) {
    let mut tree = PdsTree::new(root);
    let mut adj = pag.skeleton(en);
    let neighbors = adj.neighbors(root);
    let mut first: std::collections::VecDeque<usize> = neighbors.iter().map(|_| root).collect();
    let mut second: std::collections::VecDeque<usize> = neighbors.iter().copied().collect();
    let mut pds_nodes: Vec<usize> = neighbors.clone();
    for &nb in &neighbors {
        adj.remove_edge(root, nb);
    }
    let n_nodes = en.map_or(pag.nodes.len(), |e| e.len());
    let max_depth = max_depth.unwrap_or(n_nodes.saturating_sub(1));
    let mut second_trees: std::collections::VecDeque<usize> =
        neighbors.iter().map(|&nb| tree.add_branch(0, nb)).collect();
    while let (Some(n1), Some(n2), Some(n2_tree)) = (
        first.pop_front(),
        second.pop_front(),
        second_trees.pop_front(),
    ) {
        if tree.nodes[n2_tree].depth >= max_depth {
            continue;
        }
        for n3 in adj.neighbors(n2) {
            if pag.is_possible_collider(n1, n2, n3) {
                adj.remove_edge(n2, n3);
                first.push_back(n2);
                second.push_back(n3);
                pds_nodes.push(n3);
                let child = tree.add_branch(n2_tree, n3);
                second_trees.push_back(child);
            }
        }
    }
    let mut set: PySet = pds_nodes.into_iter().collect();
    set.discard(root);
    (tree, set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_counts() {
        assert_eq!(binomial(5, 2), 10);
        assert_eq!(binomial(49, 10), 8_217_822_536);
        assert_eq!(binomial(3, 4), 0);
        assert_eq!(binomial(4, 0), 1);
    }
}
