//! The split view's per-token reliance of each session, kept across refreshes: computing it
//! runs the attention over every layer and head of every answer token (≈ 100 ms on a 7B-shaped
//! session), while moving the token or the map changes only the maps compared.

use crate::explain::compare::{self, Side};
use crate::session::Session;

/// What a session's per-token reliance depends on: its ids, prompt and image, which tokens have
/// relevancy rows (a job adds them), and its attention: the shape and a fixed sample of the
/// values (two runs of one prompt on two images share every id, so the ids alone cannot tell
/// them apart; hashing all of a 7B session's attention would cost what the cache saves).
#[derive(Debug, Clone, PartialEq)]
struct RelianceKey {
    input_ids: Vec<i64>,
    output_ids: Vec<i64>,
    prompt: String,
    image: String,
    relevancy_tokens: Vec<usize>,
    attention_shape: Option<Vec<usize>>,
    attention_sample: Vec<u32>,
    pixel_sample: Vec<u32>,
}

/// Values sampled from a tensor for the key: this many, evenly strided.
const SAMPLE: usize = 4096;

fn sample(data: &[f32]) -> Vec<u32> {
    let step = (data.len() / SAMPLE).max(1);
    data.iter().step_by(step).map(|v| v.to_bits()).collect()
}

impl RelianceKey {
    fn of(s: &Session) -> Self {
        Self {
            input_ids: s.input_ids.clone(),
            output_ids: s.output_ids.clone(),
            prompt: s.manifest.prompt.clone(),
            image: s.manifest.image.path.clone(),
            relevancy_tokens: s.manifest.relevancy_tokens.clone(),
            attention_shape: s.attn_gen.as_ref().map(|a| a.shape.clone()),
            attention_sample: s
                .attn_gen
                .as_ref()
                .map_or_else(Vec::new, |a| sample(&a.data)),
            pixel_sample: sample(&s.pixel_values.data),
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
