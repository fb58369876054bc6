//! The relevancy pass of Qwen2-VL / Qwen2.5-VL: the model's own forward with the saving tape
//! (vision tower, merger, decoder with M-RoPE), then the decoder's batched backward and the
//! vision tower's, through the merger, the 2D rotary embedding and (Qwen2.5-VL) the window
//! attention, whose masked probabilities are exactly zero outside the windows so that their
//! gradients and Ā stay block-diagonal without any special case.
//!
//! Definitions (as `tools/qwen_vl_relevancy.py` computes the references): `llm` is row N−1+t
//! of the decoder relevancy; R_v is accumulated over every vision block; `combined` is u R_v
//! with u[p] the decoder row at the image-pad position of the merged token that patch p feeds
//! (the value copied to its 4 patches, not divided); there is no class token, so `vit` is the
//! mean of R_v's patch rows, 1/P · 1ᵀ R_v, as for SigLIP.

use candle_core::{DType, Result, Tensor};

use super::decoder::DecoderPass;
use super::saved::{LayerSaved, SavingTape};
use crate::model::qwen_vl::vision::BlockSaved;
use crate::model::qwen_vl::QwenVl;
use crate::model::tape::{NormSlot, Site};
use crate::model::KvCache;
use crate::trace::Stage;

/// Relevancy rows of one output token of a Qwen VL model.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenRows {
    /// Output token index t.
    pub token: usize,
    /// Row N−1+t of the decoder relevancy, `[S]`.
    pub llm: Vec<f32>,
    /// 1/P · 1ᵀ R_v over the patches (processor order), `[P]`.
    pub vit: Vec<f32>,
    /// u R_v over the patches (processor order), `[P]`.
    pub combined: Vec<f32>,
}

/// What the vision forward kept.
struct VisionKept {
    layers: Vec<LayerSaved>,
    last_hidden: Tensor,
    cos: Tensor,
    neg_sin: Tensor,
    patches: usize,
}

/// The forward of one sequence, kept for the backward.
pub struct QwenTrackedPass<'a> {
    model: &'a QwenVl,
    n_input: usize,
    output_ids: Vec<u32>,
    image_pos: Vec<usize>,
    vision: Option<VisionKept>,
    decoder: DecoderPass<'a>,
}

impl<'a> QwenTrackedPass<'a> {
    /// Run the forward over `input_ids + output_ids[..T−1]` with the image `pixel_values`
    /// `[P, patch_len]` of `grid_thw`.
    pub fn forward(
        model: &'a QwenVl,
        input_ids: &[u32],
        output_ids: &[u32],
        pixel_values: &Tensor,
        grid_thw: [usize; 3],
    ) -> Result<Self> {
        if input_ids.is_empty() || output_ids.is_empty() {
            candle_core::bail!("relevancy needs at least one input and one output token");
        }
        let _stage = Stage::new(tracing::info_span!("relevancy_forward"), model.device());
        let mut seq = input_ids.to_vec();
        seq.extend_from_slice(&output_ids[..output_ids.len() - 1]);
        let image_id = model.config().image_token_id;
        let image_pos: Vec<usize> = (0..input_ids.len())
            .filter(|&i| input_ids[i] == image_id)
            .collect();
        let mut tape = SavingTape::default();
        let m = model.config().vision_config.spatial_merge_size;
        let out = if image_pos.is_empty() {
            None
        } else {
            Some(model.image_features(pixel_values, grid_thw, &mut tape)?)
        };
        let grids: Vec<[usize; 2]> = out
            .iter()
            .map(|_| [grid_thw[1] / m, grid_thw[2] / m])
            .collect();
        let pos = model.positions(input_ids, &grids)?;
        let embeds =
            model.embed_sequence(&seq, input_ids.len(), out.as_ref().map(|o| &o.features))?;
        let (cos, sin) = model.rope_tables(&pos, 0, seq.len())?;
        let decoder = model.decoder();
        let mut cache = KvCache::new(decoder.layers().len());
        let last =
            decoder.hidden_states_with_rope(&embeds, 0, (&cos, &sin), &mut cache, &mut tape)?;
        let site = Site::text(decoder.layers().len());
        decoder
            .final_norm()
            .forward_taped(&last, &mut tape, site, NormSlot::Final)?;
        drop(cache);
        let vision = match out {
            Some(out) => {
                let (vcos, vsin) =
                    model
                        .vision()
                        .rope_tables(grid_thw[1], grid_thw[2], model.device())?;
                Some(VisionKept {
                    layers: tape.take_vision()?,
                    patches: out.last_hidden.dim(0)?,
                    last_hidden: out.last_hidden,
                    cos: vcos,
                    neg_sin: vsin.neg()?,
                })
            }
            None => None,
        };
        let decoder = DecoderPass::with_rope(
            decoder,
            tape.take_text()?,
            tape.take_final_norm()?,
            last.squeeze(0)?,
            (cos, sin),
        )?;
        Ok(Self {
            model,
            n_input: input_ids.len(),
            output_ids: output_ids.to_vec(),
            image_pos,
            vision,
            decoder,
        })
    }

