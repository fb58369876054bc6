//! The vision tower shared by CLIP and SigLIP (transformers' `CLIPVisionModel`,
//! `SiglipVisionModel`): patch embedding, optional class token, learned position embedding,
//! optional pre-layernorm, pre-norm encoder layers (LayerNorm, attention with biases, plain
//! MLP). What differs between the two is a [`VisionSpec`] (see [`super::families`]).
//!
//! Hidden state 0 is the embeddings (after the pre-layernorm when there is one), hidden state k
//! the output of encoder layer k, as in transformers' `hidden_states`. LLaVA reads hidden
//! states only, never the post-layernorm, so it is not loaded; only the layers up to the
//! highest hidden state LLaVA reads are loaded and run.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use super::attention::{Attention, AttnInputs, AttnShape};
use super::config::VisionConfig;
use super::mlp::PlainMlp;
use super::norm::LayerNorm;
use super::tape::{NormSlot, Site, Tape};
use crate::trace::Stage;

/// What a vision family changes in the shared tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionSpec {
    /// A class token is prepended (CLIP); its position embedding is row 0.
    pub class_token: bool,
    /// A layernorm runs on the embeddings (CLIP's `pre_layrnorm`).
    pub pre_norm: bool,
    /// The patch convolution has a bias (SigLIP).
    pub patch_bias: bool,
}

/// Patch embedding, class token and position embeddings.
#[derive(Debug, Clone)]
struct Embeddings {
    patch_embedding: Conv2d,
    class_embedding: Option<Tensor>,
    position_embedding: Tensor,
    image_size: usize,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &VisionConfig, spec: &VisionSpec) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let (c, h, p) = (cfg.num_channels, cfg.hidden_size, cfg.patch_size);
        let vb_p = vb.pp("patch_embedding");
        let patch_embedding = if spec.patch_bias {
            candle_nn::conv2d(c, h, p, conv_cfg, vb_p)?
        } else {
            candle_nn::conv2d_no_bias(c, h, p, conv_cfg, vb_p)?
        };
        let class_embedding = if spec.class_token {
            Some(vb.get(h, "class_embedding")?)
        } else {
            None
        };
        let positions = cfg.num_patches() + usize::from(spec.class_token);
        let position_embedding = vb.get((positions, h), "position_embedding.weight")?;
        Ok(Self {
            patch_embedding,
            class_embedding,
            position_embedding,
            image_size: cfg.image_size,
        })
    }

    /// `pixel_values` `[B, C, h, w]` in the model dtype → `[B, tokens, hidden]`.
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        if h != self.image_size || w != self.image_size {
            candle_core::bail!(
                "the image is {h}x{w} pixels but the vision tower takes {0}x{0}",
                self.image_size
            );
        }
        let patches = self
            .patch_embedding
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let xs = match &self.class_embedding {
            Some(class) => {
                let hidden = class.dim(0)?;
                let class = class
                    .reshape((1, 1, hidden))?
                    .broadcast_as((b, 1, hidden))?
                    .contiguous()?;
                Tensor::cat(&[&class, &patches], 1)?
            }
            None => patches,
        };
        xs.broadcast_add(&self.position_embedding.unsqueeze(0)?)
    }
}

/// One pre-norm transformer encoder layer.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    mlp: PlainMlp,
    site: Site,
}

