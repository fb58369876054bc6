//! The causal part of the model: the CLEANN parameters and shown radius the method pane owns,
//! the cached possible-d-separation tree of the shown head, and the causal numbers of the view
//! (the shown head, its explaining set, the patches to outline), read from the catalogue's
//! result through [`crate::explain::causal`].

use crate::explain::catalogue::Explanation;
use crate::explain::causal::{effective_radius, head_tree, set_up_to, shown_head};
use crate::session::{CausalParams, Session};

use super::super::state::{Agg, ShownRegion};
use super::{View, ViewInput};

/// The possible-d-separation tree of one head, recomputed on demand and cached.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalTree {
    /// The explained position.
    pub target: usize,
    /// The head.
    pub head: usize,
    /// The parameters the tree was computed with.
    pub params: CausalParams,
    /// `(depth, position)` rows in depth-first order, root (depth 0) first.
    pub rows: Vec<(usize, usize)>,
}

/// What the app keeps of causal explanations: the parameters of the next computation, the
/// radius shown, and the tree of the shown head.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalState {
    /// CLEANN parameters for the next causal computation (keys `a A t T r R`).
    pub params: CausalParams,
    /// The radius of the causal explanation shown (keys `- +`; clamped to the search radius).
    pub radius: usize,
    /// The possible-d-separation tree of the shown head, recomputed on demand.
    pub tree: Option<CausalTree>,
}

impl Default for CausalState {
    fn default() -> Self {
        Self {
            params: CausalParams::default(),
            radius: usize::MAX,
            tree: None,
        }
    }
}

impl CausalState {
    /// The state for a newly opened session: its parameters, the whole search radius shown.
    pub fn for_session(s: &Session) -> Self {
        let params = CausalParams::of_session(s);
        Self {
            radius: params.search_radius,
            params,
            tree: None,
        }
    }

    /// The largest radius the radius selector offers (the stored results' search radius).
    pub fn max_radius(&self, s: Option<&Session>) -> usize {
        stored_params(s)
            .unwrap_or(&self.params)
            .search_radius
            .max(1)
    }

    /// Recomputes the cached tree of the head `view` shows when the selection or the
    /// parameters changed (a few milliseconds: one head).
    pub fn refresh_tree(&mut self, s: Option<&Session>, view: &View) {
        let want = match (s, &view.causal, view.causal_head) {
            (Some(s), Some(ct), Some(head)) => s
                .manifest
                .causal
                .as_ref()
                .map(|c| (s, ct.target, head, c.params.clone())),
            _ => None,
        };
        let Some((s, target, head, params)) = want else {
            self.tree = None;
            return;
        };
        if self
            .tree
            .as_ref()
            .is_some_and(|t| t.target == target && t.head == head && t.params == params)
        {
            return;
        }
        self.tree = head_tree(s, target, head, &params).map(|rows| CausalTree {
            target,
            head,
            params,
            rows,
        });
    }
}

/// The parameters of the results the session holds, if any.
pub fn stored_params(s: Option<&Session>) -> Option<&CausalParams> {
    s.and_then(|s| s.manifest.causal.as_ref())
        .map(|c| &c.params)
}

/// The causal pane's details of the token's result: the shown head, the radius, its explaining
/// set, and the image patches to outline.
pub(super) fn details(
    v: &mut View,
    input: &ViewInput,
    s: &Session,
    e: Explanation,
    shown: Option<&ShownRegion>,
) {
    let grid = super::region_grid(&e, shown);
    let Some(ct) = e.causal else { return };
    let max_radius =
        stored_params(Some(s)).map_or(input.causal.params.search_radius, |p| p.search_radius);
    let radius = effective_radius(input.causal.radius, max_radius);
    v.causal_radius = radius;
    let sel = input.sel;
    let chosen = (sel.agg == Agg::Head).then_some(sel.head);
    if let Some(h) = shown_head(&ct, chosen) {
        v.causal_head = Some(h.head);
        v.causal_set = set_up_to(h, radius);
    }
    if let Some(r) = shown {
        // Cell positions ascend through the region's span.
        let cells = r.region.cell_positions();
        let heads = ct
            .heads
            .iter()
            .filter(|h| chosen.is_none_or(|c| h.head == c));
        for h in heads {
            for pos in set_up_to(h, radius) {
                if let Ok(i) = cells.binary_search(&pos) {
                    v.marked.insert(i);
                }
            }
        }
    }
    v.map_title = format!("{} · marked: r ≤ {radius}", e.title);
    v.map = Some(grid);
    v.causal = Some(ct);
}
