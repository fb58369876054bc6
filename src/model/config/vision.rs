//! `vision_config`: the vision tower families and the defaults of their transformers classes.

use serde::Deserialize;

use super::unsupported;
use crate::model::ops::Activation;
use crate::model::ModelError;

/// The vision tower family, chosen from `vision_config.model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VisionFamily {
    /// `clip_vision_model`: CLS token, pre-layernorm, quick-GELU.
    Clip,
    /// `siglip_vision_model`: no CLS token, no pre-layernorm, tanh GELU.
    Siglip,
}

impl VisionFamily {
    /// Every supported vision family, in the order error messages list them.
    pub const ALL: [VisionFamily; 2] = [Self::Clip, Self::Siglip];

    /// The family of a `vision_config.model_type`, if supported.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == model_type)
    }

    /// The `model_type` string of this family.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Clip => "clip_vision_model",
            Self::Siglip => "siglip_vision_model",
        }
    }

    /// The short name of this family (its name in session files and the header).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Siglip => "siglip",
        }
    }

    /// Whether the tower prepends a class token to the patches.
    pub fn has_cls_token(self) -> bool {
        self == Self::Clip
    }
}

impl std::fmt::Display for VisionFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The vision tower configuration (`vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// `model_type` as written (`clip_vision_model` when absent, as transformers assumes).
    pub model_type: String,
    /// The tower family, from `model_type`.
    pub family: VisionFamily,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of heads.
    pub num_attention_heads: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Input image side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// CLIP's projection size (unused by LLaVA); SigLIP has none.
    pub projection_dim: Option<usize>,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageSize {
    One(usize),
    Two(Vec<usize>),
}

#[derive(Deserialize, Default)]
pub(super) struct RawVision {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_channels: Option<usize>,
    image_size: Option<ImageSize>,
    patch_size: Option<ImageSize>,
    projection_dim: Option<usize>,
    hidden_act: Option<Activation>,
    layer_norm_eps: Option<f64>,
}

fn square(size: Option<ImageSize>, default: usize, what: &str) -> Result<usize, ModelError> {
    match size {
        None => Ok(default),
        Some(ImageSize::One(n)) => Ok(n),
        Some(ImageSize::Two(v)) if v.len() == 2 && v[0] == v[1] => Ok(v[0]),
        Some(ImageSize::Two(v)) => Err(unsupported(format!(
            "vision_config.{what} {v:?} is not square; only square images are supported"
        ))),
    }
}

/// The names of the supported vision towers, for error messages.
pub(super) fn supported_vision_types() -> String {
    VisionFamily::ALL.map(VisionFamily::model_type).join(", ")
}

impl VisionConfig {
    /// `present`: whether config.json had a `vision_config`. LlavaConfig fills a missing one
    /// with CLIP ViT-L/14-336 sizes; a present one takes its class's own defaults.
    pub(super) fn from_raw(raw: RawVision, present: bool) -> Result<Self, ModelError> {
        let model_type = raw
            .model_type
            .unwrap_or_else(|| "clip_vision_model".to_string());
        let family = VisionFamily::from_model_type(&model_type).ok_or_else(|| {
            unsupported(format!(
                "vision_config.model_type '{model_type}' is not supported (supported: {})",
                supported_vision_types()
            ))
        })?;
        // (hidden, intermediate, layers, heads, image, patch, projection, act, eps)
        let d = match (family, present) {
            (VisionFamily::Clip, false) => (
                1024,
                4096,
                24,
                16,
                336,
                14,
                Some(768),
                Activation::QuickGelu,
                1e-5,
            ),
            (VisionFamily::Clip, true) => (
                768,
                3072,
                12,
                12,
                224,
                32,
                Some(512),
                Activation::QuickGelu,
                1e-5,
            ),
            (VisionFamily::Siglip, _) => {
                (768, 3072, 12, 12, 224, 16, None, Activation::GeluTanh, 1e-6)
            }
        };
        let hidden_size = raw.hidden_size.unwrap_or(d.0);
        let num_attention_heads = raw.num_attention_heads.unwrap_or(d.3);
        if num_attention_heads == 0 || !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(unsupported(format!(
                "vision hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
            )));
        }
        let image_size = square(raw.image_size, d.4, "image_size")?;
        let patch_size = square(raw.patch_size, d.5, "patch_size")?;
        // The patch convolution has stride patch_size and no padding: a side that is not a
        // multiple (SigLIP so400m: 384 / 14) leaves its last pixels out, as in transformers.
        if patch_size == 0 || image_size < patch_size {
            return Err(unsupported(format!(
                "vision image_size {image_size} is smaller than patch_size {patch_size}"
            )));
        }
        let projection_dim = match family {
            VisionFamily::Clip => raw.projection_dim.or(d.6),
            VisionFamily::Siglip => None,
        };
        Ok(Self {
            model_type,
            family,
            hidden_size,
            intermediate_size: raw.intermediate_size.unwrap_or(d.1),
            num_hidden_layers: raw.num_hidden_layers.unwrap_or(d.2),
            num_attention_heads,
            num_channels: raw.num_channels.unwrap_or(3),
            image_size,
            patch_size,
            projection_dim,
            hidden_act: raw.hidden_act.unwrap_or(d.7),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(d.8),
        })
    }

    /// Patches per side: image_size / patch_size, rounded down.
    pub fn grid_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patches P.
    pub fn num_patches(&self) -> usize {
        self.grid_side() * self.grid_side()
    }

    /// Number of positions the tower outputs: P + 1 with CLIP's class token, P for SigLIP.
    pub fn num_positions(&self) -> usize {
        self.num_patches() + usize::from(self.family.has_cls_token())
    }

    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
