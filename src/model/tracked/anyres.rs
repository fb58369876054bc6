//! The relevancy pass of LLaVA-NeXT / OneVision: LLaVA's tracked forward with the views (base
//! and tiles) through the tower as one batch and the packed features in the prompt; the
//! decoder backward as LLaVA's; the vision backward once per output token with the views as
//! its batch, each view's R_v accumulated over the layers that feed the projector.
//!
//! The gradient of the packed features goes back to the per-view projector rows through the
//! layout's feature sources (newline rows reach no view; a pooled feature gives its gradient
//! back with its bilinear weights), and so does `u`, the decoder row at the image tokens, which
//! starts each view's `combined` row (tests/fixtures/README.md, "LLaVA-NeXT and LLaVA-OneVision").

use candle_core::{DType, Result, Tensor};

use super::decoder::DecoderPass;
use super::saved::SavingTape;
use super::vision::VisionPass;
use crate::model::cache::KvCache;
use crate::model::tape::{NormSlot, Site};
use crate::model::LlavaNext;
use crate::processing::anyres::{AnyresLayout, FeatureSource};
use crate::trace::Stage;

/// Relevancy rows of one output token, per view.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresRows {
    /// Output token index t.
    pub token: usize,
    /// Row N−1+t of the decoder relevancy matrix, `[S]`.
    pub llm: Vec<f32>,
    /// Per view (base first, then the tiles), the vision row over the view's tokens `[Pv]`:
    /// the CLS row of R_v with a class token, else the mean of the patch rows.
    pub vit: Vec<Vec<f32>>,
    /// Per view, `u_view R_v,view` `[Pv]`.
    pub combined: Vec<Vec<f32>>,
    /// Whether column 0 of each view's rows is a class token.
    pub class_token: bool,
}

/// The forward of one sequence with an anyres image, kept for the backward.
pub struct AnyresTrackedPass<'a> {
    model: &'a LlavaNext,
    n_input: usize,
    output_ids: Vec<u32>,
    image_pos: Vec<usize>,
    sources: Vec<FeatureSource>,
    views: usize,
    per_view: usize,
    vision: Vec<VisionPass<'a>>,
    decoder: DecoderPass<'a>,
}

