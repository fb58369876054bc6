//! Hand-written backward rules of the building blocks, batched over several seeds (one seed
//! per output token). Batched tensors carry the seed index `B` as their first dimension
//! (`[B, n, hidden]`), except attention-sized tensors, laid out `[heads, n_q, B, n_k]` so that
//! every product below is one plain (strided) matrix product without copies.

use candle_core::{DType, Result, Tensor, D};

use crate::model::ops::Activation;

/// What a normalisation layer keeps from the forward pass: the normalised input (f32) and the
/// inverse scale per row (f32, `[n, 1]`).
#[derive(Debug, Clone)]
pub(super) struct NormSaved {
    pub xhat: Tensor,
    pub inv: Tensor,
}

/// RMSNorm forward as the model computes it (normalise in f32, cast, scale), keeping what the
/// backward needs. `x`: `[n, h]`.
pub(super) fn rms_forward(x: &Tensor, weight: &Tensor, eps: f64) -> Result<(Tensor, NormSaved)> {
    let x32 = x.to_dtype(DType::F32)?;
    let inv = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    let xhat = x32.broadcast_mul(&inv)?;
    let y = xhat.to_dtype(x.dtype())?.broadcast_mul(weight)?;
    Ok((y, NormSaved { xhat, inv }))
}

/// RMSNorm backward: `dy` `[B, n, h]` → `dx` `[B, n, h]` in the dtype of `dy`.
pub(super) fn rms_backward(s: &NormSaved, weight: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let dtype = dy.dtype();
    let dxhat = dy
        .to_dtype(DType::F32)?
        .broadcast_mul(&weight.to_dtype(DType::F32)?)?;
    let m = dxhat.broadcast_mul(&s.xhat)?.mean_keepdim(D::Minus1)?;
    let dx = (dxhat - s.xhat.broadcast_mul(&m)?)?.broadcast_mul(&s.inv)?;
    dx.to_dtype(dtype)
}

/// LayerNorm forward, two-pass in f32 as the model computes it, keeping what the backward
/// needs. `x`: `[n, h]`.
pub(super) fn ln_forward(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, NormSaved)> {
    let x32 = x.to_dtype(DType::F32)?;
    let mean = x32.mean_keepdim(D::Minus1)?;
    let centred = x32.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    let xhat = centred.broadcast_mul(&inv)?;
    let y = xhat
        .to_dtype(x.dtype())?
        .broadcast_mul(weight)?
        .broadcast_add(bias)?;
    Ok((y, NormSaved { xhat, inv }))
}

/// LayerNorm backward: `dy` `[B, n, h]` → `dx` `[B, n, h]` in the dtype of `dy`.
pub(super) fn ln_backward(s: &NormSaved, weight: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let dtype = dy.dtype();
    let dxhat = dy
        .to_dtype(DType::F32)?
        .broadcast_mul(&weight.to_dtype(DType::F32)?)?;
    let m1 = dxhat.mean_keepdim(D::Minus1)?;
    let m2 = dxhat.broadcast_mul(&s.xhat)?.mean_keepdim(D::Minus1)?;
    let dx = dxhat
        .broadcast_sub(&m1)?
        .sub(&s.xhat.broadcast_mul(&m2)?)?
        .broadcast_mul(&s.inv)?;
    dx.to_dtype(dtype)
}

/// Derivative of an activation function at `x` (elementwise, computed in f32, returned in the
/// dtype of `x`).
pub(super) fn act_derivative(act: Activation, x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let sigmoid = |t: &Tensor| -> Result<Tensor> { (t.neg()?.exp()? + 1.0)?.recip() };
    let d = match act {
        Activation::Silu => {
            let s = sigmoid(&x)?;
            // s (1 + x (1 − s))
            (&s * ((&x * (1.0 - &s)?)? + 1.0)?)?
        }
        Activation::QuickGelu => {
            let s = sigmoid(&(&x * 1.702)?)?;
            // s + 1.702 x s (1 − s)
            (&s + ((&x * 1.702)? * (&s * (1.0 - &s)?)?)?)?
        }
        Activation::Gelu => {
            // Φ(x) + x φ(x)
            let cdf = ((x.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?.erf()? + 1.0)? * 0.5)?;
            let pdf = (x.sqr()? * -0.5)?
                .exp()?
                .affine(1.0 / (2.0 * std::f64::consts::PI).sqrt(), 0.0)?;
            (cdf + (&x * pdf)?)?
        }
        Activation::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let inner = ((&x + (x.powf(3.0)? * 0.044715)?)? * k)?;
            let t = inner.tanh()?;
            let dinner = ((x.sqr()? * (3.0 * 0.044715))? + 1.0)?.affine(k, 0.0)?;
            let left = ((&t + 1.0)? * 0.5)?;
            let right = ((&x * 0.5)? * ((1.0 - t.sqr()?)? * dinner)?)?;
            (left + right)?
        }
        Activation::Relu => x.gt(0.0)?.to_dtype(DType::F32)?,
    };
    d.to_dtype(dtype)
}

/// What an attention layer keeps from the forward pass.
#[derive(Debug, Clone)]
pub(super) struct AttnSaved {
    /// Queries after RoPE, `[heads, n, d]` (model dtype).
    pub q: Tensor,
    /// Keys after RoPE, `[kv_heads, n, d]`.
    pub k: Tensor,
    /// Values, `[kv_heads, n, d]`.
    pub v: Tensor,
    /// Softmax probabilities, `[heads, n, n]`, f32.
    pub probs: Tensor,
}

