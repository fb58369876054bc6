//! The gradient pass behind Chefer relevancy: the model's own forward over the whole sequence,
//! with a tape that keeps every activation the backward needs, then a hand-written backward
//! batched over several output tokens (one seed per token).
//!
//! Why by hand: candle 0.9's fused ops (softmax, RMSNorm, RoPE) have no backward, and its
//! autograd also computes (and holds) the gradient of every weight it meets, which the
//! relevancy does not need. Here the backward produces exactly the gradients of the attention
//! probabilities, layer by layer from the last one down, which is also the order in which the
//! relevancy row `e_qᵀ (I + Ā_L) ⋯ (I + Ā_1)` is accumulated, so no `Ā_l` is ever stored. The
//! backward rule of each block lives next to its forward (`Attention::backward`,
//! `RmsNorm::backward`, ...); this module puts them together.

mod anyres;
mod decoder;
mod qwen;
mod saved;
mod vision;

use candle_core::{DType, Result, Tensor};

pub use self::anyres::{AnyresRows, AnyresTrackedPass};
pub use self::qwen::{QwenRows, QwenTrackedPass};

use self::decoder::DecoderPass;
use self::saved::SavingTape;
use self::vision::VisionPass;
use super::cache::KvCache;
use super::llava::Llava;
use super::tape::{NormSlot, Site};
use crate::trace::Stage;

/// Relevancy rows of one output token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRows {
    /// Output token index t.
    pub token: usize,
    /// Row N−1+t of the decoder relevancy matrix, `[S]`.
    pub llm: Vec<f32>,
    /// Vision relevancy row over the vision tokens, `[Pv]`: with a class token (CLIP) the CLS
    /// row of R_v, `[P + 1]` with column 0 the CLS token; without one (SigLIP) the mean of the
    /// P patch rows of R_v, `1/P · 1ᵀ R_v`, `[P]` (every patch query weighs the same, as no
    /// single query summarises the image).
    pub vit: Vec<f32>,
    /// `u R_v` with `u` the decoder row over the image features placed at their vision
    /// tokens, `[Pv]` (see `explain::relevancy` for the definition).
    pub combined: Vec<f32>,
    /// Whether column 0 of `vit` and `combined` is a class token.
    pub class_token: bool,
}

impl TokenRows {
    /// The patch part of `vit`, `[P]`.
    pub fn vit_patches(&self) -> &[f32] {
        self.patches(&self.vit)
    }

    /// The patch part of `combined`, `[P]`.
    pub fn combined_patches(&self) -> &[f32] {
        self.patches(&self.combined)
    }

    fn patches<'r>(&self, row: &'r [f32]) -> &'r [f32] {
        let skip = usize::from(self.class_token).min(row.len());
        &row[skip..]
    }
}

/// One row per seed.
type Rows = Vec<Vec<f32>>;

/// The forward pass of one sequence, kept for the backward.
pub struct TrackedPass<'a> {
    n_input: usize,
    output_ids: Vec<u32>,
    image_pos: Vec<usize>,
    vision: Option<VisionPass<'a>>,
    decoder: DecoderPass<'a>,
}

