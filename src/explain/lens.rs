//! Logit lens: the residual stream after each decoder layer read out through the final norm
//! and the output head, as if the model ended there.
//!
//! One forward covers positions `0..=q_t` of answer token t (`input_ids + output_ids[..t]`,
//! q_t = N − 1 + t), rebuilt by the session's pipeline ([`Replayer`]), with
//! [`crate::model::interventions::LayerOutputs`] keeping the residual stream of q_t after every
//! layer l and of every image cell after layer L. For the answer token the curve gives, per
//! layer, softmax(readout)[id] and the id's rank (1 = the top token); the last layer's readout
//! is the model's own logits. For layer L the map gives, per cell, the probability the readout
//! of that cell gives the answer token, and the cell's top token. The cells are every region's
//! ([`Session::cell_positions`]: region by region, each row-major; anyres separators left out),
//! so a LLaVA-NeXT / OneVision reading holds the base grid's cells, then the high-res grid's
//! ([`region_slices`] splits them).

use candle_core::Tensor;

use crate::explain::knockout::{region_cells, KnockoutError, Replayer};
use crate::model::decoder::Decoder;
use crate::model::interventions::LayerOutputs;
use crate::session::{RegionKind, Session};

/// Why a lens cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LensError {
    /// An answer token past the answer.
    #[error("output token {token} does not exist (the answer has {count} tokens)")]
    Token {
        /// The requested index.
        token: usize,
        /// Answer tokens.
        count: usize,
    },
    /// A layer past the model.
    #[error("layer {layer} does not exist (the decoder has layers 0-{})", .count.saturating_sub(1))]
    Layer {
        /// The requested layer.
        layer: usize,
        /// Decoder layers.
        count: usize,
    },
    /// The session and the model do not fit, or the forward failed.
    #[error(transparent)]
    Forward(#[from] KnockoutError),
    /// The image grid does not fit the session.
    #[error(transparent)]
    Grid(#[from] crate::explain::catalogue::CatalogueError),
}

impl From<candle_core::Error> for LensError {
    fn from(e: candle_core::Error) -> Self {
        Self::Forward(KnockoutError::from(e))
    }
}

/// The answer token read out after one layer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LensPoint {
    /// The decoder layer.
    pub layer: usize,
    /// softmax(readout)[token id].
    pub prob: f32,
    /// 1 + the number of ids whose readout logit is larger.
    pub rank: usize,
    /// The readout's top id.
    pub top: u32,
}

/// The logit lens of one answer token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lens {
    /// The answer token.
    pub token: usize,
    /// Its id.
    pub token_id: u32,
    /// Its query position.
    pub position: usize,
    /// The curve over layers.
    pub curve: Vec<LensPoint>,
    /// The layer of the map.
    pub layer: usize,
    /// `[rows, cols]` of the session's (first) image grid.
    pub grid: [usize; 2],
    /// Per cell of every region (region by region, each row-major): the probability its
    /// readout gives the answer token.
    pub map: Vec<f32>,
    /// Per cell: the readout's top id.
    pub top_ids: Vec<u32>,
    /// Per cell: the top id's probability.
    pub top_probs: Vec<f32>,
}

/// One image region's part of a reading: `lens.map[offset..offset + rows·cols]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LensRegion {
    /// Which view of the image.
    pub kind: RegionKind,
    /// `[rows, cols]` of its cells.
    pub grid: [usize; 2],
    /// Where its cells start in the reading.
    pub offset: usize,
}

/// The regions of `s` as parts of a reading over every cell, in input order.
pub fn region_slices(s: &Session) -> Vec<LensRegion> {
    let mut offset = 0;
    s.regions()
        .iter()
        .map(|r| {
            let part = LensRegion {
                kind: r.kind,
                grid: r.grid,
                offset,
            };
            offset += r.cells();
            part
        })
        .collect()
}

/// Cells read out through the output head at once.
const READOUT_ROWS: usize = 48;

/// Logit rows `[n, vocab]` (f32) of the readout of `xs` `[n, hidden]`.
fn readout(decoder: &Decoder, xs: &Tensor) -> Result<Vec<Vec<f32>>, LensError> {
    let logits = decoder.logits(xs)?;
    Ok(logits.to_vec2()?)
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = row.iter().map(|&l| (l as f64 - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / total) as f32).collect()
}

fn top(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// The logit lens of answer token `t` of `s` with `model`, its map at decoder layer `layer`
/// (default: the last).
#[tracing::instrument(name = "lens", skip_all, fields(token = t))]
pub fn lens(
    model: &dyn Replayer,
    s: &Session,
    t: usize,
    layer: Option<usize>,
) -> Result<Lens, LensError> {
    let count = s.num_output();
    if t >= count {
        return Err(LensError::Token { token: t, count });
    }
    let layers = model.num_layers();
    let layer = layer.unwrap_or(layers.saturating_sub(1));
    if layer >= layers {
        return Err(LensError::Layer {
            layer,
            count: layers,
        });
    }
    let patches = region_cells(s, None)?;
    let q = s.query_position(t);
    let replay = model.replay(s, t)?;
    let decoder = model.decoder();
    let mut tape = LayerOutputs::new(vec![q], layer, patches.clone());
    replay.hidden_states(decoder, &mut tape)?;
    let id = s.output_ids[t] as u32;
    let n = patches.len();
    let mut curve = Vec::with_capacity(layers);
    let mut out = Lens {
        token: t,
        token_id: id,
        position: q,
        curve: Vec::new(),
        layer,
        grid: s.manifest.model.image_grid,
        map: Vec::with_capacity(n),
        top_ids: Vec::with_capacity(n),
        top_probs: Vec::with_capacity(n),
    };
    for (l, xs) in tape.layers.iter().enumerate() {
        let rows = readout(decoder, xs)?;
        let answer = rows.first().map(Vec::as_slice).unwrap_or_default();
        let Some(&target) = answer.get(id as usize) else {
            return Err(
                KnockoutError::Session(format!("token id {id} is past the vocabulary")).into(),
            );
        };
        let probs = softmax(answer);
        curve.push(LensPoint {
            layer: l,
            prob: probs[id as usize],
            rank: 1 + answer.iter().filter(|&&x| x > target).count(),
            top: top(answer) as u32,
        });
    }
    let wide = tape
        .wide_rows
        .as_ref()
        .ok_or_else(|| KnockoutError::Model(format!("layer {layer} never ran")))?;
    // The cells are read out a few at a time: an anyres session has thousands, and each row
    // is the whole vocabulary.
    let cells = wide.dim(0)?;
    for start in (0..cells).step_by(READOUT_ROWS) {
        let part = wide.narrow(0, start, READOUT_ROWS.min(cells - start))?;
        for row in readout(decoder, &part)? {
            let p = softmax(&row);
            let best = top(&row);
            out.map.push(p[id as usize]);
            out.top_ids.push(best as u32);
            out.top_probs.push(p[best]);
        }
    }
    out.curve = curve;
    Ok(out)
}

/// The lens of answer token `t` at layer `layer` cached in `s` (the manifest's `lens` list).
pub fn cached(s: &Session, t: usize, layer: usize) -> Option<&Lens> {
    s.manifest
        .lens
        .iter()
        .find(|l| l.token == t && l.layer == layer)
}

/// Caches `lens` in `s`, replacing an earlier one of the same token and layer.
pub fn store(s: &mut Session, lens: Lens) {
    s.manifest
        .lens
        .retain(|l| !(l.token == lens.token && l.layer == lens.layer));
    s.manifest.lens.push(lens);
    s.manifest.lens.sort_by_key(|l| (l.token, l.layer));
}
