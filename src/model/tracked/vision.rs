//! The CLIP vision tower and the projector, forward with everything kept for the backward, and
//! the batched backward from the gradient of the image features down to the first vision
//! layer, accumulating the vision relevancy rows.

use candle_core::{DType, Module, Result, Tensor};

use super::grad::{self, AttnSaved, NormSaved};
use crate::model::clip::ClipEncoderLayer;
use crate::model::config::SelectStrategy;
use crate::model::llava::Llava;

struct LayerSaved {
    norm1: NormSaved,
    attn: AttnSaved,
    norm2: NormSaved,
    /// act'(fc1(h)), `[n, inter]`.
    dact: Tensor,
}

/// The vision tower (up to the deepest feature layer) and the projector, with saved
/// activations.
pub(super) struct VisionPass<'a> {
    model: &'a Llava,
    layers: Vec<LayerSaved>,
    /// act'(pre-activation) of each projector layer but the last.
    proj_dact: Vec<Tensor>,
    /// Image features `[F, text hidden]`.
    pub features: Tensor,
    /// Number of vision tokens (P + 1).
    pub tokens: usize,
}

fn layer_forward(layer: &ClipEncoderLayer, x: &Tensor) -> Result<(Tensor, LayerSaved)> {
    let n = x.dim(0)?;
    let at = &layer.self_attn;
    let (nh, d) = (at.num_heads, at.head_dim);
    let ln1 = &layer.layer_norm1;
    let (h, norm1) = grad::ln_forward(x, &ln1.weight, &ln1.bias, ln1.eps)?;
    let heads =
        |t: Tensor| -> Result<Tensor> { t.reshape((n, nh, d))?.transpose(0, 1)?.contiguous() };
    let q = heads(at.q_proj.forward(&h)?)?;
    let k = heads(at.k_proj.forward(&h)?)?;
    let v = heads(at.v_proj.forward(&h)?)?;
    let scores = (q.matmul(&k.t()?)? * at.scale)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
    let out = probs
        .to_dtype(v.dtype())?
        .matmul(&v)?
        .transpose(0, 1)?
        .reshape((n, nh * d))?;
    let xm = (x + at.out_proj.forward(&out)?)?;
    let ln2 = &layer.layer_norm2;
    let (h2, norm2) = grad::ln_forward(&xm, &ln2.weight, &ln2.bias, ln2.eps)?;
    let mlp = &layer.mlp;
    let pre = mlp.fc1.forward(&h2)?;
    let dact = grad::act_derivative(mlp.act, &pre)?;
    let y = (&xm + mlp.fc2.forward(&mlp.act.forward(&pre)?)?)?;
    let saved = LayerSaved {
        norm1,
        attn: AttnSaved { q, k, v, probs },
        norm2,
        dact,
    };
    Ok((y, saved))
}

