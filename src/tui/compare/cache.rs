//! The split view's per-token reliance of each session, kept across refreshes: computing it
//! runs the attention over every layer and head of every answer token (≈ 100 ms on a 7B-shaped
//! session), while moving the token or the map changes only the maps compared.
//!
//! A side's reliance is kept under its session's [`SessionStamp`]: the epoch names the session
//! (a new one for every session or turn shown) and the revision counts every change to it (a
//! job's rows, a causal result, a lens reading), so a kept reliance is reused exactly while
//! its session is the one it was computed on, unchanged.

use crate::explain::compare::{self, Side};
use crate::session::Session;

use super::super::app::SessionStamp;

/// A session with its stamp: what the cache is asked about.
pub type Stamped<'a> = (&'a Session, SessionStamp);

/// The reliance of sessions A and B, each recomputed only when its session changes.
#[derive(Debug, Clone, Default)]
pub struct RelianceCache {
    slots: [Option<(SessionStamp, Side)>; 2],
    computed: usize,
}

impl RelianceCache {
    /// How many times a session's reliance was computed (for tests and the design doc's
    /// measurements).
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// A's and B's reliance, as [`compare::sides`] computes it, from the cache where the
    /// session's stamp is the one it was computed under.
    pub fn sides(&mut self, a: Stamped<'_>, b: Stamped<'_>) -> [Side; 2] {
        [self.side(0, a), self.side(1, b)]
    }

    fn side(&mut self, slot: usize, (s, stamp): Stamped<'_>) -> Side {
        match &self.slots[slot] {
            Some((kept, side)) if *kept == stamp => side.clone(),
            _ => {
                let side = compare::side(s);
                self.computed += 1;
                self.slots[slot] = Some((stamp, side.clone()));
                side
            }
        }
    }
}
