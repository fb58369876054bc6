//! Ordered ICD structure learning (causality-lab's `LearnStructOrderedICD` with
//! `learn_structure_global`, no selection bias, tail completeness on).
//!
//! Nodes are taken in a causal order (here: ascending position). Edges between a node and its
//! predecessors are pruned with conditioning sets of growing size `r`: for `r = 0` the empty
//! set, for `r = 1` single neighbours of the later node, for `r ≥ 2` subsets of its PDS tree
//! (over itself and its predecessors) whose members are possible ancestors of either end.

use std::collections::HashMap;

use super::citest::ParCorrTest;
use super::pag::{Mark, Pag};
use super::pds_tree::create_pds_tree;
use super::pyset::PySet;

/// Options of the structure learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcdOptions {
    /// Apply R5–R7 at the end (selection variables may be present). CLEANN uses `false`.
    pub selection_bias: bool,
    /// Apply R8–R10 at the end.
    pub tail_completeness: bool,
}

impl Default for IcdOptions {
    fn default() -> Self {
        Self {
            selection_bias: false,
            tail_completeness: true,
        }
    }
}

/// The learner's state: the graph, the causal order and which edges are settled.
struct OrderedIcd<'a> {
    graph: Pag,
    order: Vec<usize>,
    ci: &'a mut ParCorrTest,
    /// `edge_done[base][ancestor]` for every pair earlier→later in the order.
    edge_done: Vec<HashMap<usize, bool>>,
    options: IcdOptions,
}

/// Learns a PAG over `nodes` (the Python set of node positions) with the causal order
/// `order` (every node once, ancestors first).
pub fn learn(nodes: PySet, order: &[usize], ci: &mut ParCorrTest, options: IcdOptions) -> Pag {
    let edge_done = (0..order.len())
        .map(|b| order[..b].iter().map(|&a| (a, false)).collect())
        .collect();
    let mut icd = OrderedIcd {
        graph: Pag::complete(nodes),
        order: order.to_vec(),
        ci,
        edge_done,
        options,
    };
    icd.learn_global();
    icd.graph
}

impl OrderedIcd<'_> {
    fn learn_global(&mut self) {
        let n = self.order.len();
        for base_idx in 1..n {
            self.learn_r0(base_idx);
        }
        self.orient(true);
        for base_idx in 2..n {
            self.learn_r1(base_idx);
        }
        self.orient(true);
        // causality-lab initialises `done` once, before the loop over r: after the first r
        // that leaves an edge untested-but-kept, every later r runs too.
        let mut done = true;
        for r in 2..n.saturating_sub(1) {
            for base_idx in r + 1..n {
                let node_done = self.learn_r(r, base_idx);
                done = done && node_done;
            }
            if done {
                break;
            }
            self.orient(true);
        }
        self.orient(false);
    }

    fn orient(&mut self, anytime: bool) {
        // reset: every edge earlier → later becomes `o->`
        for b in 1..self.order.len() {
            let base = self.order[b];
            for a in 0..b {
                let anc = self.order[a];
                if self.graph.is_connected(anc, base) {
                    self.graph.set_mark(anc, base, Mark::Arrow);
                    self.graph.set_mark(base, anc, Mark::Circle);
                }
            }
        }
        self.graph.orient_v_structures();
        self.graph.maximally_orient(&[1, 2, 3, 4]);
        if !anytime {
            if self.options.selection_bias {
                self.graph.maximally_orient(&[5, 6, 7]);
            }
            if self.options.tail_completeness {
                self.graph.maximally_orient(&[8, 9, 10]);
            }
        }
    }

    fn learn_r0(&mut self, base_idx: usize) {
        let base = self.order[base_idx];
        for a in 0..base_idx {
            let anc = self.order[a];
            if self.edge_done[base_idx][&anc] {
                continue;
            }
            if self.ci.independent(anc, base, &[]) {
                self.graph.delete_edge(anc, base);
                self.edge_done[base_idx].insert(anc, true);
            }
        }
    }

    fn learn_r1(&mut self, base_idx: usize) -> bool {
        let mut done = true;
        let base = self.order[base_idx];
        let anc_nodes: PySet = self.order[..base_idx].iter().copied().collect();
        for anc in anc_nodes.to_vec() {
            if !self.graph.is_connected(anc, base) {
                continue;
            }
            if self.edge_done[base_idx][&anc] {
                continue;
            }
            let pool = anc_nodes.minus(&[anc]);
            let pot = self.graph.adjacent(base, Some(&pool));
            for z in pot.to_vec() {
                if self.ci.independent(anc, base, &[z]) {
                    self.graph.delete_edge(anc, base);
                    self.graph.set_sepset(anc, base, &[z]);
                    self.edge_done[base_idx].insert(anc, true);
                    break;
                }
                done = false;
            }
        }
        done
    }

    fn learn_r(&mut self, r: usize, base_idx: usize) -> bool {
        let base = self.order[base_idx];
        if self.edge_done[base_idx].values().all(|&d| d) {
            return true;
        }
        let en: PySet = self.order[..=base_idx].iter().copied().collect();
        let (tree, pds) = create_pds_tree(&self.graph, base, Some(&en), Some(r));
        let cond_sets = tree.subsets(&pds, r);
        let mut done = true;
        for a in 0..base_idx {
            let anc = self.order[a];
            if self.edge_done[base_idx][&anc] {
                continue;
            }
            self.edge_done[base_idx].insert(anc, true);
            if !self.graph.is_connected(anc, base) {
                continue;
            }
            for (cond, _) in &cond_sets {
                if cond.contains(&anc) {
                    continue;
                }
                if !self.cond_set_possible_ancestor(cond, a, base_idx) {
                    continue;
                }
                if self.ci.independent(anc, base, cond) {
                    self.graph.delete_edge(anc, base);
                    self.graph.set_sepset(anc, base, cond);
                    self.edge_done[base_idx].insert(anc, true);
                    break;
                }
                self.edge_done[base_idx].insert(anc, false);
                done = false;
            }
        }
        done
    }

    /// Every member of `cond` is a possible ancestor of the earlier node (through nodes up to
    /// it in the order) or of the later node (through nodes up to it).
    fn cond_set_possible_ancestor(&self, cond: &[usize], anc_idx: usize, base_idx: usize) -> bool {
        let anc = self.order[anc_idx];
        let base = self.order[base_idx];
        let anc_en: PySet = self.order[..=anc_idx].iter().copied().collect();
        let base_en: PySet = self.order[..=base_idx].iter().copied().collect();
        cond.iter().all(|&z| {
            self.graph.is_possible_ancestor(z, anc, Some(&anc_en))
                || self.graph.is_possible_ancestor(z, base, Some(&base_en))
        })
    }
}
