//! LLaMA decoder: RoPE (see [`super::rope`]), RMSNorm, SwiGLU MLP, grouped-query attention
//! with a KV cache and a causal mask.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::cache::KvCache;
use super::config::TextConfig;
use super::ops::{self, Activation};
use super::recorder::AttentionRecorder;
use super::rope::Rope;

/// RMSNorm with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub(super) weight: Tensor,
    pub(super) eps: f64,
}

impl RmsNorm {
    /// Load `weight` of size `size` from `vb`.
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    /// Normalise the last dimension.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::rms_norm(xs, &self.weight, self.eps)
    }
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    pub(super) q_proj: Linear,
    pub(super) k_proj: Linear,
    pub(super) v_proj: Linear,
    pub(super) o_proj: Linear,
    pub(super) num_heads: usize,
    pub(super) num_kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) scale: f64,
    pub(super) layer: usize,
}

impl Attention {
    /// Load layer `layer`'s attention from `vb` (prefix `self_attn`).
    pub fn load(vb: VarBuilder, cfg: &TextConfig, layer: usize) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let b = cfg.attention_bias;
        Ok(Self {
            q_proj: candle_nn::linear_b(h, nh * d, b, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear_b(h, nkv * d, b, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear_b(h, nkv * d, b, vb.pp("v_proj"))?,
            o_proj: candle_nn::linear_b(nh * d, h, b, vb.pp("o_proj"))?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: (d as f64).powf(-0.5),
            layer,
        })
    }

    /// `xs` `[1, q, hidden]` at positions `offset..offset + q`; `mask` `[q, kv]` (additive) when
    /// `q > 1`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        offset: usize,
        cache: &mut KvCache,
        rec: &mut AttentionRecorder,
    ) -> Result<Tensor> {
        let (b, q_len, _) = xs.dims3()?;
        let (nh, nkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            t.reshape((b, q_len, heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = ops::rope(&split(self.q_proj.forward(xs)?, nh)?, cos, sin)?;
        let k = ops::rope(&split(self.k_proj.forward(xs)?, nkv)?, cos, sin)?;
        let v = split(self.v_proj.forward(xs)?, nkv)?;
        let (k, v) = cache.append(self.layer, &k, &v)?;
        let kv_len = k.dim(2)?;
        // Group the query heads that share a key/value head instead of repeating K and V:
        // head h = g * n_rep + r uses kv head g.
        let n_rep = nh / nkv;
        let qg = q.reshape((b, nkv, n_rep * q_len, d))?;
        let scores = (qg.matmul(&k.t()?)? * self.scale)?.reshape((b, nh, q_len, kv_len))?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = ops::softmax_f32(&scores)?;
        if rec.wants_text(self.layer) {
            rec.record_text(self.layer, &probs, offset)?;
        }
        let probs = probs
            .to_dtype(v.dtype())?
            .reshape((b, nkv, n_rep * q_len, kv_len))?;
        let out = probs
            .matmul(&v)?
            .reshape((b, nh, q_len, d))?
            .transpose(1, 2)?
            .reshape((b, q_len, nh * d))?;
        self.o_proj.forward(&out)
    }
}

/// SwiGLU MLP: down(act(gate(x)) · up(x)).
#[derive(Debug, Clone)]
pub struct Mlp {
    pub(super) gate_proj: Linear,
    pub(super) up_proj: Linear,
    pub(super) down_proj: Linear,
    pub(super) act: Activation,
}

impl Mlp {
    /// Load from `vb` (prefix `mlp`).
    pub fn load(vb: VarBuilder, cfg: &TextConfig) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: candle_nn::linear_b(h, i, b, vb.pp("gate_proj"))?,
            up_proj: candle_nn::linear_b(h, i, b, vb.pp("up_proj"))?,
            down_proj: candle_nn::linear_b(i, h, b, vb.pp("down_proj"))?,
            act: cfg.hidden_act,
        })
    }

    /// Apply the MLP.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.act.forward(&self.gate_proj.forward(xs)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(xs)?)?)
    }
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct Block {
    pub(super) input_layernorm: RmsNorm,
    pub(super) self_attn: Attention,
    pub(super) post_attention_layernorm: RmsNorm,
    pub(super) mlp: Mlp,
}

