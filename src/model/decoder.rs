//! The decoder shared by every text family: embeddings, pre-norm layers (RMSNorm, RoPE
//! self-attention with a KV cache, gated MLP), final norm and output head. What differs between
//! families is described by a [`DecoderSpec`] (see [`super::families`]).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::attention::{Attention, AttnInputs, AttnShape};
use super::cache::KvCache;
use super::config::TextConfig;
use super::mlp::GatedMlp;
use super::norm::RmsNorm;
use super::rope::Rope;
use super::tape::{NormSlot, Site, Tape};
use crate::trace::Stage;

/// What a text family changes in the shared decoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderSpec {
    /// Biases on q/k/v.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// RMSNorm scale stored as w with 1 + w applied (Gemma).
    pub norm_offset_one: bool,
    /// Token embeddings are multiplied by this, cast to the model dtype first (Gemma:
    /// √hidden). As in transformers 5, which scales inside the embedding module, the merged
    /// image features are not scaled (transformers 4.x scaled them too).
    pub embed_scale: Option<f64>,
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: GatedMlp,
    site: Site,
    window: Option<usize>,
}

impl DecoderLayer {
    /// Load layer `layer` from `vb` (prefix `layers.{layer}`).
    pub fn load(
        vb: VarBuilder,
        cfg: &TextConfig,
        spec: &DecoderSpec,
        layer: usize,
    ) -> Result<Self> {
        let (h, eps, one) = (cfg.hidden_size, cfg.rms_norm_eps, spec.norm_offset_one);
        let shape = AttnShape {
            hidden: h,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            qkv_bias: spec.qkv_bias,
            o_bias: spec.o_bias,
        };
        let site = Site::text(layer);
        Ok(Self {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), h, eps, one)?,
            self_attn: Attention::load(vb.pp("self_attn"), shape, "o_proj", site)?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                h,
                eps,
                one,
            )?,
            mlp: GatedMlp::load(
                vb.pp("mlp"),
                h,
                cfg.intermediate_size,
                cfg.mlp_bias,
                cfg.hidden_act,
            )?,
            site,
            window: cfg.layer_window(layer),
        })
    }

    /// Apply the layer to `xs` `[b, q, hidden]`.
    pub fn forward(
        &self,
        xs: &Tensor,
        inputs: &AttnInputs,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Tensor> {
        let h = self
            .input_layernorm
            .forward_taped(xs, tape, self.site, NormSlot::Attention)?;
        let h = self.self_attn.forward(&h, inputs, Some(cache), tape)?;
        let xs = (xs + h)?;
        let h = self
            .post_attention_layernorm
            .forward_taped(&xs, tape, self.site, NormSlot::Mlp)?;
        let h = self.mlp.forward(&h, tape, self.site)?;
        xs + h
    }

    /// The norm before the attention.
    pub(crate) fn input_norm(&self) -> &RmsNorm {
        &self.input_layernorm
    }

    /// The attention.
    pub(crate) fn attention(&self) -> &Attention {
        &self.self_attn
    }

    /// The norm before the MLP.
    pub(crate) fn post_norm(&self) -> &RmsNorm {
        &self.post_attention_layernorm
    }

    /// The MLP.
    pub(crate) fn mlp(&self) -> &GatedMlp {
        &self.mlp
    }
}

/// The decoder with its embeddings and output head.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    spec: DecoderSpec,
    cfg: TextConfig,
}