impl<'a> AnyresTrackedPass<'a> {
    /// Run the forward over `input_ids + output_ids[..T−1]` with the views `pixel_values`
    /// `[views, 3, t, t]` laid out by `layout`.
    pub fn forward(
        model: &'a LlavaNext,
        input_ids: &[u32],
        output_ids: &[u32],
        pixel_values: &Tensor,
        layout: &AnyresLayout,
    ) -> Result<Self> {
        if input_ids.is_empty() || output_ids.is_empty() {
            candle_core::bail!("relevancy needs at least one input and one output token");
        }
        let llava = model.llava();
        let _stage = Stage::new(tracing::info_span!("relevancy_forward"), llava.device());
        let mut seq = input_ids.to_vec();
        seq.extend_from_slice(&output_ids[..output_ids.len() - 1]);
        let image_pos = llava.image_positions(input_ids);
        let sources = layout.sources();
        if image_pos.len() != sources.len() {
            candle_core::bail!(
                "the prompt holds {} image tokens but the image layout {}",
                image_pos.len(),
                sources.len()
            );
        }
        // Each view runs through the tower on its own tape: the attention backward takes a
        // forward batch of one image (its batch is the seeds).
        let px = pixel_values.to_device(llava.device())?;
        let v = px.dim(0)?;
        let mut vision = Vec::with_capacity(v);
        let mut feats = Vec::with_capacity(v);
        for i in 0..v {
            let mut tape = SavingTape::default();
            feats.push(llava.features(&px.narrow(0, i, 1)?, &mut tape)?);
            vision.push(VisionPass::new(
                llava,
                tape.take_vision()?,
                tape.take_projector(),
            ));
        }
        let views = Tensor::cat(&feats, 0)?;
        let per_view = views.dim(1)?;
        let packed = model.pack(&views, layout)?;
        let embeds = llava.embed_sequence(&seq, input_ids.len(), Some(&packed))?;
        let mut tape = SavingTape::default();
        let decoder = llava.decoder();
        let mut cache = KvCache::new(decoder.layers().len());
        let last = decoder.hidden_states(&embeds, 0, &mut cache, &mut tape)?;
        let site = Site::text(decoder.layers().len());
        decoder
            .final_norm()
            .forward_taped(&last, &mut tape, site, NormSlot::Final)?;
        drop(cache);
        let decoder = DecoderPass::new(
            decoder,
            tape.take_text()?,
            tape.take_final_norm()?,
            last.squeeze(0)?,
        )?;
        Ok(Self {
            model,
            n_input: input_ids.len(),
            output_ids: output_ids.to_vec(),
            image_pos,
            sources,
            views: v,
            per_view,
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

    /// `x` `[B, F, ..]` (rows = packed features) sent back to the per-view rows `[B, V·Pf, ..]`
    /// through the transposed packing.
    fn unpack(&self, x: &Tensor) -> Result<Tensor> {
        let device = x.device();
        let rows = self.views * self.per_view;
        let mut shape = x.dims().to_vec();
        shape[1] = rows + 1;
        let mut out = Tensor::zeros(shape.as_slice(), x.dtype(), device)?;
        let taps = self
            .sources
            .iter()
            .map(|s| match s {
                FeatureSource::Cells(c) => c.len(),
                FeatureSource::Newline => 0,
            })
            .max()
            .unwrap_or(0);
        let f = self.sources.len();
        for k in 0..taps {
            let mut index = vec![rows as u32; f];
            let mut weight = vec![0f32; f];
            for (row, s) in self.sources.iter().enumerate() {
                if let FeatureSource::Cells(c) = s {
                    if let Some(&(src, w)) = c.get(k) {
                        index[row] = src as u32;
                        weight[row] = w;
                    }
                }
            }
            let mut wshape = vec![1usize; x.rank()];
            wshape[1] = f;
            let w = Tensor::from_vec(weight, wshape.as_slice(), device)?.to_dtype(x.dtype())?;
            let idx = Tensor::new(index.as_slice(), device)?;
            out = out.index_add(&idx, &x.broadcast_mul(&w)?.contiguous()?, 1)?;
        }
        out.narrow(1, 0, rows)
    }

    /// Relevancy rows of output tokens `tokens`, `chunk` tokens per decoder backward.
    pub fn relevancy(&self, tokens: &[usize], chunk: usize) -> Result<Vec<AnyresRows>> {
        let t_len = self.output_ids.len();
        if let Some(&bad) = tokens.iter().find(|&&t| t >= t_len) {
            candle_core::bail!("output token {bad} does not exist (there are {t_len})");
        }
        let llava = self.model.llava();
        let Some(first) = self.vision.first() else {
            candle_core::bail!("the image has no views");
        };
        let class_token = first.class_token();
        let n = first.tokens;
        let pf = self.per_view;
        let mut out = Vec::with_capacity(tokens.len());
        for group in tokens.chunks(chunk.max(1)) {
            let b = group.len();
            let positions: Vec<usize> = group.iter().map(|&t| self.n_input - 1 + t).collect();
            let ids: Vec<u32> = group.iter().map(|&t| self.output_ids[t]).collect();
            let (r, demb) = self.decoder.backward(&positions, &ids)?;
            let device = r.device();
            let pos: Vec<u32> = self.image_pos.iter().map(|&p| p as u32).collect();
            let pos = Tensor::new(pos.as_slice(), device)?;
            let d_views = self.unpack(&demb.index_select(&pos, 1)?)?; // [B, V·Pf, D]
            let u_views = self
                .unpack(&r.index_select(&pos, 1)?.contiguous()?)?
                .to_dtype(DType::F32)?; // [B, V·Pf]
            let tok: Vec<u32> = (0..pf).map(|j| llava.token_of_feature(j) as u32).collect();
            let tok = Tensor::new(tok.as_slice(), device)?;
            // The vit row's start: e_CLS with a class token, else the mean over the patches.
            let e0 = if class_token {
                let mut e0 = vec![0f32; b * n];
                for i in 0..b {
                    e0[i * n] = 1.0;
                }
                Tensor::from_vec(e0, (b, n), device)?
            } else {
                Tensor::full(1.0 / n as f32, (b, n), device)?
            };
            let mut vit = vec![Vec::with_capacity(self.views); b];
            let mut combined = vec![Vec::with_capacity(self.views); b];
            for (v, pass) in self.vision.iter().enumerate() {
                let d_f = d_views.narrow(1, v * pf, pf)?.contiguous()?;
                let u_f = u_views.narrow(1, v * pf, pf)?.contiguous()?;
                let u = Tensor::zeros((b, n), DType::F32, device)?.index_add(&tok, &u_f, 1)?;
                let rows = Tensor::stack(&[&e0, &u], 1)?; // [B, 2, Pv]
                for (i, mut pair) in pass
                    .backward(&d_f, &rows)?
                    .to_vec3::<f32>()?
                    .into_iter()
                    .enumerate()
                {
                    combined[i].push(pair.pop().unwrap_or_default());
                    vit[i].push(pair.pop().unwrap_or_default());
                }
            }
            let llm = r.to_vec2::<f32>()?;
            for (i, ((llm, vit), combined)) in llm.into_iter().zip(vit).zip(combined).enumerate() {
                out.push(AnyresRows {
                    token: group[i],
                    llm,
                    vit,
                    combined,
                    class_token,
                });
            }
        }
        Ok(out)
    }
}