impl<'a> VisionPass<'a> {
    /// Run the tower on `pixel_values` `[1, 3, h, w]` and the projector.
    pub(super) fn forward(model: &'a Llava, pixel_values: &Tensor) -> Result<Self> {
        let tower = &model.vision;
        let px = pixel_values
            .to_device(model.device())?
            .to_dtype(tower.dtype)?;
        let x0 = tower
            .pre_layrnorm
            .forward(&tower.embeddings.forward(&px)?)?
            .squeeze(0)?;
        let tokens = x0.dim(0)?;
        let deepest = model.feature_layers.iter().copied().max().unwrap_or(0);
        let mut states = vec![x0];
        let mut layers = Vec::with_capacity(deepest);
        for layer in tower.layers.iter().take(deepest) {
            let x = match states.last() {
                Some(x) => x,
                None => candle_core::bail!("no vision hidden state"),
            };
            let (y, saved) = layer_forward(layer, x)?;
            layers.push(saved);
            states.push(y);
        }
        let picked = model
            .feature_layers
            .iter()
            .map(|&i| {
                states
                    .get(i)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("hidden state {i} missing")))
            })
            .collect::<Result<Vec<_>>>()?;
        let sel = Tensor::cat(&picked, 1)?;
        let sel = match model.cfg.vision_feature_select_strategy {
            SelectStrategy::Default => sel.narrow(0, 1, tokens - 1)?,
            SelectStrategy::Full => sel,
        };
        let proj = &model.projector;
        let mut xs = proj.layers[0].forward(&sel)?;
        let mut proj_dact = Vec::new();
        for layer in &proj.layers[1..] {
            proj_dact.push(grad::act_derivative(proj.act, &xs)?);
            xs = layer.forward(&proj.act.forward(&xs)?)?;
        }
        Ok(Self {
            model,
            layers,
            proj_dact,
            features: xs,
            tokens,
        })
    }

    /// The vision token that image feature `j` comes from.
    pub(super) fn token_of_feature(&self, j: usize) -> usize {
        match self.model.cfg.vision_feature_select_strategy {
            SelectStrategy::Default => j + 1,
            SelectStrategy::Full => j,
        }
    }

    /// Backward from `d_features` `[B, F, text hidden]`, carrying the row vectors `rows`
    /// `[B, K, P + 1]` (f32) through `r ← r + r Ā` from the deepest layer down. Returns the
    /// final rows.
    pub(super) fn backward(&self, d_features: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let (b, f, _) = d_features.dims3()?;
        let proj = &self.model.projector;
        // projector backward
        let mut d = d_features.clone();
        for (i, layer) in proj.layers.iter().enumerate().rev() {
            d = grad::linear_backward(&d, layer.weight())?;
            if i > 0 {
                d = d.broadcast_mul(&self.proj_dact[i - 1])?;
            }
        }
        // d: [B, F, vision hidden × number of feature layers]
        let vh = self.model.cfg.vision_config.hidden_size;
        let n = self.tokens;
        let per_state = |k: usize| -> Result<Tensor> {
            let part = d.narrow(2, k * vh, vh)?;
            match self.model.cfg.vision_feature_select_strategy {
                SelectStrategy::Default => {
                    let cls = Tensor::zeros((b, 1, vh), part.dtype(), part.device())?;
                    Tensor::cat(&[&cls, &part], 1)
                }
                SelectStrategy::Full => Ok(part),
            }
        };
        if f + 1 != n && f != n {
            candle_core::bail!("{f} image features for {n} vision tokens");
        }
        let fl = &self.model.feature_layers;
        let depth = self.layers.len();
        let mut dx = Tensor::zeros((b, n, vh), d.dtype(), d.device())?;
        for (k, &state) in fl.iter().enumerate() {
            if state == depth {
                dx = (dx + per_state(k)?)?;
            }
        }
        let mut r = rows.clone();
        for (li, (layer, saved)) in self
            .model
            .vision
            .layers
            .iter()
            .zip(&self.layers)
            .enumerate()
            .rev()
        {
            let mlp = &layer.mlp;
            let dpre = grad::linear_backward(&dx, mlp.fc2.weight())?.broadcast_mul(&saved.dact)?;
            let dh2 = grad::linear_backward(&dpre, mlp.fc1.weight())?;
            let dxm = (&dx + grad::ln_backward(&saved.norm2, &layer.layer_norm2.weight, &dh2)?)?;
            let at = &layer.self_attn;
            let d_out = grad::linear_backward(&dxm, at.out_proj.weight())?;
            let g = grad::attn_backward(&saved.attn, &d_out, at.scale, None, li > 0)?;
            // Ā [n_q, B, n_k] → per row vector: r[b,k,:] += Σ_q r[b,k,q] Ā[q,b,:]
            let abar = g.abar.transpose(0, 1)?.contiguous()?; // [B, n_q, n_k]
            r = (&r + r.matmul(&abar)?)?;
            let Some((dq, dk, dv)) = g.dqkv else {
                break;
            };
            let dh1 = (dq.matmul(at.q_proj.weight())?
                + dk.matmul(at.k_proj.weight())?
                + dv.matmul(at.v_proj.weight())?)?
            .reshape((b, n, vh))?;
            dx = (dxm + grad::ln_backward(&saved.norm1, &layer.layer_norm1.weight, &dh1)?)?;
            for (k, &state) in fl.iter().enumerate() {
                if state == li {
                    dx = (dx + per_state(k)?)?;
                }
            }
        }
        Ok(r)
    }
}