impl<'a> TrackedPass<'a> {
    /// Run the forward over `input_ids + output_ids[..T−1]` with the image `pixel_values`
    /// (`[1, 3, h, w]` or `[3, h, w]`). Image tokens are those of `input_ids`; an image-token id
    /// among the output tokens is an ordinary token, as in generation.
    pub fn forward(
        model: &'a Llava,
        input_ids: &[u32],
        output_ids: &[u32],
        pixel_values: &Tensor,
    ) -> Result<Self> {
        if input_ids.is_empty() || output_ids.is_empty() {
            candle_core::bail!("relevancy needs at least one input and one output token");
        }
        let _stage = Stage::new(tracing::info_span!("relevancy_forward"), model.device());
        let mut seq = input_ids.to_vec();
        seq.extend_from_slice(&output_ids[..output_ids.len() - 1]);
        let image_pos = model.image_positions(input_ids);
        let mut tape = SavingTape::default();
        let features = if image_pos.is_empty() {
            None
        } else {
            let px = match pixel_values.rank() {
                3 => pixel_values.unsqueeze(0)?,
                _ => pixel_values.clone(),
            };
            let upload = Stage::new(tracing::info_span!("upload"), model.device());
            let px = px.to_device(model.device())?;
            drop(upload);
            Some(model.features(&px, &mut tape)?.squeeze(0)?)
        };
        let embeds = model.embed_sequence(&seq, input_ids.len(), features.as_ref())?;
        let decoder = model.decoder();
        let mut cache = KvCache::new(decoder.layers().len());
        let last = decoder.hidden_states(&embeds, 0, &mut cache, &mut tape)?;
        let site = Site::text(decoder.layers().len());
        decoder
            .final_norm()
            .forward_taped(&last, &mut tape, site, NormSlot::Final)?;
        drop(cache);
        let vision = match features {
            Some(_) => Some(VisionPass::new(
                model,
                tape.take_vision()?,
                tape.take_projector(),
            )),
            None => None,
        };
        let decoder = DecoderPass::new(
            decoder,
            tape.take_text()?,
            tape.take_final_norm()?,
            last.squeeze(0)?,
        )?;
        Ok(Self {
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

    /// Relevancy rows of output tokens `tokens`, computed `chunk` tokens per backward;
    /// `on_token(t)` is called as each token is done.
    pub fn relevancy(
        &self,
        tokens: &[usize],
        chunk: usize,
        on_token: &mut dyn FnMut(usize),
    ) -> Result<Vec<TokenRows>> {
        let t_len = self.output_ids.len();
        if let Some(&bad) = tokens.iter().find(|&&t| t >= t_len) {
            candle_core::bail!("output token {bad} does not exist (there are {t_len})");
        }
        let class_token = self.vision.as_ref().is_some_and(|v| v.class_token());
        let mut out = Vec::with_capacity(tokens.len());
        for group in tokens.chunks(chunk.max(1)) {
            let positions: Vec<usize> = group.iter().map(|&t| self.n_input - 1 + t).collect();
            let ids: Vec<u32> = group.iter().map(|&t| self.output_ids[t]).collect();
            let (r, demb) = self.decoder.backward(&positions, &ids)?;
            let llm = r.to_vec2::<f32>()?;
            let (vit, combined) = match &self.vision {
                Some(v) => self.vision_rows(v, &r, &demb)?,
                None => (vec![Vec::new(); group.len()], vec![Vec::new(); group.len()]),
            };
            for (i, ((llm, vit), combined)) in llm.into_iter().zip(vit).zip(combined).enumerate() {
                out.push(TokenRows {
                    token: group[i],
                    llm,
                    vit,
                    combined,
                    class_token,
                });
                on_token(group[i]);
            }
        }
        Ok(out)
    }

    fn vision_rows(&self, v: &VisionPass, r: &Tensor, demb: &Tensor) -> Result<(Rows, Rows)> {
        let device = r.device();
        let b = r.dim(0)?;
        let n = v.tokens;
        let pos: Vec<u32> = self.image_pos.iter().map(|&p| p as u32).collect();
        let pos = Tensor::new(pos.as_slice(), device)?;
        let model = v.model();
        // The image features enter the decoder unscaled (only token rows carry a family's
        // embedding scale), so their gradient is the embeddings' gradient at their positions.
        let d_features = demb.index_select(&pos, 1)?;
        let tok: Vec<u32> = (0..self.image_pos.len())
            .map(|j| model.token_of_feature(j) as u32)
            .collect();
        let tok = Tensor::new(tok.as_slice(), device)?;
        let u = Tensor::zeros((b, n), DType::F32, device)?.index_add(
            &tok,
            &r.index_select(&pos, 1)?.contiguous()?,
            1,
        )?;
        // The vit row's start: e_CLS with a class token, else the mean over the patch queries.
        let e0 = if v.class_token() {
            let mut e0 = vec![0f32; b * n];
            for i in 0..b {
                e0[i * n] = 1.0;
            }
            Tensor::from_vec(e0, (b, n), device)?
        } else {
            Tensor::full(1.0 / n as f32, (b, n), device)?
        };
        let rows = Tensor::stack(&[&e0, &u], 1)?;
        let rows = v.backward(&d_features, &rows)?.to_vec3::<f32>()?;
        let mut vit = Vec::with_capacity(b);
        let mut combined = Vec::with_capacity(b);
        for mut pair in rows {
            combined.push(pair.pop().unwrap_or_default());
            vit.push(pair.pop().unwrap_or_default());
        }
        Ok((vit, combined))
    }
}
