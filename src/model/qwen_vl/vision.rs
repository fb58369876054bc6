//! The Qwen2-VL / Qwen2.5-VL vision tower: a linear patch embedding over flattened
//! (channel, temporal, y, x) patches, 2D rotary positions, pre-norm blocks built from the shared
//! attention, norms and MLPs, and the patch merger (2×2 patches → one decoder token).
//!
//! Everything runs in the processor's patch order (merge block by merge block). Qwen2.5-VL's
//! window attention is an additive mask that hides keys outside the query's window: this gives
//! the per-window softmax transformers computes after permuting the patches into window order,
//! without the permutation (windows are whole merge blocks, so the merger reads the same four
//! patches either way).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::model::attention::{Attention, AttnInputs, AttnShape};
use crate::model::config::{QwenVisionConfig, QwenVlVariant};
use crate::model::mlp::{GatedMlp, PlainMlp};
use crate::model::norm::{LayerNorm, RmsNorm};
use crate::model::ops::{linear_backward, Activation};
use crate::model::tape::{AttnSaved, MlpSaved, NormSaved, NormSlot, Site, Tape};
use crate::processing::qwen_vl::patch_positions;
use crate::trace::Stage;

use super::windows::WindowGroups;

const EPS: f64 = 1e-6;
const ROPE_THETA: f32 = 10000.0;

/// LayerNorm (Qwen2-VL) or RMSNorm (Qwen2.5-VL).
#[derive(Debug, Clone)]
enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    fn load(vb: VarBuilder, size: usize, variant: QwenVlVariant) -> Result<Self> {
        Ok(match variant {
            QwenVlVariant::Qwen2Vl => Self::Layer(LayerNorm::load(vb, size, EPS)?),
            QwenVlVariant::Qwen25Vl => Self::Rms(RmsNorm::load(vb, size, EPS, false)?),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Layer(n) => n.forward(xs),
            Self::Rms(n) => n.forward(xs),
        }
    }

    fn forward_taped(
        &self,
        xs: &Tensor,
        tape: &mut dyn Tape,
        site: Site,
        slot: NormSlot,
    ) -> Result<Tensor> {
        match self {
            Self::Layer(n) => n.forward_taped(xs, tape, site, slot),
            Self::Rms(n) => n.forward_taped(xs, tape, site, slot),
        }
    }

    fn backward(&self, saved: &NormSaved, dy: &Tensor) -> Result<Tensor> {
        match self {
            Self::Layer(n) => n.backward(saved, dy),
            Self::Rms(n) => n.backward(saved, dy),
        }
    }

    /// The normalisation's statistics on `xs` (what a saving tape would keep).
    fn stats(&self, xs: &Tensor) -> Result<NormSaved> {
        let mut grab = GrabNorm(None);
        self.forward_taped(xs, &mut grab, Site::vision(0), NormSlot::Final)?;
        grab.0
            .ok_or_else(|| candle_core::Error::Msg("the norm kept no statistics".into()))
    }
}

/// A tape that keeps the statistics of the one normalisation it sees.
struct GrabNorm(Option<NormSaved>);

impl Tape for GrabNorm {
    fn keeps_activations(&self) -> bool {
        true
    }

    fn save_norm(&mut self, _site: Site, _slot: NormSlot, saved: NormSaved) -> Result<()> {
        self.0 = Some(saved);
        Ok(())
    }
}

/// Plain fc1/fc2 MLP (Qwen2-VL) or gated SwiGLU with biases (Qwen2.5-VL).
#[derive(Debug, Clone)]
enum Mlp {
    Plain(PlainMlp),
    Gated(GatedMlp),
}

impl Mlp {
    fn forward(&self, xs: &Tensor, tape: &mut dyn Tape, site: Site) -> Result<Tensor> {
        match self {
            Self::Plain(m) => m.forward(xs, tape, site),
            Self::Gated(m) => m.forward(xs, tape, site),
        }
    }