/// Additive mask `[q, offset + q]`: query i (position p = offset + i) sees key j when j ≤ p and,
/// with a sliding `window`, p − j < window. `None` when nothing is masked.
pub(crate) fn attention_mask(
    q_len: usize,
    offset: usize,
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let kv = offset + q_len;
    let hidden = |p: usize, j: usize| j > p || window.is_some_and(|w| p - j >= w);
    let any = (0..q_len).any(|i| (0..kv).any(|j| hidden(offset + i, j)));
    if !any {
        return Ok(None);
    }
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|i| {
            (0..kv).map(move |j| {
                if hidden(offset + i, j) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(
        Tensor::from_vec(mask, (q_len, kv), device)?.to_dtype(dtype)?,
    ))
}

impl Decoder {
    /// Load the body from `vb_text` (prefix of `embed_tokens`, `layers`, `norm`); `lm_head` is
    /// `None` when the output head is tied to the embeddings.
    pub fn load(
        vb_text: VarBuilder,
        lm_head: Option<VarBuilder>,
        cfg: &TextConfig,
        spec: DecoderSpec,
    ) -> Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb_text.pp("embed_tokens"))?;
        let vb_l = vb_text.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(vb_l.pp(i), cfg, &spec, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(
            vb_text.pp("norm"),
            cfg.hidden_size,
            cfg.rms_norm_eps,
            spec.norm_offset_one,
        )?;
        let lm_head = match lm_head {
            Some(vb) => candle_nn::linear_no_bias(cfg.hidden_size, cfg.vocab_size, vb)?,
            None => Linear::new(embed_tokens.embeddings().clone(), None),
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: Rope::new(cfg),
            spec,
            cfg: cfg.clone(),
        })
    }

    /// The family's differences.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// Embeddings `[1, n, hidden]` of `ids`, not yet scaled (see [`Decoder::scale_embeds`]).
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        let vocab = self.cfg.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab} ids");
        }
        let device = self.embed_tokens.embeddings().device();
        let ids = Tensor::new(ids, device)?;
        self.embed_tokens.forward(&ids)?.unsqueeze(0)
    }

    /// Token embeddings as the decoder takes them: multiplied by the family's embedding scale
    /// (in the model dtype), if any.
    pub fn scale_embeds(&self, embeds: &Tensor) -> Result<Tensor> {
        match self.spec.embed_scale {
            Some(s) => {
                let s = Tensor::new(s as f32, embeds.device())?.to_dtype(embeds.dtype())?;
                embeds.broadcast_mul(&s)
            }
            None => Ok(embeds.clone()),
        }
    }

    /// The embedding matrix `[vocab, hidden]`.
    pub fn embeddings(&self) -> &Tensor {
        self.embed_tokens.embeddings()
    }

    /// The layers.
    pub(crate) fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// The final norm.
    pub(crate) fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// The output head's weight `[vocab, hidden]`.
    pub(crate) fn lm_head_weight(&self) -> &Tensor {
        self.lm_head.weight()
    }

    /// RoPE tables `cos`, `sin` `[n, d/2]` of positions `0..n` in the model dtype.
    pub(crate) fn rope_tables(&self, n: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        self.rope.cos_sin(0, n, self.embeddings().dtype(), device)
    }

    /// f32 logits of the last layer's output `xs` `[.., hidden]`.
    pub(crate) fn logits(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.norm.forward(xs)?;
        self.lm_head.forward(&xs)?.to_dtype(DType::F32)
    }

    fn check(
        &self,
        embeds: &Tensor,
        offset: usize,
        cache: &KvCache,
        tape: &dyn Tape,
    ) -> Result<()> {
        let (b, n, hidden) = embeds.dims3()?;
        // A batch of several sequences runs only when the tape allows it.
        let batch_ok = b == 1 || (b > 1 && tape.allows_batch());
        if !batch_ok || hidden != self.cfg.hidden_size || n == 0 {
            candle_core::bail!(
                "the decoder takes embeddings [1, n > 0, {}] ([B, n, {0}] with attention \
                 capture off), got {:?}",
                self.cfg.hidden_size,
                embeds.dims()
            );
        }
        if cache.num_layers() != self.layers.len() {
            candle_core::bail!(
                "the KV cache has {} layers but the decoder has {}",
                cache.num_layers(),
                self.layers.len()
            );
        }
        if cache.len() != offset {
            candle_core::bail!(
                "offset {offset} does not match the {} cached positions",
                cache.len()
            );
        }
        Ok(())
    }

    /// Run the layers over `embeds` `[b, n, hidden]` (already scaled) at positions
    /// `offset..offset + n`; returns the last layer's output `[b, n, hidden]`.
    pub fn hidden_states(
        &self,
        embeds: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Tensor> {
        let n = embeds.dim(1)?;
        let dtype = self.embed_tokens.embeddings().dtype();
        let (cos, sin) = self.rope.cos_sin(offset, n, dtype, embeds.device())?;
        self.hidden_states_with_rope(embeds, offset, (&cos, &sin), cache, tape)
    }

    /// [`Decoder::hidden_states`] with RoPE tables `cos`, `sin` `[n, d/2]` (model dtype) given
    /// by the caller, for families whose positions are not `offset..offset + n` (M-RoPE).
    pub fn hidden_states_with_rope(
        &self,
        embeds: &Tensor,
        offset: usize,
        (cos, sin): (&Tensor, &Tensor),
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Tensor> {
        self.check(embeds, offset, cache, tape)?;
        let n = embeds.dim(1)?;
        let dtype = self.embed_tokens.embeddings().dtype();
        let device = embeds.device();
        if cos.dims() != [n, self.cfg.head_dim / 2] || sin.dims() != cos.dims() {
            candle_core::bail!(
                "RoPE tables {:?} do not cover {n} positions of head size {}",
                cos.dims(),
                self.cfg.head_dim
            );
        }
        // One mask per distinct window (full causal, or a family's sliding window).
        let mut masks: Vec<(Option<usize>, Option<Tensor>)> = Vec::new();
        for layer in &self.layers {
            if !masks.iter().any(|(w, _)| *w == layer.window) {
                let mask = attention_mask(n, offset, layer.window, dtype, device)?;
                masks.push((layer.window, mask));
            }
        }
        let mut xs = embeds.to_dtype(dtype)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let mask = masks
                .iter()
                .find(|(w, _)| *w == layer.window)
                .and_then(|(_, m)| m.as_ref());
            let inputs = AttnInputs {
                rope: Some((cos, sin)),
                mask,
                offset,
            };
            let _stage = Stage::new(tracing::debug_span!("decoder_layer", layer = l), device);
            xs = layer.forward(&xs, &inputs, cache, tape)?;
            tape.layer_output(Site::text(l), &xs)?;
        }
        tape.end_forward()?;
        Ok(xs)
    }

    /// Run the decoder over `embeds` `[1, n, hidden]` (already scaled) at positions
    /// `offset..offset + n`; returns f32 logits `[1, n, vocab]` (`all_logits`) or
    /// `[1, 1, vocab]` (last position). With a tape that allows it, `embeds` may hold a batch
    /// `[B, n, hidden]` of sequences of the same length (the logits are then `[B, ·, vocab]`).
    pub fn forward(
        &self,
        embeds: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
        all_logits: bool,
    ) -> Result<Tensor> {
        let mut xs = self.hidden_states(embeds, offset, cache, tape)?;
        if !all_logits {
            let n = xs.dim(1)?;
            xs = xs.narrow(1, n - 1, 1)?;
        }
        self.logits(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(q: usize, offset: usize, window: Option<usize>) -> Option<Vec<Vec<f32>>> {
        attention_mask(q, offset, window, DType::F32, &Device::Cpu)
            .unwrap()
            .map(|m| m.to_vec2::<f32>().unwrap())
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let v = mask(2, 3, None).unwrap();
        assert_eq!(v[0][..4], [0.0; 4]);
        assert!(v[0][4].is_infinite());
        assert_eq!(v[1], vec![0.0; 5]);
        assert!(mask(1, 7, None).is_none(), "one new query sees everything");
    }

    #[test]
    fn sliding_window_hides_keys_window_or_more_behind() {
        // query at position p sees keys j with p - j < 3
        let v = mask(4, 0, Some(3)).unwrap();
        let seen: Vec<Vec<bool>> = v
            .iter()
            .map(|r| r.iter().map(|x| x.is_finite()).collect())
            .collect();
        assert_eq!(seen[2], vec![true, true, true, false]);
        assert_eq!(seen[3], vec![false, true, true, true]);
        // one decode step at position 5 with window 3 sees keys 3, 4, 5
        let v = mask(1, 5, Some(3)).unwrap();
        let seen: Vec<bool> = v[0].iter().map(|x| x.is_finite()).collect();
        assert_eq!(seen, vec![false, false, false, true, true, true]);
        assert!(mask(1, 2, Some(3)).is_none());
    }
}
