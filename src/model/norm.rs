//! RMSNorm and LayerNorm, with their backward rules.
//!
//! Both normalise in f32, cast back to the model dtype, then scale (as transformers does).
//! When the tape keeps activations the normalisation is computed with plain ops so that x̂ and
//! the inverse scale can be kept (the fused kernel does not expose them); otherwise the fused
//! kernel runs.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::ops;
use super::tape::{NormSaved, NormSlot, Site, Tape};

/// RMSNorm with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Load `weight` of size `size` from `vb`; with `offset_one` the stored weight is w and the
    /// scale is 1 + w (Gemma), folded into the weight here.
    pub fn load(vb: VarBuilder, size: usize, eps: f64, offset_one: bool) -> Result<Self> {
        let weight = vb.get(size, "weight")?;
        let weight = if offset_one {
            (weight.to_dtype(DType::F32)? + 1.0)?.to_dtype(weight.dtype())?
        } else {
            weight
        };
        Ok(Self { weight, eps })
    }

    /// Normalise the last dimension (plain forward, nothing kept).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::rms_norm(xs, &self.weight, self.eps)
    }

    /// Normalise the last dimension, handing the statistics to `tape` if it keeps them.
    pub fn forward_taped(
        &self,
        xs: &Tensor,
        tape: &mut dyn Tape,
        site: Site,
        slot: NormSlot,
    ) -> Result<Tensor> {
        if !tape.keeps_activations() {
            return self.forward(xs);
        }
        let x32 = xs.to_dtype(DType::F32)?;
        let inv = (x32.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let xhat = x32.broadcast_mul(&inv)?;
        let y = xhat.to_dtype(xs.dtype())?.broadcast_mul(&self.weight)?;
        tape.save_norm(site, slot, NormSaved { xhat, inv })?;
        Ok(y)
    }

    /// Backward: `dy` `[.., n, h]` → `dx` in the dtype of `dy`.
    pub(crate) fn backward(&self, s: &NormSaved, dy: &Tensor) -> Result<Tensor> {
        let dtype = dy.dtype();
        let dxhat = dy
            .to_dtype(DType::F32)?
            .broadcast_mul(&self.weight.to_dtype(DType::F32)?)?;
        let m = dxhat.broadcast_mul(&s.xhat)?.mean_keepdim(D::Minus1)?;
        let dx = (dxhat - s.xhat.broadcast_mul(&m)?)?.broadcast_mul(&s.inv)?;
        dx.to_dtype(dtype)
    }
}

/// LayerNorm with weight and bias, two-pass in f32 (see [`ops::layer_norm`]).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Load `weight` and `bias` of size `size` from `vb`.
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }

    /// Normalise the last dimension (plain forward, nothing kept).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }

    /// Normalise the last dimension, handing the statistics to `tape` if it keeps them.
    pub fn forward_taped(
        &self,
        xs: &Tensor,
        tape: &mut dyn Tape,
        site: Site,
        slot: NormSlot,
    ) -> Result<Tensor> {
        if !tape.keeps_activations() {
            return self.forward(xs);
        }
        let x32 = xs.to_dtype(DType::F32)?;
        let mean = x32.mean_keepdim(D::Minus1)?;
        let centred = x32.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        let xhat = centred.broadcast_mul(&inv)?;
        let y = xhat
            .to_dtype(xs.dtype())?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?;
        tape.save_norm(site, slot, NormSaved { xhat, inv })?;
        Ok(y)
    }

    /// Backward: `dy` `[.., n, h]` → `dx` in the dtype of `dy`.
    pub(crate) fn backward(&self, s: &NormSaved, dy: &Tensor) -> Result<Tensor> {
        let dtype = dy.dtype();
        let dxhat = dy
            .to_dtype(DType::F32)?
            .broadcast_mul(&self.weight.to_dtype(DType::F32)?)?;
        let m1 = dxhat.mean_keepdim(D::Minus1)?;
        let m2 = dxhat.broadcast_mul(&s.xhat)?.mean_keepdim(D::Minus1)?;
        let dx = dxhat
            .broadcast_sub(&m1)?
            .sub(&s.xhat.broadcast_mul(&m2)?)?
            .broadcast_mul(&s.inv)?;
        dx.to_dtype(dtype)
    }
}