    fn backward(&self, saved: &MlpSaved, dy: &Tensor) -> Result<Tensor> {
        match self {
            Self::Plain(m) => m.backward(saved, dy),
            Self::Gated(m) => m.backward(saved, dy),
        }
    }
}

/// What one vision block kept in the forward, for [`QwenVision::block_backward`].
pub(crate) struct BlockSaved<'s> {
    /// Before the attention.
    pub norm1: &'s NormSaved,
    /// The attention.
    pub attn: &'s AttnSaved,
    /// Before the MLP.
    pub norm2: &'s NormSaved,
    /// The MLP.
    pub mlp: &'s MlpSaved,
}

/// One vision block.
#[derive(Debug, Clone)]
pub(super) struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    mlp: Mlp,
    site: Site,
    windowed: bool,
}

impl Block {
    fn load(
        vb: VarBuilder,
        cfg: &QwenVisionConfig,
        variant: QwenVlVariant,
        i: usize,
    ) -> Result<Self> {
        let h = cfg.embed_dim;
        let shape = AttnShape {
            hidden: h,
            heads: cfg.num_heads,
            kv_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
            qkv_bias: true,
            o_bias: true,
        };
        let site = Site::vision(i);
        let mlp = match variant {
            QwenVlVariant::Qwen2Vl => Mlp::Plain(PlainMlp::load(
                vb.pp("mlp"),
                h,
                cfg.intermediate_size,
                cfg.hidden_act,
            )?),
            QwenVlVariant::Qwen25Vl => Mlp::Gated(GatedMlp::load(
                vb.pp("mlp"),
                h,
                cfg.intermediate_size,
                true,
                cfg.hidden_act,
            )?),
        };
        Ok(Self {
            norm1: Norm::load(vb.pp("norm1"), h, variant)?,
            attn: Attention::load_fused(vb.pp("attn"), shape, "qkv", "proj", site)?,
            norm2: Norm::load(vb.pp("norm2"), h, variant)?,
            mlp,
            site,
            windowed: cfg.windowed(i),
        })
    }

    /// The block's site (its layer of the vision tower).
    pub(super) fn site(&self) -> Site {
        self.site
    }

    /// Whether the block may run window by window under `tape`: it attends within windows,
    /// and `tape` does not look at its attention or wants only the attention received.
    fn by_window(&self, tape: &dyn Tape) -> bool {
        self.windowed && (!tape.observes(self.site) || tape.wants_received_only(self.site))
    }

    pub(super) fn forward(
        &self,
        xs: &Tensor,
        inputs: &AttnInputs,
        tape: &mut dyn Tape,
    ) -> Result<Tensor> {
        let h = self
            .norm1
            .forward_taped(xs, tape, self.site, NormSlot::Attention)?;
        let h = self.attn.forward(&h, inputs, None, tape)?;
        let xs = (xs + h)?;
        let h = self
            .norm2
            .forward_taped(&xs, tape, self.site, NormSlot::Mlp)?;
        let h = self.mlp.forward(&h, tape, self.site)?;
        xs + h
    }
}

/// The patch merger: norm, four neighbouring patches concatenated, Linear, GELU, Linear.
#[derive(Debug, Clone)]
struct Merger {
    ln_q: Norm,
    fc1: Linear,
    fc2: Linear,
    group: usize,
}

impl Merger {
    fn load(vb: VarBuilder, cfg: &QwenVisionConfig, variant: QwenVlVariant) -> Result<Self> {
        let group = cfg.spatial_merge_size * cfg.spatial_merge_size;
        let wide = cfg.embed_dim * group;
        Ok(Self {
            ln_q: Norm::load(vb.pp("ln_q"), cfg.embed_dim, variant)?,
            fc1: candle_nn::linear(wide, wide, vb.pp("mlp").pp(0))?,
            fc2: candle_nn::linear(wide, cfg.out_hidden_size, vb.pp("mlp").pp(2))?,
            group,
        })
    }

