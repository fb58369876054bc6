//! The batched backward of the vision tower and the projector, from the gradient of the image
//! features down to the first vision layer, accumulating the vision relevancy rows.

use candle_core::{Result, Tensor};

use super::saved::LayerSaved;
use crate::model::config::SelectStrategy;
use crate::model::llava::Llava;
use crate::trace::Stage;

/// What the forward of the vision tower (up to the deepest feature layer) and the projector
/// kept.
pub(super) struct VisionPass<'a> {
    model: &'a Llava,
    layers: Vec<LayerSaved>,
    /// act'(pre-activation) of each projector layer but the first.
    proj_dact: Vec<Tensor>,
    /// Number of vision tokens (P, plus one with a class token).
    pub tokens: usize,
}

impl<'a> VisionPass<'a> {
    /// What the forward kept: the vision layers, the projector's derivatives.
    pub(super) fn new(model: &'a Llava, layers: Vec<LayerSaved>, proj_dact: Vec<Tensor>) -> Self {
        let cfg = &model.config().vision_config;
        let tokens = cfg.num_patches() + usize::from(model.vision().spec().class_token);
        Self {
            model,
            layers,
            proj_dact,
            tokens,
        }
    }

    /// Whether the tower has a class token (vision token 0).
    pub(super) fn class_token(&self) -> bool {
        self.model.vision().spec().class_token
    }

    /// The model.
    pub(super) fn model(&self) -> &'a Llava {
        self.model
    }

    /// Backward from `d_features` `[B, F, text hidden]`, carrying the row vectors `rows`
    /// `[B, K, tokens]` (f32) through `r ← r + r Ā` from the deepest layer down. Returns the
    /// final rows.
    pub(super) fn backward(&self, d_features: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let (b, f, _) = d_features.dims3()?;
        let span = tracing::info_span!("vision_backward", tokens = b);
        let _stage = Stage::new(span, d_features.device());
        let d = self
            .model
            .projector()
            .backward(&self.proj_dact, d_features)?;
        // d: [B, F, vision hidden × number of feature layers]
        let vh = self.model.config().vision_config.hidden_size;
        let n = self.tokens;
        let strategy = self.model.config().vision_feature_select_strategy;
        let per_state = |k: usize| -> Result<Tensor> {
            let part = d.narrow(2, k * vh, vh)?;
            match strategy {
                SelectStrategy::Default => {
                    let first = Tensor::zeros((b, 1, vh), part.dtype(), part.device())?;
                    Tensor::cat(&[&first, &part], 1)
                }
                SelectStrategy::Full => Ok(part),
            }
        };
        if f + 1 != n && f != n {
            candle_core::bail!("{f} image features for {n} vision tokens");
        }
        let fl = self.model.feature_layers();
        let depth = self.layers.len();
        let mut dx = Tensor::zeros((b, n, vh), d.dtype(), d.device())?;
        for (k, &state) in fl.iter().enumerate() {
            if state == depth {
                dx = (dx + per_state(k)?)?;
            }
        }
        let mut r = rows.clone();
        let blocks = self.model.vision().layers();
        for (li, (layer, saved)) in blocks.iter().zip(&self.layers).enumerate().rev() {
            let span = tracing::debug_span!("vision_backward_layer", layer = li);
            let _layer = Stage::new(span, d_features.device());
            let dh2 = layer.mlp().backward(&saved.mlp, &dx)?;
            let dxm = (&dx + layer.post_norm().backward(&saved.norm2, &dh2)?)?;
            let g = layer
                .attention()
                .backward(&saved.attn, &dxm, None, li > 0)?;
            // Ā [n_q, B, n_k] → per row vector: r[b,k,:] += Σ_q r[b,k,q] Ā[q,b,:]
            let abar = g.abar.transpose(0, 1)?.contiguous()?; // [B, n_q, n_k]
            r = (&r + r.matmul(&abar)?)?;
            let Some(dh1) = g.dx else {
                break;
            };
            dx = (dxm + layer.input_norm().backward(&saved.norm1, &dh1)?)?;
            for (k, &state) in fl.iter().enumerate() {
                if state == li {
                    dx = (dx + per_state(k)?)?;
                }
            }
        }
        Ok(r)
    }
}
