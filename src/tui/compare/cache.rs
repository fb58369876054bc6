//! The split view's per-token reliance of each session, kept across refreshes: computing it
//! runs the attention over every layer and head of every answer token (≈ 100 ms on a 7B-shaped
//! session), while moving the token or the map changes only the maps compared.

use crate::explain::compare::{self, Side};
use crate::session::Session;

/// What a session's per-token reliance depends on: its ids and prompt, whether it holds
/// attention, and which tokens have relevancy rows (a job adds them).
#[derive(Debug, Clone, PartialEq)]
struct RelianceKey {
    input_ids: Vec<i64>,
    output_ids: Vec<i64>,
    prompt: String,
    attention: bool,
    relevancy_tokens: Vec<usize>,
}

impl RelianceKey {
    fn of(s: &Session) -> Self {
        Self {
            input_ids: s.input_ids.clone(),
            output_ids: s.output_ids.clone(),
            prompt: s.manifest.prompt.clone(),
            attention: s.attn_gen.is_some(),
            relevancy_tokens: s.manifest.relevancy_tokens.clone(),
        }
    }
}

/// The reliance of sessions A and B, each recomputed only when its session changes.
#[derive(Debug, Clone, Default)]
pub struct RelianceCache {
    slots: [Option<(RelianceKey, Side)>; 2],
    computed: usize,
}

impl RelianceCache {
    /// How many times a session's reliance was computed (for tests and the design doc's
    /// measurements).
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// A's and B's reliance, as [`compare::sides`] computes it, from the cache where the
    /// session is the one it was computed for.
    pub fn sides(&mut self, a: &Session, b: &Session) -> [Side; 2] {
        [self.side(0, a), self.side(1, b)]
    }

    fn side(&mut self, slot: usize, s: &Session) -> Side {
        let key = RelianceKey::of(s);
        match &self.slots[slot] {
            Some((k, side)) if *k == key => side.clone(),
            _ => {
                let side = compare::side(s);
                self.computed += 1;
                self.slots[slot] = Some((key, side.clone()));
                side
            }
        }
    }
}
