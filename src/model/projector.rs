//! The multi-modal projector: `linear` (one layer) or `mlpNx_gelu` (`linear_1`, activation,
//! `linear_2`, ... — llava-hf's mlp2x_gelu is `linear_1`, gelu, `linear_2`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::ops::Activation;

/// Projector from vision features to decoder embeddings.
#[derive(Debug, Clone)]
pub struct Projector {
    pub(super) layers: Vec<Linear>,
    pub(super) act: Activation,
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

    /// Apply the projector.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.layers[0].forward(xs)?;
        for layer in &self.layers[1..] {
            xs = layer.forward(&self.act.forward(&xs)?)?;
        }
        Ok(xs)
    }
}
