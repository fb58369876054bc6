//! The multi-modal projector: `linear` (one layer) or `mlpNx_gelu` (`linear_1`, activation,
//! `linear_2`, ... — llava-hf's mlp2x_gelu is `linear_1`, gelu, `linear_2`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::ops::{linear_backward, Activation};
use super::tape::Tape;

/// Projector from vision features to decoder embeddings.
#[derive(Debug, Clone)]
pub struct Projector {
    layers: Vec<Linear>,
    act: Activation,
}

impl Projector {
    /// Load `depth` layers `linear_1..linear_depth` from `vb` (prefix `multi_modal_projector`):
    /// the first maps `in_dim` to `out_dim`, the others `out_dim` to `out_dim`.
    pub fn load(
        vb: VarBuilder,
        depth: usize,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        act: Activation,
    ) -> Result<Self> {
        if depth == 0 {
            candle_core::bail!("the projector has no layer");
        }
        let layers = (1..=depth)
            .map(|i| {
                let d_in = if i == 1 { in_dim } else { out_dim };
                candle_nn::linear_b(d_in, out_dim, bias, vb.pp(format!("linear_{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, act })
    }

    /// Number of linear layers (1 = linear, N = mlpNx).
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Apply the projector; a tape that keeps activations gets act'(pre-activation) before
    /// every layer but the first.
    pub fn forward(&self, xs: &Tensor, tape: &mut dyn Tape) -> Result<Tensor> {
        let mut xs = self.layers[0].forward(xs)?;
        for (i, layer) in self.layers.iter().enumerate().skip(1) {
            if tape.keeps_activations() {
                tape.save_projector(i, self.act.derivative(&xs)?)?;
            }
            xs = layer.forward(&self.act.forward(&xs)?)?;
        }
        Ok(xs)
    }

    /// Backward: `dy` `[.., out_dim]` → gradient of the input; `dact[i - 1]` is what
    /// [`Tape::save_projector`] got for layer i.
    pub(crate) fn backward(&self, dact: &[Tensor], dy: &Tensor) -> Result<Tensor> {
        if dact.len() + 1 != self.layers.len() {
            candle_core::bail!(
                "the projector backward needs {} activation derivatives, got {}",
                self.layers.len() - 1,
                dact.len()
            );
        }
        let mut d = dy.clone();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            d = linear_backward(&d, layer.weight())?;
            if i > 0 {
                d = d.broadcast_mul(&dact[i - 1])?;
            }
        }
        Ok(d)
    }
}
