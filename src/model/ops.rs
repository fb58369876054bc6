//! The numerical building blocks shared by the model files, kept in one place so that a
//! gradient-tracked variant can be swapped in later (the fused candle ops have no backward).

use candle_core::{DType, Result, Tensor};
use serde::Deserialize;

/// Softmax over the last dimension, computed in f32; the result is f32.
pub fn softmax_f32(xs: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&xs.to_dtype(DType::F32)?)
}

/// RMSNorm over the last dimension with weight `alpha`, computed in f32 and returned in the
/// input dtype (as transformers' LlamaRMSNorm: normalise in f32, cast, then scale).
pub fn rms_norm(xs: &Tensor, alpha: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = xs.dtype();
    if dtype == DType::F32 {
        return candle_nn::ops::rms_norm(&xs.contiguous()?, alpha, eps as f32);
    }
    let normed = candle_nn::ops::rms_norm(
        &xs.to_dtype(DType::F32)?.contiguous()?,
        &Tensor::ones(alpha.dims1()?, DType::F32, xs.device())?,
        eps as f32,
    )?;
    normed.to_dtype(dtype)?.broadcast_mul(alpha)
}

/// LayerNorm over the last dimension, two-pass (mean, then variance of the centred values) in
/// f32 as torch does; candle's fused layer norm uses `E(x²) − E(x)²`, which loses precision
/// when the mean is large.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = xs.dtype();
    let x = xs.to_dtype(DType::F32)?;
    let n = x.dim(candle_core::D::Minus1)? as f64;
    let mean = (x.sum_keepdim(candle_core::D::Minus1)? / n)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = (centred.sqr()?.sum_keepdim(candle_core::D::Minus1)? / n)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed
        .to_dtype(dtype)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Rotary position embedding in the "rotate half" convention of transformers' LLaMA.
/// `xs`: `[b, h, t, d]`; `cos`, `sin`: `[t, d/2]` in the dtype of `xs`.
pub fn rope(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    candle_nn::rotary_emb::rope(&xs.contiguous()?, cos, sin)
}

/// An activation function named in a Hugging Face config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// x · sigmoid(x).
    #[serde(alias = "swish", rename = "silu")]
    Silu,
    /// Exact GELU (erf), transformers' `gelu`.
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU with the tanh approximation.
    #[serde(
        alias = "gelu_new",
        alias = "gelu_fast",
        alias = "gelu_pytorch_tanh",
        rename = "gelu_tanh"
    )]
    GeluTanh,
    /// x · sigmoid(1.702 x), CLIP's activation.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// max(x, 0).
    #[serde(rename = "relu")]
    Relu,
}

impl Activation {
    /// Apply the activation elementwise.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => candle_nn::ops::silu(xs),
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Relu => xs.relu(),
        }
    }

    /// The derivative at `x` (elementwise, computed in f32, returned in the dtype of `x`).
    pub fn derivative(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let sigmoid = |t: &Tensor| -> Result<Tensor> { (t.neg()?.exp()? + 1.0)?.recip() };
        let d = match self {
            Self::Silu => {
                let s = sigmoid(&x)?;
                // s (1 + x (1 − s))
                (&s * ((&x * (1.0 - &s)?)? + 1.0)?)?
            }
            Self::QuickGelu => {
                let s = sigmoid(&(&x * 1.702)?)?;
                // s + 1.702 x s (1 − s)
                (&s + ((&x * 1.702)? * (&s * (1.0 - &s)?)?)?)?
            }
            Self::Gelu => {
                // Φ(x) + x φ(x)
                let cdf = ((x.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?.erf()? + 1.0)? * 0.5)?;
                let pdf = (x.sqr()? * -0.5)?
                    .exp()?
                    .affine(1.0 / (2.0 * std::f64::consts::PI).sqrt(), 0.0)?;
                (cdf + (&x * pdf)?)?
            }
            Self::GeluTanh => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                let inner = ((&x + (x.powf(3.0)? * 0.044715)?)? * k)?;
                let t = inner.tanh()?;
                let dinner = ((x.sqr()? * (3.0 * 0.044715))? + 1.0)?.affine(k, 0.0)?;
                let left = ((&t + 1.0)? * 0.5)?;
                let right = ((&x * 0.5)? * ((1.0 - t.sqr()?)? * dinner)?)?;
                (left + right)?
            }
            Self::Relu => x.gt(0.0)?.to_dtype(DType::F32)?,
        };
        d.to_dtype(dtype)
    }
}

/// `dy W` for a gradient `dy` `[.., out]` and a linear weight `W` `[out, in]`: the gradient of
/// the linear layer's input, `[.., in]`.
pub fn linear_backward(dy: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let mut dims = dy.dims().to_vec();
    let out = dims.pop().unwrap_or(1);
    let rows = dims.iter().product::<usize>();
    dims.push(weight.dim(1)?);
    dy.reshape((rows, out))?.matmul(weight)?.reshape(dims)
}