/// Gradients that flow out of one attention layer's backward.
pub(super) struct AttnGrads {
    /// `mean_heads(clamp(∇A ⊙ A, min = 0))`, `[n_q, B, n_k]`, f32.
    pub abar: Tensor,
    /// Gradients of the projections' outputs, `[B·n, heads·d]`, `[B·n, kv_heads·d]` (twice),
    /// or `None` when the caller does not need them (the lowest layer).
    pub dqkv: Option<(Tensor, Tensor, Tensor)>,
}

/// Backward of `softmax(scale · Q Kᵀ + mask) V` (grouped-query: head `h` uses kv head
/// `h / (heads / kv_heads)`). `d_out`: gradient of the attention output before the output
/// projection, `[B, n, heads·d]`. `rope`: `(cos, −sin)` to undo the rotary embedding of Q and K.
pub(super) fn attn_backward(
    s: &AttnSaved,
    d_out: &Tensor,
    scale: f64,
    rope: Option<(&Tensor, &Tensor)>,
    need_inputs: bool,
) -> Result<AttnGrads> {
    let (nh, n, d) = s.q.dims3()?;
    let nkv = s.k.dim(0)?;
    let n_rep = nh / nkv;
    let b = d_out.dim(0)?;
    let dtype = d_out.dtype();
    // dO laid out [heads, n_q, B, d]
    let d_o = d_out
        .reshape((b, n, nh, d))?
        .permute((2, 1, 0, 3))?
        .contiguous()?;
    // ∇A = dO Vᵀ, grouped: [kv, n_rep·n_q·B, d] × [kv, d, n_k]
    let grad_a = d_o
        .reshape((nkv, n_rep * n * b, d))?
        .matmul(&s.v.t()?)?
        .reshape((nh, n, b, n))?
        .to_dtype(DType::F32)?;
    let a = s.probs.unsqueeze(2)?; // [heads, n_q, 1, n_k]
    let ga = grad_a.broadcast_mul(&a)?;
    let abar = (ga.relu()?.sum(0)? / nh as f64)?;
    if !need_inputs {
        return Ok(AttnGrads { abar, dqkv: None });
    }
    // softmax backward: dS = A ⊙ (∇A − Σ_k ∇A ⊙ A)
    let rowsum = ga.sum_keepdim(3)?;
    drop(ga);
    // (the score scale is applied to dQ and dK, which are smaller)
    let ds = grad_a
        .broadcast_sub(&rowsum)?
        .broadcast_mul(&a)?
        .to_dtype(dtype)?;
    drop(grad_a);
    // dQ = dS K: [kv, n_rep·n_q·B, n_k] × [kv, n_k, d] → [heads, n_q, B, d]
    let dq = (ds
        .reshape((nkv, n_rep * n * b, n))?
        .matmul(&s.k)?
        .reshape((nh, n, b, d))?
        * scale)?;
    // dKᵀ = Qᵀ dS per head: [heads, d, n_q] × [heads, n_q, B·n_k] → [heads, d, B, n_k]
    let dkt =
        (s.q.t()?
            .matmul(&ds.reshape((nh, n, b * n))?)?
            .reshape((nkv, n_rep, d, b, n))?
            .sum(1)?
            * scale)?;
    drop(ds);
    // dV = Aᵀ dO per head: [heads, n_k, n_q] × [heads, n_q, B·d] → [heads, n_k, B, d]
    let dv = s
        .probs
        .to_dtype(dtype)?
        .t()?
        .matmul(&d_o.reshape((nh, n, b * d))?)?
        .reshape((nkv, n_rep, n, b, d))?
        .sum(1)?;
    // to [B, heads, n, d] (what RoPE wants), undo RoPE, then [B·n, heads·d]
    let dq = dq.permute((2, 0, 1, 3))?.contiguous()?;
    let dk = dkt.permute((2, 0, 3, 1))?.contiguous()?;
    let (dq, dk) = match rope {
        Some((cos, neg_sin)) => (
            candle_nn::rotary_emb::rope(&dq, cos, neg_sin)?,
            candle_nn::rotary_emb::rope(&dk, cos, neg_sin)?,
        ),
        None => (dq, dk),
    };
    let flat = |t: Tensor, heads: usize| -> Result<Tensor> {
        t.transpose(1, 2)?.contiguous()?.reshape((b * n, heads * d))
    };
    let dq = flat(dq, nh)?;
    let dk = flat(dk, nkv)?;
    let dv = dv
        .permute((2, 1, 0, 3))?
        .contiguous()?
        .reshape((b * n, nkv * d))?;
    Ok(AttnGrads {
        abar,
        dqkv: Some((dq, dk, dv)),
    })
}

/// One step of the row form of rule 6: `r ← r + r Ā` for every seed, `r`: `[B, n]` f32,
/// `abar`: `[n_q, B, n_k]` f32.
pub(super) fn rollout_step(r: &Tensor, abar: &Tensor) -> Result<Tensor> {
    let add = abar.broadcast_mul(&r.t()?.unsqueeze(2)?)?.sum(0)?;
    r + add
}

/// `x W` for a batched gradient `x` `[B, n, out]` and a linear weight `W` `[out, in]`:
/// the gradient of the linear layer's input, `[B, n, in]`.
pub(super) fn linear_backward(dy: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (b, n, out) = dy.dims3()?;
    let inp = weight.dim(1)?;
    dy.reshape((b * n, out))?
        .matmul(weight)?
        .reshape((b, n, inp))
}
