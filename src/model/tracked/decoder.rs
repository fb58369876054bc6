//! The decoder's batched backward from what the forward kept, with the relevancy rows
//! accumulated layer by layer (last layer first).

use candle_core::{DType, Result, Tensor};

use super::saved::LayerSaved;
use crate::model::attention::SeedRows;
use crate::model::decoder::Decoder;
use crate::model::tape::{MlpSaved, NormSaved};
use crate::trace::Stage;

/// One step of the row form of rule 6: `r ← r + r Ā` for every seed, `r`: `[B, n]` f32,
/// `abar`: `[n_q, B, n_k]` f32.
fn rollout_step(r: &Tensor, abar: &Tensor) -> Result<Tensor> {
    let add = abar.broadcast_mul(&r.t()?.unsqueeze(2)?)?.sum(0)?;
    r + add
}

/// The decoder's forward over `n` positions with everything kept for the backward.
pub(super) struct DecoderPass<'a> {
    decoder: &'a Decoder,
    layers: Vec<LayerSaved>,
    final_norm: NormSaved,
    /// Output of the last layer, `[n, hidden]`.
    last: Tensor,
    cos: Tensor,
    neg_sin: Tensor,
}

impl<'a> DecoderPass<'a> {
    /// What the forward kept: every layer, the final norm, the last layer's output `[n, hidden]`.
    pub(super) fn new(
        decoder: &'a Decoder,
        layers: Vec<LayerSaved>,
        final_norm: NormSaved,
        last: Tensor,
    ) -> Result<Self> {
        if layers.len() != decoder.layers().len() || layers.is_empty() {
            candle_core::bail!(
                "the tracked forward kept {} of {} decoder layers",
                layers.len(),
                decoder.layers().len()
            );
        }
        let (cos, sin) = decoder.rope_tables(last.dim(0)?, last.device())?;
        Self::with_rope(decoder, layers, final_norm, last, (cos, sin))
    }

    /// [`DecoderPass::new`] for a forward that ran with the RoPE tables `cos`, `sin` `[n, d/2]`
    /// (M-RoPE positions).
    pub(super) fn with_rope(
        decoder: &'a Decoder,
        layers: Vec<LayerSaved>,
        final_norm: NormSaved,
        last: Tensor,
        (cos, sin): (Tensor, Tensor),
    ) -> Result<Self> {
        if layers.len() != decoder.layers().len() || layers.is_empty() {
            candle_core::bail!(
                "the tracked forward kept {} of {} decoder layers",
                layers.len(),
                decoder.layers().len()
            );
        }
        Ok(Self {
            decoder,
            layers,
            final_norm,
            last,
            cos,
            neg_sin: sin.neg()?,
        })
    }

    /// f32 logits `[positions.len(), vocab]` at the given positions (for checks).
    pub(super) fn logits(&self, positions: &[usize]) -> Result<Tensor> {
        let idx = positions.iter().map(|&p| p as u32).collect::<Vec<_>>();
        let idx = Tensor::new(idx.as_slice(), self.last.device())?;
        self.decoder.logits(&self.last.index_select(&idx, 0)?)
    }

    /// Backward from the logits `ids[i]` at `positions[i]`, one seed each. Returns the rows
    /// `e_qᵀ (I + Ā_L) ⋯ (I + Ā_1)` `[B, n]` (f32) and the gradient of the decoder's input
    /// embeddings (as it took them, scaled) `[B, n, hidden]`.
    pub(super) fn backward(&self, positions: &[usize], ids: &[u32]) -> Result<(Tensor, Tensor)> {
        let (n, _) = self.last.dims2()?;
        let device = self.last.device();
        let dtype = self.last.dtype();
        let span = tracing::info_span!("decoder_backward", tokens = positions.len());
        let _stage = Stage::new(span, device);
        let rope = Some((&self.cos, &self.neg_sin));
        // seed: d logit / d x_last at the query row, through the final norm
        let id_t = Tensor::new(ids, device)?;
        let pos = positions.iter().map(|&p| p as u32).collect::<Vec<_>>();
        let pos_t = Tensor::new(pos.as_slice(), device)?;
        let w_rows = self.decoder.lm_head_weight().index_select(&id_t, 0)?; // [B, hidden]
        let sel = |t: &Tensor| t.index_select(&pos_t, 0);
        let final_rows = NormSaved {
            xhat: sel(&self.final_norm.xhat)?,
            inv: sel(&self.final_norm.inv)?,
        };
        let seed = self
            .decoder
            .final_norm()
            .backward(&final_rows, &w_rows)?
            .to_dtype(dtype)?;
        let flat_idx: Vec<u32> = pos
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * n) as u32 + p)
            .collect();
        let flat_idx = Tensor::new(flat_idx.as_slice(), device)?;
        let rows = SeedRows {
            pos: &pos_t,
            flat: &flat_idx,
            n,
        };
        let blocks = self.decoder.layers();
        let (Some((top, below)), Some((top_saved, below_saved))) =
            (blocks.split_last(), self.layers.split_last())
        else {
            candle_core::bail!("the decoder has no layer");
        };
        // Last layer: each seed's gradient is one row (its query position); the MLP and the
        // queries are done on those rows only.
        let top_stage = Stage::new(
            tracing::debug_span!("backward_layer", layer = below.len()),
            device,
        );
        let mlp_rows = MlpSaved {
            act: top_saved.mlp.act.as_ref().map(sel).transpose()?,
            dact: sel(&top_saved.mlp.dact)?,
        };
        let norm2_rows = NormSaved {
            xhat: sel(&top_saved.norm2.xhat)?,
            inv: sel(&top_saved.norm2.inv)?,
        };
        let dh2 = top.mlp().backward(&mlp_rows, &seed)?;
        let dxm = (&seed + top.post_norm().backward(&norm2_rows, &dh2)?)?;
        let g = top
            .attention()
            .backward_rows(&top_saved.attn, &dxm, &rows, rope)?;
        let ones = Tensor::ones((positions.len(), 1), DType::F32, device)?;
        let mut r = (rows.scatter(&ones)?.squeeze(2)? + g.abar)?;
        let Some(dh1) = g.dx else {
            candle_core::bail!("attention backward gave no input gradient");
        };
        let mut dx = (rows.scatter(&dxm)? + top.input_norm().backward(&top_saved.norm1, &dh1)?)?;
        drop(top_stage);
        for (l, (block, saved)) in below.iter().zip(below_saved).enumerate().rev() {
            let _layer = Stage::new(tracing::debug_span!("backward_layer", layer = l), device);
            let dh2 = block.mlp().backward(&saved.mlp, &dx)?;
            let dxm = (&dx + block.post_norm().backward(&saved.norm2, &dh2)?)?;
            let g = block.attention().backward(&saved.attn, &dxm, rope, true)?;
            r = rollout_step(&r, &g.abar)?;
            let Some(dh1) = g.dx else {
                candle_core::bail!("attention backward gave no input gradient");
            };
            dx = (dxm + block.input_norm().backward(&saved.norm1, &dh1)?)?;
        }
        Ok((r, dx))
    }
}