    /// f32 logits `[T, vocab]` of the positions N−1.. that produced the output tokens.
    pub fn logits(&self) -> Result<Tensor> {
        let positions: Vec<usize> = (0..self.output_ids.len())
            .map(|t| self.n_input - 1 + t)
            .collect();
        self.decoder.logits(&positions)
    }

    fn check(&self, tokens: &[usize]) -> Result<()> {
        let t_len = self.output_ids.len();
        if let Some(&bad) = tokens.iter().find(|&&t| t >= t_len) {
            candle_core::bail!("output token {bad} does not exist (there are {t_len})");
        }
        Ok(())
    }

    /// Decoder backward of a group of tokens: rows `[B, S]` and the embeddings' gradient.
    fn decoder_backward(&self, group: &[usize]) -> Result<(Tensor, Tensor)> {
        let positions: Vec<usize> = group.iter().map(|&t| self.n_input - 1 + t).collect();
        let ids: Vec<u32> = group.iter().map(|&t| self.output_ids[t]).collect();
        self.decoder.backward(&positions, &ids)
    }

    /// Relevancy rows of output tokens `tokens`, `chunk` tokens per backward.
    pub fn relevancy(&self, tokens: &[usize], chunk: usize) -> Result<Vec<QwenRows>> {
        self.check(tokens)?;
        let mut out = Vec::with_capacity(tokens.len());
        for group in tokens.chunks(chunk.max(1)) {
            let (r, demb) = self.decoder_backward(group)?;
            let llm = r.to_vec2::<f32>()?;
            let b = group.len();
            let (vit, combined) = match &self.vision {
                Some(v) => {
                    let p = v.patches;
                    let e0 = Tensor::full(1.0 / p as f32, (b, p), r.device())?;
                    let rows = Tensor::stack(&[&e0, &self.u(&r)?], 1)?;
                    let rows = self.vision_backward(v, &demb, &rows)?.to_vec3::<f32>()?;
                    let mut vit = Vec::with_capacity(b);
                    let mut combined = Vec::with_capacity(b);
                    for mut pair in rows {
                        combined.push(pair.pop().unwrap_or_default());
                        vit.push(pair.pop().unwrap_or_default());
                    }
                    (vit, combined)
                }
                None => (vec![Vec::new(); b], vec![Vec::new(); b]),
            };
            for (i, ((llm, vit), combined)) in llm.into_iter().zip(vit).zip(combined).enumerate() {
                out.push(QwenRows {
                    token: group[i],
                    llm,
                    vit,
                    combined,
                });
            }
        }
        Ok(out)
    }

    /// The whole vision relevancy matrix R_v `[P, P]` (processor order) of output token `t`.
    pub fn vision_matrix(&self, t: usize) -> Result<Tensor> {
        self.check(&[t])?;
        let Some(v) = &self.vision else {
            candle_core::bail!("the sequence has no image");
        };
        let (_, demb) = self.decoder_backward(&[t])?;
        let eye = Tensor::eye(v.patches, DType::F32, demb.device())?.unsqueeze(0)?;
        self.vision_backward(v, &demb, &eye)?.squeeze(0)
    }

    /// u `[B, P]`: each patch takes the decoder row's value at its merged token's position.
    fn u(&self, r: &Tensor) -> Result<Tensor> {
        let cfg = &self.model.config().vision_config;
        let group = cfg.spatial_merge_size * cfg.spatial_merge_size;
        let patches = self.image_pos.len() * group;
        let idx: Vec<u32> = (0..patches)
            .map(|p| self.image_pos[p / group] as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), r.device())?;
        r.index_select(&idx, 1)
    }

    /// Backward from the embeddings' gradient `demb` `[B, S, hidden]` through the merger and
    /// the blocks, carrying `rows` `[B, K, P]` through `r ← r + r Ā` from the last block down.
    fn vision_backward(&self, v: &VisionKept, demb: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let span = tracing::info_span!("vision_backward", tokens = rows.dim(0)?);
        let _stage = Stage::new(span, demb.device());
        let pos: Vec<u32> = self.image_pos.iter().map(|&p| p as u32).collect();
        let pos = Tensor::new(pos.as_slice(), demb.device())?;
        let d_features = demb.index_select(&pos, 1)?;
        let vision = self.model.vision();
        let mut dx = vision.merger_backward(&v.last_hidden, &d_features)?;
        let mut r = rows.clone();
        for (i, saved) in v.layers.iter().enumerate().rev() {
            let span = tracing::debug_span!("vision_backward_layer", layer = i);
            let _layer = Stage::new(span, demb.device());
            let block = BlockSaved {
                norm1: &saved.norm1,
                attn: &saved.attn,
                norm2: &saved.norm2,
                mlp: &saved.mlp,
            };
            let (abar, dx_in) =
                vision.block_backward(i, &block, &dx, (&v.cos, &v.neg_sin), i > 0)?;
            let abar = abar.transpose(0, 1)?.contiguous()?; // [B, P, P]
            r = (&r + r.matmul(&abar)?)?;
            match dx_in {
                Some(d) => dx = d,
                None => break,
            }
        }
        Ok(r)
    }
}