    /// Gradient `[B, P, embed]` of the merger's input `xs` `[P, embed]` from that of its output
    /// `d_out` `[B, P / group, out]` (the statistics and pre-activations are recomputed).
    fn backward(&self, xs: &Tensor, d_out: &Tensor) -> Result<Tensor> {
        let (p, e) = xs.dims2()?;
        let b = d_out.dim(0)?;
        let stats = self.ln_q.stats(xs)?;
        let h = self
            .ln_q
            .forward(xs)?
            .reshape((p / self.group, e * self.group))?;
        let pre = self.fc1.forward(&h)?;
        let dact = Activation::Gelu.derivative(&pre)?;
        let d = linear_backward(d_out, self.fc2.weight())?.broadcast_mul(&dact)?;
        let d = linear_backward(&d, self.fc1.weight())?.reshape((b, p, e))?;
        self.ln_q.backward(&stats, &d)
    }

    /// `[P, embed]` → `[P / group, out]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (p, e) = xs.dims2()?;
        let xs = self
            .ln_q
            .forward(xs)?
            .reshape((p / self.group, e * self.group))?;
        let xs = Activation::Gelu.forward(&self.fc1.forward(&xs)?)?;
        self.fc2.forward(&xs)
    }
}

/// The Qwen vision tower.
#[derive(Debug, Clone)]
pub struct QwenVision {
    patch_embed: Linear,
    blocks: Vec<Block>,
    merger: Merger,
    cfg: QwenVisionConfig,
    dtype: DType,
}

/// What the tower returns besides the features.
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// Merger output `[F, out_hidden]`, one row per merged token.
    pub features: Tensor,
    /// The last block's output `[P, embed]` (before the merger).
    pub last_hidden: Tensor,
}

