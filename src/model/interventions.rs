//! Tapes that change or read the decoder at the forward's hook point
//! ([`crate::model::tape`]): [`Knockout`] blocks attention from some query positions to some
//! key positions in a range of decoder layers; [`LayerOutputs`] keeps the residual stream of
//! chosen positions after every decoder layer (what a logit lens reads out).

use std::ops::RangeInclusive;

use candle_core::{Result, Tensor};

use super::tape::{Site, Tape, Tower};

/// Blocks attention from `queries` to `keys` in the decoder layers `layers`: those scores are
/// set to −∞ before the softmax, so each query's probabilities are renormalised over the keys
/// it still sees (as an additive mask in transformers' eager attention does).
#[derive(Debug, Clone)]
pub struct Knockout {
    layers: RangeInclusive<usize>,
    queries: Vec<usize>,
    keys: Vec<usize>,
    applied: usize,
}

impl Knockout {
    /// Blocks `queries` → `keys` (absolute positions) in decoder layers `layers`.
    pub fn new(layers: RangeInclusive<usize>, queries: Vec<usize>, keys: Vec<usize>) -> Self {
        Self {
            layers,
            queries,
            keys,
            applied: 0,
        }
    }

    /// How many (layer, forward call) score tensors had at least one blocked entry.
    pub fn applied(&self) -> usize {
        self.applied
    }

    /// The additive mask `[q, kv]` of query rows `q_offset..q_offset + q`, or `None` when no
    /// blocked pair falls inside it.
    fn mask(&self, q: usize, kv: usize, q_offset: usize) -> Option<Vec<f32>> {
        let mut mask = vec![0f32; q * kv];
        let mut any = false;
        for &p in &self.queries {
            if p < q_offset || p >= q_offset + q {
                continue;
            }
            let row = p - q_offset;
            for &k in self.keys.iter().filter(|&&k| k < kv) {
                mask[row * kv + k] = f32::NEG_INFINITY;
                any = true;
            }
        }
        any.then_some(mask)
    }
}

impl Tape for Knockout {
    fn scores(&mut self, site: Site, scores: Tensor, q_offset: usize) -> Result<Tensor> {
        if site.tower != Tower::Text || !self.layers.contains(&site.layer) {
            return Ok(scores);
        }
        let (_, _, q, kv) = scores.dims4()?;
        let Some(mask) = self.mask(q, kv, q_offset) else {
            return Ok(scores);
        };
        self.applied += 1;
        let mask = Tensor::from_vec(mask, (q, kv), scores.device())?.to_dtype(scores.dtype())?;
        scores.broadcast_add(&mask)
    }
}

/// Keeps, after every decoder layer, the residual stream (model dtype) of the positions
/// `positions`, and after layer `wide_layer` also that of `wide` (absolute positions; the
/// forward must start at position 0): a logit lens reads one position at every layer and many
/// at one layer, without keeping the many at every layer.
#[derive(Debug, Clone, Default)]
pub struct LayerOutputs {
    positions: Vec<usize>,
    wide_layer: usize,
    wide: Vec<usize>,
    /// One tensor `[positions.len(), hidden]` per decoder layer, in layer order.
    pub layers: Vec<Tensor>,
    /// `[wide.len(), hidden]` after layer `wide_layer`.
    pub wide_rows: Option<Tensor>,
}

impl LayerOutputs {
    /// Keeps `positions` after every layer and `wide` after layer `wide_layer`.
    pub fn new(positions: Vec<usize>, wide_layer: usize, wide: Vec<usize>) -> Self {
        Self {
            positions,
            wide_layer,
            wide,
            layers: Vec::new(),
            wide_rows: None,
        }
    }
}

fn rows(xs: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let n = xs.dim(0)?;
    if let Some(&bad) = positions.iter().find(|&&p| p >= n) {
        candle_core::bail!("position {bad} is past the {n} positions of the forward");
    }
    let index: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
    let index = Tensor::new(index.as_slice(), xs.device())?;
    xs.index_select(&index, 0)
}

impl Tape for LayerOutputs {
    fn layer_output(&mut self, site: Site, xs: &Tensor) -> Result<()> {
        if site.tower != Tower::Text {
            return Ok(());
        }
        let xs = xs.squeeze(0)?;
        self.layers.push(rows(&xs, &self.positions)?);
        if site.layer == self.wide_layer && !self.wide.is_empty() {
            self.wide_rows = Some(rows(&xs, &self.wide)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_blocks_only_chosen_rows_and_keys() {
        let k = Knockout::new(1..=2, vec![5], vec![1, 3]);
        assert!(k.mask(2, 4, 0).is_none(), "row 5 is not among rows 0..2");
        let m = k.mask(2, 6, 4).unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(&m[..6], &[0.0; 6]);
        assert_eq!(&m[6..], &[0.0, inf, 0.0, inf, 0.0, 0.0]);
        // decode step: one row at offset 5
        let m = k.mask(1, 6, 5).unwrap();
        assert_eq!(m, vec![0.0, inf, 0.0, inf, 0.0, 0.0]);
    }
}
