//! Reading a token's CLEANN result the way views show it: the heads by importance, the head to
//! detail, and a head's explaining set up to a radius (docs/design.md, "Definitions"). The app
//! draws these; it does not derive them.

use crate::session::{CausalHead, CausalToken};

/// The heads by descending importance (ties: lower index first).
pub fn heads_by_importance(ct: &CausalToken) -> Vec<&CausalHead> {
    let mut heads: Vec<_> = ct.heads.iter().collect();
    heads.sort_by(|a, b| {
        b.importance
            .total_cmp(&a.importance)
            .then(a.head.cmp(&b.head))
    });
    heads
}

/// The head to detail: `head` when one is chosen, else the most important one.
pub fn shown_head(ct: &CausalToken, head: Option<usize>) -> Option<&CausalHead> {
    match head {
        Some(head) => ct.heads.iter().find(|h| h.head == head),
        None => heads_by_importance(ct).into_iter().next(),
    }
}

/// The explaining positions of `h` first reached at radius 1 up to `radius`, ascending.
pub fn set_up_to(h: &CausalHead, radius: usize) -> Vec<usize> {
    let mut set: Vec<usize> = h
        .per_radius
        .range(1..=radius.max(1))
        .flat_map(|(_, ps)| ps.iter().copied())
        .collect();
    set.sort_unstable();
    set.dedup();
    set
}

/// The radius to show: the chosen one, within 1 and `max`.
pub fn effective_radius(chosen: usize, max: usize) -> usize {
    chosen.clamp(1, max.max(1))
}
