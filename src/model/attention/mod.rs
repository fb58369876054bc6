//! Multi-head self-attention shared by every tower: grouped-query heads, optional RoPE, an
//! optional additive mask, an optional KV cache, optional biases; its backward rules are in
//! the `backward` submodule.

mod backward;
mod fused;

pub(crate) use backward::SeedRows;

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::cache::KvCache;
use super::ops;
use super::tape::{AttnSaved, Site, Tape};

/// The shape of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Model hidden size.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Biases on the q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
}

/// What one attention call needs besides its input (the per-forward context).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttnInputs<'c> {
    /// RoPE tables `cos`, `sin` `[q, d/2]` of the query positions.
    pub rope: Option<(&'c Tensor, &'c Tensor)>,
    /// Additive mask `[q, kv]`.
    pub mask: Option<&'c Tensor>,
    /// Absolute position of the first query row.
    pub offset: usize,
}

/// Self-attention of one layer.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    site: Site,
}

impl Attention {
    /// Load from `vb` (prefix `self_attn`); the output projection is called `o_name`
    /// (`o_proj` in decoders, `out_proj` in CLIP/SigLIP).
    pub fn load(vb: VarBuilder, shape: AttnShape, o_name: &str, site: Site) -> Result<Self> {
        let AttnShape {
            hidden: h,
            heads: nh,
            kv_heads: nkv,
            head_dim: d,
            qkv_bias,
            o_bias,
        } = shape;
        if nkv == 0 || nh % nkv != 0 {
            candle_core::bail!("{nh} attention heads cannot share {nkv} key/value heads");
        }
        Ok(Self {
            q_proj: candle_nn::linear_b(h, nh * d, qkv_bias, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear_b(h, nkv * d, qkv_bias, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear_b(h, nkv * d, qkv_bias, vb.pp("v_proj"))?,
            o_proj: candle_nn::linear_b(nh * d, h, o_bias, vb.pp(o_name))?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: (d as f64).powf(-0.5),
            site,
        })
    }

    /// Load an attention whose q/k/v projections are one fused linear `qkv_name` (`[3·heads·d,
    /// hidden]`, with bias when `shape.qkv_bias`; the Qwen vision tower's `attn.qkv`), split
    /// here into the three projections; the output projection is `o_name`.
    pub fn load_fused(
        vb: VarBuilder,
        shape: AttnShape,
        qkv_name: &str,
        o_name: &str,
        site: Site,
    ) -> Result<Self> {
        let AttnShape {
            hidden: h,
            heads: nh,
            head_dim: d,
            ..
        } = shape;
        if shape.kv_heads != nh {
            candle_core::bail!("a fused qkv projection needs as many key/value heads as heads");
        }
        let vb_qkv = vb.pp(qkv_name);
        let w = vb_qkv.get((3 * nh * d, h), "weight")?;
        let b = if shape.qkv_bias {
            Some(vb_qkv.get(3 * nh * d, "bias")?)
        } else {
            None
        };
        let part = |i: usize| -> Result<Linear> {
            let wi = w.narrow(0, i * nh * d, nh * d)?.contiguous()?;
            let bi = match &b {
                Some(b) => Some(b.narrow(0, i * nh * d, nh * d)?.contiguous()?),
                None => None,
            };
            Ok(Linear::new(wi, bi))
        };
        Ok(Self {
            q_proj: part(0)?,
            k_proj: part(1)?,
            v_proj: part(2)?,
            o_proj: candle_nn::linear_b(nh * d, h, shape.o_bias, vb.pp(o_name))?,
            num_heads: nh,
            num_kv_heads: nh,
            head_dim: d,
            scale: (d as f64).powf(-0.5),
            site,
        })
    }

    /// `xs` `[b, q, hidden]`; with a cache the keys and values of earlier positions are
    /// prepended (the cache layer is this layer's index). The scores and probabilities pass
    /// through `tape`, which may change them.
    pub fn forward(
        &self,
        xs: &Tensor,
        inputs: &AttnInputs,
        cache: Option<&mut KvCache>,
        tape: &mut dyn Tape,
    ) -> Result<Tensor> {
        let (b, q_len, _) = xs.dims3()?;
        let (nh, nkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            t.reshape((b, q_len, heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let mut q = split(self.q_proj.forward(xs)?, nh)?;
        let mut k = split(self.k_proj.forward(xs)?, nkv)?;
        let v = split(self.v_proj.forward(xs)?, nkv)?;
        if let Some((cos, sin)) = inputs.rope {
            q = ops::rope(&q, cos, sin)?;
            k = ops::rope(&k, cos, sin)?;
        }
        let (k, v) = match cache {
            Some(cache) => cache.append(self.site.layer, &k, &v)?,
            None => (k, v),
        };
        let kv_len = k.dim(2)?;
        // Group the query heads that share a key/value head instead of repeating K and V:
        // head h = g * n_rep + r uses kv head g.
        let n_rep = nh / nkv;
        let qg = q.reshape((b, nkv, n_rep * q_len, d))?;
        let scores = (qg.matmul(&k.t()?)? * self.scale)?.reshape((b, nh, q_len, kv_len))?;
        let scores = match inputs.mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let scores = tape.scores(self.site, scores, inputs.offset)?;
        let probs = tape.probs(self.site, ops::softmax_f32(&scores)?, inputs.offset)?;
        if tape.keeps_activations() {
            let saved = AttnSaved {
                q: q.clone(),
                k: k.clone(),
                v: v.clone(),
                probs: probs.clone(),
            };
            tape.save_attention(self.site, saved)?;
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
