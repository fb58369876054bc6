//! FCI orientation rules on a [`Pag`], in causality-lab's order of iteration: R0 (v-structures),
//! R1–R4 (arrowheads), R5–R7 (selection bias) and R8–R10 (tail completeness).

use super::pag::{Mark, Pag};
use super::pyset::{combinations, PySet};

impl Pag {
    /// R0: orient `x *-> z <-* y` for non-adjacent `x, y` whose separating set lacks `z`.
    pub fn orient_v_structures(&mut self) {
        for z in self.node_list() {
            let xy = self.adjacent(z, None).to_vec();
            let mut pairs = Vec::new();
            combinations(&xy, 2, |p| {
                pairs.push((p[0], p[1]));
                true
            });
            for (x, y) in pairs {
                if self.is_connected(x, y) {
                    continue;
                }
                if !self.in_sepset(x, y, z) {
                    self.set_mark(x, z, Mark::Arrow);
                    self.set_mark(y, z, Mark::Arrow);
                }
            }
        }
    }

    /// Applies the given rules (numbers 1–10) until none changes the graph.
    pub fn maximally_orient(&mut self, rules: &[u8]) {
        loop {
            let mut modified = false;
            for &r in rules {
                modified |= match r {
                    1 => self.rule_1(),
                    2 => self.rule_2(),
                    3 => self.rule_3(),
                    4 => self.rule_4(),
                    5 => self.rule_5(),
                    6 => self.rule_6(),
                    7 => self.rule_7(),
                    8 => self.rule_8(),
                    9 => self.rule_9(),
                    10 => self.rule_10(),
                    _ => false,
                };
            }
            if !modified {
                return;
            }
        }
    }

    /// R1: `a *-> b o-* c`, `a, c` non-adjacent ⇒ `b —> c`.
    fn rule_1(&mut self) -> bool {
        let mut modified = false;
        for b in self.node_list() {
            let a_nodes = self.at(b, Mark::Arrow).to_vec();
            let c_nodes = self.at(b, Mark::Circle).to_vec();
            for &a in &a_nodes {
                for &c in &c_nodes {
                    if !self.is_connected(a, c) {
                        self.set_mark(c, b, Mark::Tail);
                        self.set_mark(b, c, Mark::Arrow);
                        modified = true;
                    }
                }
            }
        }
        modified
    }

    /// R2: `a *-> b —> c` or `a —> b *-> c`, with `a *-o c` ⇒ `a *-> c`.
    fn rule_2(&mut self) -> bool {
        let mut modified = false;
        for b in self.node_list() {
            let a_nodes = self.at(b, Mark::Arrow).to_vec();
            let c_nodes = self.at(b, Mark::Tail).to_vec();
            for &c in &c_nodes {
                if !self.has(c, Mark::Arrow, b) {
                    continue;
                }
                for &a in &a_nodes {
                    if self.has(c, Mark::Circle, a) {
                        self.set_mark(a, c, Mark::Arrow);
                        modified = true;
                    }
                }
            }
        }
        for c in self.node_list() {
            let b_nodes = self.at(c, Mark::Arrow).to_vec();
            for b in b_nodes {
                let a_nodes = self.at(b, Mark::Arrow).to_vec();
                for a in a_nodes {
                    if !self.has(a, Mark::Tail, b) {
                        continue;
                    }
                    if self.has(c, Mark::Circle, a) {
                        self.set_mark(a, c, Mark::Arrow);
                        modified = true;
                    }
                }
            }
        }
        modified
    }

    /// R3: `a *-> b <-* c`, `a *-o d o-* c`, `a, c` non-adjacent, `d *-o b` ⇒ `d *-> b`.
    fn rule_3(&mut self) -> bool {
        let mut modified = false;
        for b in self.node_list() {
            let d_nodes = self.at(b, Mark::Circle).to_vec();
            for d in d_nodes {
                let ac = self
                    .at(b, Mark::Arrow)
                    .intersection(self.at(d, Mark::Circle))
                    .to_vec();
                let mut pairs = Vec::new();
                combinations(&ac, 2, |p| {
                    pairs.push((p[0], p[1]));
                    true
                });
                for (a, c) in pairs {
                    if !self.is_connected(a, c) {
                        self.set_mark(d, b, Mark::Arrow);
                        modified = true;
                    }
                }
            }
        }
        modified
    }