impl QwenVision {
    /// Load from `vb` (prefix `visual` or `model.visual`).
    pub fn load(vb: VarBuilder, cfg: &QwenVisionConfig, variant: QwenVlVariant) -> Result<Self> {
        let w = vb.get(
            (
                cfg.embed_dim,
                cfg.in_channels,
                cfg.temporal_patch_size,
                cfg.patch_size,
                cfg.patch_size,
            ),
            "patch_embed.proj.weight",
        )?;
        let patch_embed = Linear::new(w.reshape((cfg.embed_dim, cfg.patch_len()))?, None);
        let blocks = (0..cfg.depth)
            .map(|i| Block::load(vb.pp("blocks").pp(i), cfg, variant, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed,
            blocks,
            merger: Merger::load(vb.pp("merger"), cfg, variant)?,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Gradient `[B, P, embed]` of the last block's output `last_hidden` `[P, embed]` from that
    /// of the features `d_features` `[B, F, out]`.
    pub(crate) fn merger_backward(
        &self,
        last_hidden: &Tensor,
        d_features: &Tensor,
    ) -> Result<Tensor> {
        self.merger.backward(last_hidden, d_features)
    }

    /// Backward of block `i` for the gradient `dx` `[B, P, embed]` of its output, with
    /// `rope` = (cos, −sin) of the patches: (Ā `[P, B, P]`, gradient of its input unless
    /// `need_input` is false).
    pub(crate) fn block_backward(
        &self,
        i: usize,
        saved: &BlockSaved,
        dx: &Tensor,
        rope: (&Tensor, &Tensor),
        need_input: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let block = &self.blocks[i];
        let dh2 = block.mlp.backward(saved.mlp, dx)?;
        let dxm = (dx + block.norm2.backward(saved.norm2, &dh2)?)?;
        let g = block
            .attn
            .backward(saved.attn, &dxm, Some(rope), need_input)?;
        let dx = match g.dx {
            Some(dh1) => Some((dxm + block.norm1.backward(saved.norm1, &dh1)?)?),
            None => None,
        };
        Ok((g.abar, dx))
    }

    /// Rotary tables `[P, head_dim / 2]` of the patches: angles (row·f, col·f) per frequency f.
    pub(crate) fn rope_tables(
        &self,
        grid_h: usize,
        grid_w: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let dim = self.cfg.head_dim() / 2;
        let inv: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / ROPE_THETA.powf(i as f32 / dim as f32))
            .collect();
        let pos = patch_positions(grid_h, grid_w, self.cfg.spatial_merge_size);
        let mut cos = Vec::with_capacity(pos.len() * dim);
        let mut sin = Vec::with_capacity(pos.len() * dim);
        for (r, c) in pos {
            for coord in [r, c] {
                for f in &inv {
                    let a = coord as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let n = cos.len() / dim;
        let cos = Tensor::from_vec(cos, (n, dim), device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (n, dim), device)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// The window of every patch (processor order): (window row, window col) of its merged
    /// token, windows `window_tokens` merged tokens a side anchored at the top left.
    pub fn patch_windows(&self, grid_h: usize, grid_w: usize) -> Vec<(usize, usize)> {
        let m = self.cfg.spatial_merge_size;
        let side = self.cfg.window_tokens().unwrap_or(usize::MAX);
        patch_positions(grid_h, grid_w, m)
            .into_iter()
            .map(|(r, c)| (r / m / side, c / m / side))
            .collect()
    }

    /// Additive `[P, P]` mask hiding keys outside the query's window.
    fn window_mask(&self, grid_h: usize, grid_w: usize, device: &Device) -> Result<Tensor> {
        let win = self.patch_windows(grid_h, grid_w);
        let mask: Vec<f32> = win
            .iter()
            .flat_map(|a| {
                win.iter()
                    .map(move |b| if a == b { 0.0 } else { f32::NEG_INFINITY })
            })
            .collect();
        Tensor::from_vec(mask, (win.len(), win.len()), device)?.to_dtype(self.dtype)
    }

    /// Run the tower over `pixel_values` `[P, patch_len]` of one image of `grid_thw`.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grid_thw: [usize; 3],
        tape: &mut dyn Tape,
    ) -> Result<VisionOutput> {
        let [t, gh, gw] = grid_thw;
        let m = self.cfg.spatial_merge_size;
        let (p, len) = pixel_values.dims2()?;
        if t != 1 || gh % m != 0 || gw % m != 0 || p != gh * gw || len != self.cfg.patch_len() {
            candle_core::bail!(
                "pixel values [{p}, {len}] do not match one still image of grid {grid_thw:?} \
                 (patches of {} values, grid sides multiples of {m})",
                self.cfg.patch_len()
            );
        }
        let device = pixel_values.device();
        let mut xs = self
            .patch_embed
            .forward(&pixel_values.to_dtype(self.dtype)?)?
            .unsqueeze(0)?;
        let (cos, sin) = self.rope_tables(gh, gw, device)?;
        let masked = self.blocks.iter().any(|b| b.windowed && !b.by_window(tape));
        let window = if masked {
            Some(self.window_mask(gh, gw, device)?)
        } else {
            None
        };
        let mut groups: Option<WindowGroups> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            let _stage = Stage::new(tracing::debug_span!("vision_layer", layer = i), device);
            if block.by_window(tape) {
                if groups.is_none() {
                    groups = Some(WindowGroups::new(&self.patch_windows(gh, gw), device)?);
                }
                if let Some(g) = &groups {
                    xs = g.forward(block, &xs, (&cos, &sin), tape)?;
                }
                continue;
            }
            let inputs = AttnInputs {
                rope: Some((&cos, &sin)),
                mask: if block.windowed {
                    window.as_ref()
                } else {
                    None
                },
                offset: 0,
            };
            xs = block.forward(&xs, &inputs, tape)?;
        }
        let last_hidden = xs.squeeze(0)?;
        let stage = Stage::new(tracing::info_span!("projector"), device);
        let features = self.merger.forward(&last_hidden)?;
        drop(stage);
        Ok(VisionOutput {
            features,
            last_hidden,
        })
    }
}