impl Block {
    /// Load layer `layer` from `vb` (prefix `layers.{layer}`).
    pub fn load(vb: VarBuilder, cfg: &TextConfig, layer: usize) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), h, eps)?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg, layer)?,
            post_attention_layernorm: RmsNorm::load(vb.pp("post_attention_layernorm"), h, eps)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }

    /// Apply the layer.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        offset: usize,
        cache: &mut KvCache,
        rec: &mut AttentionRecorder,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(xs)?;
        let h = self
            .self_attn
            .forward(&h, cos, sin, mask, offset, cache, rec)?;
        let xs = (xs + h)?;
        let h = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&xs)?)?;
        xs + h
    }
}

/// The decoder with its embeddings and output head.
#[derive(Debug, Clone)]
pub struct Llama {
    pub(super) embed_tokens: Embedding,
    pub(super) layers: Vec<Block>,
    pub(super) norm: RmsNorm,
    pub(super) lm_head: Linear,
    pub(super) rope: Rope,
    pub(super) cfg: TextConfig,
}

/// Additive causal mask `[q, offset + q]`: query i (position offset + i) sees keys ≤ offset + i.
fn causal_mask(q_len: usize, offset: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let kv = offset + q_len;
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|i| {
            (0..kv).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (q_len, kv), device)?.to_dtype(dtype)
}

impl Llama {
    /// Load the body from `vb_text` (prefix of `embed_tokens`, `layers`, `norm`); `lm_head` is
    /// `None` when the output head is tied to the embeddings.
    pub fn load(
        vb_text: VarBuilder,
        lm_head: Option<VarBuilder>,
        cfg: &TextConfig,
    ) -> Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb_text.pp("embed_tokens"))?;
        let vb_l = vb_text.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(vb_l.pp(i), cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(vb_text.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
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
            cfg: cfg.clone(),
        })
    }

    /// Embeddings `[1, n, hidden]` of `ids`.
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        let vocab = self.cfg.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab} ids");
        }
        let device = self.embed_tokens.embeddings().device();
        let ids = Tensor::new(ids, device)?;
        self.embed_tokens.forward(&ids)?.unsqueeze(0)
    }

    /// The embedding matrix `[vocab, hidden]`.
    pub fn embeddings(&self) -> &Tensor {
        self.embed_tokens.embeddings()
    }

    /// Run the decoder over `embeds` `[1, n, hidden]` at positions `offset..offset + n`;
    /// returns f32 logits `[1, n, vocab]` (`all_logits`) or `[1, 1, vocab]` (last position).
    /// With a recorder that captures nothing, `embeds` may hold a batch `[B, n, hidden]` of
    /// sequences of the same length (the logits are then `[B, ·, vocab]`).
    pub fn forward(
        &self,
        embeds: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        rec: &mut AttentionRecorder,
        all_logits: bool,
    ) -> Result<Tensor> {
        let (b, n, hidden) = embeds.dims3()?;
        // A batch of several sequences runs only when nothing is recorded.
        let batch_ok = b == 1 || (b > 1 && rec.mode().is_off());
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
        let dtype = self.embed_tokens.embeddings().dtype();
        let device = embeds.device();
        let (cos, sin) = self.rope.cos_sin(offset, n, dtype, device)?;
        let mask = if n > 1 {
            Some(causal_mask(n, offset, dtype, device)?)
        } else {
            None
        };
        let mut xs = embeds.to_dtype(dtype)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &cos, &sin, mask.as_ref(), offset, cache, rec)?;
        }
        rec.end_forward()?;
        if !all_logits {
            xs = xs.narrow(1, n - 1, 1)?;
        }
        let xs = self.norm.forward(&xs)?;
        self.lm_head.forward(&xs)?.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_hides_the_future() {
        let m = causal_mask(2, 3, DType::F32, &Device::Cpu).unwrap();
        let v = m.to_vec2::<f32>().unwrap();
        assert_eq!(v[0][..4], [0.0; 4]);
        assert!(v[0][4].is_infinite());
        assert_eq!(v[1], vec![0.0; 5]);
    }
}