impl EncoderLayer {
    /// Load layer `index` from `vb` (prefix `encoder.layers.{index}`).
    pub fn load(vb: VarBuilder, cfg: &VisionConfig, index: usize) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let shape = AttnShape {
            hidden: h,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            qkv_bias: true,
            o_bias: true,
        };
        let site = Site::vision(index);
        Ok(Self {
            layer_norm1: LayerNorm::load(vb.pp("layer_norm1"), h, eps)?,
            self_attn: Attention::load(vb.pp("self_attn"), shape, "out_proj", site)?,
            layer_norm2: LayerNorm::load(vb.pp("layer_norm2"), h, eps)?,
            mlp: PlainMlp::load(vb.pp("mlp"), h, cfg.intermediate_size, cfg.hidden_act)?,
            site,
        })
    }

    /// Apply the layer to `xs` `[b, tokens, hidden]`.
    pub fn forward(&self, xs: &Tensor, tape: &mut dyn Tape) -> Result<Tensor> {
        let h = self
            .layer_norm1
            .forward_taped(xs, tape, self.site, NormSlot::Attention)?;
        let h = self
            .self_attn
            .forward(&h, &AttnInputs::default(), None, tape)?;
        let xs = (xs + h)?;
        let h = self
            .layer_norm2
            .forward_taped(&xs, tape, self.site, NormSlot::Mlp)?;
        let h = self.mlp.forward(&h, tape, self.site)?;
        xs + h
    }

    /// The norm before the attention.
    pub(crate) fn input_norm(&self) -> &LayerNorm {
        &self.layer_norm1
    }

    /// The attention.
    pub(crate) fn attention(&self) -> &Attention {
        &self.self_attn
    }

    /// The norm before the MLP.
    pub(crate) fn post_norm(&self) -> &LayerNorm {
        &self.layer_norm2
    }

    /// The MLP.
    pub(crate) fn mlp(&self) -> &PlainMlp {
        &self.mlp
    }
}

/// The vision transformer, loaded up to the last layer LLaVA reads.
#[derive(Debug, Clone)]
pub struct VisionTower {
    embeddings: Embeddings,
    pre_norm: Option<LayerNorm>,
    layers: Vec<EncoderLayer>,
    spec: VisionSpec,
    dtype: DType,
}

impl VisionTower {
    /// Load the embeddings, the pre-layernorm (if the family has one) and encoder layers
    /// `0..num_layers` from `vb` (prefix `...vision_model`).
    pub fn load(
        vb: VarBuilder,
        cfg: &VisionConfig,
        spec: VisionSpec,
        num_layers: usize,
    ) -> Result<Self> {
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg, &spec)?;
        let pre_norm = if spec.pre_norm {
            Some(LayerNorm::load(
                vb.pp("pre_layrnorm"),
                cfg.hidden_size,
                cfg.layer_norm_eps,
            )?)
        } else {
            None
        };
        let vb_l = vb.pp("encoder").pp("layers");
        let layers = (0..num_layers)
            .map(|i| EncoderLayer::load(vb_l.pp(i), cfg, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            pre_norm,
            layers,
            spec,
            dtype: vb.dtype(),
        })
    }

    /// The family's differences.
    pub fn spec(&self) -> &VisionSpec {
        &self.spec
    }

    /// Number of encoder layers loaded (and run).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The layers.
    pub(crate) fn layers(&self) -> &[EncoderLayer] {
        &self.layers
    }

    /// Run the tower and return the hidden states named in `wanted` (indices into
    /// `[embeddings, layer 1, ..., layer L]`), each `[b, tokens, hidden]`, in the order given.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        wanted: &[usize],
        tape: &mut dyn Tape,
    ) -> Result<Vec<Tensor>> {
        let last = wanted.iter().copied().max().unwrap_or(0);
        if last > self.layers.len() {
            candle_core::bail!(
                "hidden state {last} asked for but only {} vision layers are loaded",
                self.layers.len()
            );
        }
        let pixel_values = pixel_values.to_dtype(self.dtype)?;
        let mut xs = self.embeddings.forward(&pixel_values)?;
        if let Some(norm) = &self.pre_norm {
            xs = norm.forward(&xs)?;
        }
        let mut states = vec![None; last + 1];
        if wanted.contains(&0) {
            states[0] = Some(xs.clone());
        }
        for (i, layer) in self.layers.iter().take(last).enumerate() {
            let _stage = Stage::new(tracing::debug_span!("vision_layer", layer = i), xs.device());
            xs = layer.forward(&xs, tape)?;
            if wanted.contains(&(i + 1)) {
                states[i + 1] = Some(xs.clone());
            }
        }
        wanted
            .iter()
            .map(|&i| {
                states[i]
                    .clone()
                    .ok_or_else(|| candle_core::Error::Msg(format!("hidden state {i} missing")))
            })
            .collect()
    }
}