    /// R4: a discriminating path `(d, …, a, b, c)` with `b o-* c` ⇒ `b —> c` when `b` is in the
    /// separating set of `d, c`, else `a <-> b <-> c`.
    fn rule_4(&mut self) -> bool {
        let mut modified = false;
        for b in self.node_list() {
            let c_nodes = self.at(b, Mark::Circle).to_vec();
            for c in c_nodes {
                let a_nodes = self.parents(c).to_vec();
                for a in a_nodes {
                    if !self.has(a, Mark::Arrow, b) {
                        continue;
                    }
                    let Some(d) = self.discriminating_path_source(a, b, c) else {
                        continue;
                    };
                    if self.in_sepset(d, c, b) {
                        self.set_mark(b, c, Mark::Arrow);
                        self.set_mark(c, b, Mark::Tail);
                    } else {
                        self.set_mark(b, a, Mark::Arrow);
                        self.set_mark(a, b, Mark::Arrow);
                        self.set_mark(b, c, Mark::Arrow);
                        self.set_mark(c, b, Mark::Arrow);
                    }
                    modified = true;
                }
            }
        }
        modified
    }

    /// The source `d` of a discriminating path `d *-> … <-> a <-* b *-* c` for `b`, searched
    /// breadth first as causality-lab does.
    fn discriminating_path_source(&self, a: usize, b: usize, c: usize) -> Option<usize> {
        let pool = self.nodes.minus(&[a, b, c]);
        let mut frontier: PySet = [a].into_iter().collect();
        let mut visited: PySet = [a, b, c].into_iter().collect();
        while !frontier.is_empty() {
            let mut next = PySet::new();
            for cur in frontier.iter() {
                let d_nodes = self.at(cur, Mark::Arrow).minus(&[b, c]).intersection(&pool);
                for d in d_nodes.iter() {
                    if !self.is_connected(d, c) {
                        return Some(d);
                    }
                    if !visited.contains(d) && self.is_parent(d, c) && self.has(d, Mark::Arrow, cur)
                    {
                        next.add(d);
                    }
                }
            }
            visited.update(&next);
            frontier = next;
        }
        None
    }

    /// An uncovered path `<x, nx, …, ny, y>` whose consecutive inner nodes satisfy `cond`; the
    /// inner nodes are returned (causality-lab's `find_uncovered_path`).
    fn uncovered_path(
        &self,
        x: usize,
        y: usize,
        nx: usize,
        ny: usize,
        en: Option<&PySet>,
        cond: &dyn Fn(&Pag, usize, usize) -> bool,
    ) -> Option<Vec<usize>> {
        if nx == ny {
            return Some(vec![nx]);
        }
        let en = en.unwrap_or(&self.nodes).minus(&[x, y, nx, ny]);
        if cond(self, nx, ny) && !self.is_connected(nx, y) && !self.is_connected(x, ny) {
            return Some(vec![nx, ny]);
        }
        let c_nodes: PySet = self
            .adjacent(nx, Some(&en))
            .iter()
            .filter(|&t| cond(self, nx, t) && !self.is_connected(x, t))
            .collect();
        for c in c_nodes.iter() {
            if let Some(path) = self.uncovered_path(nx, y, c, ny, Some(&en), cond) {
                let mut full = vec![nx];
                full.extend(path);
                return Some(full);
            }
        }
        None
    }

    /// R5 (selection bias): `a o-o b` closing an uncovered circle path ⇒ tails along it.
    fn rule_5(&mut self) -> bool {
        let mut modified = false;
        let nodes = self.node_list();
        let mut edges = Vec::new();
        for &a in &nodes {
            for &b in &nodes {
                if a != b && self.is_edge(a, b, Mark::Circle, Mark::Circle) {
                    edges.push((a, b));
                }
            }
        }
        let circ = |g: &Pag, i: usize, j: usize| g.is_edge(i, j, Mark::Circle, Mark::Circle);
        for (a, b) in edges {
            let others = self.nodes.minus(&[a, b]);
            let na: Vec<usize> = others
                .iter()
                .filter(|&n| circ(self, a, n) && !self.is_connected(b, n))
                .collect();
            let nb: Vec<usize> = others
                .iter()
                .filter(|&n| circ(self, b, n) && !self.is_connected(a, n))
                .collect();
            for &x in &na {
                for &y in &nb {
                    if let Some(path) = self.uncovered_path(a, b, x, y, None, &circ) {
                        modified = true;
                        self.set_mark(a, b, Mark::Tail);
                        self.set_mark(b, a, Mark::Tail);
                        let full: Vec<usize> = [a].into_iter().chain(path).chain([b]).collect();
                        for w in full.windows(2) {
                            self.set_mark(w[0], w[1], Mark::Tail);
                            self.set_mark(w[1], w[0], Mark::Tail);
                        }
                    }
                }
            }
        }
        modified
    }

    /// R6 (selection bias): `a — b o-* c` ⇒ `b —* c`.
    fn rule_6(&mut self) -> bool {
        let mut modified = false;
        for b in self.node_list() {
            let has_undirected = self
                .at(b, Mark::Tail)
                .iter()
                .any(|a| self.has(a, Mark::Tail, b));
            if !has_undirected {
                continue;
            }
            for c in self.at(b, Mark::Circle).to_vec() {
                self.set_mark(c, b, Mark::Tail);
                modified = true;
            }
        }
        modified
    }

    /// R7 (selection bias): `a —o b o-* c`, `a, c` non-adjacent ⇒ `b —* c`.
    fn rule_7(&mut self) -> bool {
        let mut modified = false;
        for b in self.node_list() {
            let a_nodes: Vec<usize> = self
                .at(b, Mark::Circle)
                .iter()
                .filter(|&a| self.has(a, Mark::Tail, b))
                .collect();
            let c_nodes = self.at(b, Mark::Circle).to_vec();
            for &a in &a_nodes {
                for &c in &c_nodes {
                    if a != c && !self.is_connected(a, c) {
                        self.set_mark(c, b, Mark::Tail);
                        modified = true;
                    }
                }
            }
        }
        modified
    }

    /// R8: `a —> b —> c` or `a —o b —> c`, with `a o-> c` ⇒ `a —> c`.
    fn rule_8(&mut self) -> bool {
        let mut modified = false;
        for b in self.node_list() {
            let a_nodes: Vec<usize> = self
                .at(b, Mark::Arrow)
                .union(self.at(b, Mark::Circle))
                .iter()
                .filter(|&a| self.has(a, Mark::Tail, b))
                .collect();
            let c_nodes: Vec<usize> = self
                .at(b, Mark::Tail)
                .iter()
                .filter(|&c| self.has(c, Mark::Arrow, b))
                .collect();
            for &a in &a_nodes {
                for &c in &c_nodes {
                    if self.is_edge(a, c, Mark::Circle, Mark::Arrow) {
                        self.set_mark(c, a, Mark::Tail);
                        modified = true;
                    }
                }
            }
        }
        modified
    }

    /// R9: `a o-> c` with a possibly directed uncovered path `<a, b, …, c>`, `b, c`
    /// non-adjacent ⇒ `a —> c`.
    fn rule_9(&mut self) -> bool {
        let pp = |g: &Pag, i: usize, j: usize| g.is_possible_parent(i, j);
        for a in self.node_list() {
            let c_nodes: Vec<usize> = self
                .at(a, Mark::Circle)
                .iter()
                .filter(|&c| self.has(c, Mark::Arrow, a))
                .collect();
            for c in c_nodes {
                let b_nodes: Vec<usize> = self
                    .possible_children(a, Some(&self.nodes.minus(&[c, a])))
                    .iter()
                    .filter(|&b| !self.is_connected(b, c))
                    .collect();
                for b in b_nodes {
                    let d_nodes = self.possible_parents(c, &self.nodes.minus(&[a, b, c]));
                    for d in d_nodes.iter() {
                        if self.uncovered_path(a, c, b, d, None, &pp).is_some() {
                            self.set_mark(c, a, Mark::Tail);
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// R10: `a o-> c`, `b —> c <— d`, and two possibly directed uncovered paths from `a` to
    /// `b` and to `d` starting with non-adjacent nodes ⇒ `a —> c`.
    fn rule_10(&mut self) -> bool {
        let any = |g: &Pag, i: usize, j: usize| g.is_connected(i, j);
        for c in self.node_list() {
            let others = self.nodes.minus(&[c]);
            let a_nodes: Vec<usize> = others
                .iter()
                .filter(|&a| self.is_edge(a, c, Mark::Circle, Mark::Arrow))
                .collect();
            if a_nodes.is_empty() {
                continue;
            }
            let bd: Vec<usize> = others
                .iter()
                .filter(|&n| self.is_edge(n, c, Mark::Tail, Mark::Arrow))
                .collect();
            if bd.len() < 2 {
                continue;
            }
            for a in a_nodes {
                let kids = self
                    .possible_children(a, Some(&self.nodes.minus(&[a, c])))
                    .to_vec();
                if kids.len() < 2 {
                    continue;
                }
                let mut pairs = Vec::new();
                combinations(&bd, 2, |p| {
                    pairs.push((p[0], p[1]));
                    true
                });
                for (b, d) in pairs {
                    for &e in &kids {
                        for &f in &kids {
                            if e == f || self.is_connected(e, f) {
                                continue;
                            }
                            if self.uncovered_path(a, c, e, b, None, &any).is_some()
                                && self.uncovered_path(a, c, f, d, None, &any).is_some()
                            {
                                self.set_mark(c, a, Mark::Tail);
                                return true;
                            }
                        }
                    }
                }
            }
        }
        false
    }
}
