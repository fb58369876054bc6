//! `config.json` of a LLaVA checkpoint, read with the defaults transformers applies.
//!
//! transformers fills a missing `text_config` with `LlamaConfig()` defaults and a missing
//! `vision_config` with `CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
//! patch_size=14, image_size=336, num_hidden_layers=24, num_attention_heads=16,
//! projection_dim=768)`. A `vision_config` that is present but omits a field gets the plain
//! `CLIPVisionConfig` default for it (768 hidden, 12 layers, image 224, patch 32, ...), exactly
//! as transformers does.

use std::path::Path;

use serde::Deserialize;

use super::ops::Activation;
use super::ModelError;

/// Rotary embedding frequency scaling (`rope_scaling` / `rope_parameters` in config.json).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: frequencies divided by `factor`.
    Linear {
        /// Scale factor.
        factor: f64,
    },
    /// Dynamic NTK: the base grows once the sequence exceeds `max_position_embeddings`.
    Dynamic {
        /// Scale factor.
        factor: f64,
    },
    /// LLaMA 3 frequency-dependent scaling.
    Llama3 {
        /// Scale factor (8 for LLaMA 3.1).
        factor: f64,
        /// Low-frequency factor.
        low_freq_factor: f64,
        /// High-frequency factor.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: usize,
    },
}

/// The LLaMA decoder configuration (`text_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// `model_type` (only `llama` is supported).
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Context length (used by dynamic RoPE and as llama3's original length by default).
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Biases on q/k/v/o projections.
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// Whether lm_head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
}

/// The CLIP vision tower configuration (`vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// `model_type` (only `clip_vision_model` is supported).
    pub model_type: String,
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
    /// Projection size (unused by LLaVA, kept for completeness).
    pub projection_dim: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

/// Which layer(s) of the vision tower feed the projector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FeatureLayer {
    /// One index into the hidden states (negative counts from the end).
    One(i64),
    /// Several indices, concatenated along the feature dimension.
    Many(Vec<i64>),
}

/// `vision_feature_select_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectStrategy {
    /// Drop the CLS feature (P features).
    Default,
    /// Keep the CLS feature first (P + 1 features).
    Full,
}

/// The whole LLaVA configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaConfig {
    /// Decoder.
    pub text_config: TextConfig,
    /// Vision tower.
    pub vision_config: VisionConfig,
    /// Id of the image placeholder token in `input_ids`.
    pub image_token_index: u32,
    /// Number of image tokens per image as the processor expands them.
    pub image_seq_length: usize,
    /// Activation between projector layers.
    pub projector_hidden_act: Activation,
    /// Whether the projector layers have biases.
    pub multimodal_projector_bias: bool,
    /// Which vision hidden states to use.
    pub vision_feature_layer: FeatureLayer,
    /// Whether to drop the CLS feature.
    pub vision_feature_select_strategy: SelectStrategy,
    /// lm_head tied to the embeddings (top level, or inherited from text_config).
    pub tie_word_embeddings: bool,
    /// Projector type named by the config (`mm_projector_type`), if any; the weights decide.
    pub projector_type: Option<String>,
    /// The first of config.json's `architectures`, recorded in sessions.
    pub architecture: String,
}

#[derive(Deserialize, Default)]
struct RawRope {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize, Default)]
struct RawText {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<Activation>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
    pad_token_id: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageSize {
    One(usize),
    Two(Vec<usize>),
}

#[derive(Deserialize, Default)]
struct RawVision {
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

#[derive(Deserialize)]
struct RawLlava {
    model_type: Option<String>,
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
    image_token_index: Option<u32>,
    image_token_id: Option<u32>,
    image_seq_length: Option<usize>,
    projector_hidden_act: Option<Activation>,
    multimodal_projector_bias: Option<bool>,
    vision_feature_layer: Option<FeatureLayer>,
    vision_feature_select_strategy: Option<SelectStrategy>,
    tie_word_embeddings: Option<bool>,
    mm_projector_type: Option<String>,
    architectures: Option<Vec<String>>,
}

fn unsupported(msg: impl Into<String>) -> ModelError {
    ModelError::UnsupportedConfig(msg.into())
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

impl RopeScaling {
    fn from_raw(raw: &RawRope, max_pos: usize) -> Result<Self, ModelError> {
        let kind = raw.rope_type.as_deref().unwrap_or("default");
        let factor = |name: &str| {
            raw.factor
                .ok_or_else(|| unsupported(format!("rope scaling '{name}' has no 'factor'")))
        };
        match kind {
            "default" => Ok(Self::None),
            "linear" => Ok(Self::Linear {
                factor: factor(kind)?,
            }),
            "dynamic" => Ok(Self::Dynamic {
                factor: factor(kind)?,
            }),
            "llama3" => Ok(Self::Llama3 {
                factor: factor(kind)?,
                low_freq_factor: raw
                    .low_freq_factor
                    .ok_or_else(|| unsupported("rope scaling 'llama3' has no 'low_freq_factor'"))?,
                high_freq_factor: raw.high_freq_factor.ok_or_else(|| {
                    unsupported("rope scaling 'llama3' has no 'high_freq_factor'")
                })?,
                original_max_position_embeddings: raw
                    .original_max_position_embeddings
                    .unwrap_or(max_pos),
            }),
            other => Err(unsupported(format!(
                "rope scaling type '{other}' (supported: default, linear, dynamic, llama3)"
            ))),
        }
    }
}

impl TextConfig {
    fn from_raw(raw: RawText) -> Result<Self, ModelError> {
        let model_type = raw.model_type.unwrap_or_else(|| "llama".to_string());
        if model_type != "llama" {
            return Err(unsupported(format!(
                "text_config.model_type '{model_type}' (only llama is supported)"
            )));
        }
        let hidden_size = raw.hidden_size.unwrap_or(4096);
        let num_attention_heads = raw.num_attention_heads.unwrap_or(32);
        if num_attention_heads == 0 || !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(unsupported(format!(
                "text hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
            )));
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(unsupported(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(hidden_size / num_attention_heads);
        if !head_dim.is_multiple_of(2) {
            return Err(unsupported(format!("head_dim {head_dim} is odd")));
        }
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(2048);
        // transformers: values inside rope_parameters win over a top-level rope_theta; the old
        // `rope_scaling` key replaces `rope_parameters` when both are given.
        let rope = raw.rope_scaling.or(raw.rope_parameters).unwrap_or_default();
        let rope_theta = rope.rope_theta.or(raw.rope_theta).unwrap_or(10000.0);
        let rope_scaling = RopeScaling::from_raw(&rope, max_position_embeddings)?;
        let eos_token_ids = match raw.eos_token_id {
            None => vec![2],
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
        };
        Ok(Self {
            model_type,
            vocab_size: raw.vocab_size.unwrap_or(32000),
            hidden_size,
            intermediate_size: raw.intermediate_size.unwrap_or(11008),
            num_hidden_layers: raw.num_hidden_layers.unwrap_or(32),
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            hidden_act: raw.hidden_act.unwrap_or(Activation::Silu),
            max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            attention_bias: raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id.or(Some(1)),
            eos_token_ids,
            pad_token_id: raw.pad_token_id,
        })
    }
}

impl VisionConfig {
    /// `present`: whether config.json had a `vision_config` (the defaults differ, see module doc).
    fn from_raw(raw: RawVision, present: bool) -> Result<Self, ModelError> {
        // (hidden, intermediate, layers, heads, image, patch, projection)
        let d = if present {
            (768, 3072, 12, 12, 224, 32, 512)
        } else {
            (1024, 4096, 24, 16, 336, 14, 768)
        };
        let model_type = raw
            .model_type
            .unwrap_or_else(|| "clip_vision_model".to_string());
        if model_type != "clip_vision_model" {
            return Err(unsupported(format!(
                "vision_config.model_type '{model_type}' (only clip_vision_model is supported)"
            )));
        }
        let hidden_size = raw.hidden_size.unwrap_or(d.0);
        let num_attention_heads = raw.num_attention_heads.unwrap_or(d.3);
        if num_attention_heads == 0 || !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(unsupported(format!(
                "vision hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
            )));
        }
        let image_size = square(raw.image_size, d.4, "image_size")?;
        let patch_size = square(raw.patch_size, d.5, "patch_size")?;
        if patch_size == 0 || !image_size.is_multiple_of(patch_size) {
            return Err(unsupported(format!(
                "vision image_size {image_size} is not a multiple of patch_size {patch_size}"
            )));
        }
        Ok(Self {
            model_type,
            hidden_size,
            intermediate_size: raw.intermediate_size.unwrap_or(d.1),
            num_hidden_layers: raw.num_hidden_layers.unwrap_or(d.2),
            num_attention_heads,
            num_channels: raw.num_channels.unwrap_or(3),
            image_size,
            patch_size,
            projection_dim: raw.projection_dim.unwrap_or(d.6),
            hidden_act: raw.hidden_act.unwrap_or(Activation::QuickGelu),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-5),
        })
    }

    /// Patches per side.
    pub fn grid_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patches P.
    pub fn num_patches(&self) -> usize {
        self.grid_side() * self.grid_side()
    }

    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl LlavaConfig {
    /// Parse the text of a config.json; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ModelError> {
        let raw: RawLlava =
            serde_json::from_str(text).map_err(|e| ModelError::MalformedConfig {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        if let Some(mt) = raw.model_type.as_deref() {
            if mt != "llava" {
                return Err(unsupported(format!(
                    "model_type '{mt}' (only llava is supported)"
                )));
            }
        }
        let text_config = TextConfig::from_raw(raw.text_config.unwrap_or_default())?;
        let present = raw.vision_config.is_some();
        let vision_config = VisionConfig::from_raw(raw.vision_config.unwrap_or_default(), present)?;
        let top_tie = raw.tie_word_embeddings.unwrap_or(false);
        let cfg = Self {
            image_token_index: raw
                .image_token_index
                .or(raw.image_token_id)
                .unwrap_or(32000),
            image_seq_length: raw.image_seq_length.unwrap_or(576),
            projector_hidden_act: raw.projector_hidden_act.unwrap_or(Activation::Gelu),
            multimodal_projector_bias: raw.multimodal_projector_bias.unwrap_or(true),
            vision_feature_layer: raw.vision_feature_layer.unwrap_or(FeatureLayer::One(-2)),
            vision_feature_select_strategy: raw
                .vision_feature_select_strategy
                .unwrap_or(SelectStrategy::Default),
            tie_word_embeddings: top_tie || text_config.tie_word_embeddings,
            projector_type: raw.mm_projector_type,
            architecture: raw
                .architectures
                .and_then(|a| a.into_iter().next())
                .unwrap_or_else(|| "LlavaForConditionalGeneration".into()),
            text_config,
            vision_config,
        };
        cfg.feature_layers()?;
        Ok(cfg)
    }

    /// Read and parse a config.json file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ModelError::MissingConfig(path.parent().unwrap_or(path).to_path_buf())
            } else {
                ModelError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::from_json(&text, path)
    }

    /// The vision hidden-state indices (0 = embeddings after the pre-layernorm, k = after
    /// layer k) that feed the projector, negative indices resolved.
    pub fn feature_layers(&self) -> Result<Vec<usize>, ModelError> {
        let n = self.vision_config.num_hidden_layers as i64 + 1;
        let raw = match &self.vision_feature_layer {
            FeatureLayer::One(i) => vec![*i],
            FeatureLayer::Many(v) if !v.is_empty() => v.clone(),
            FeatureLayer::Many(_) => return Err(unsupported("vision_feature_layer is empty")),
        };
        raw.iter()
            .map(|&i| {
                let r = if i < 0 { n + i } else { i };
                if (0..n).contains(&r) {
                    Ok(r as usize)
                } else {
                    Err(unsupported(format!(
                        "vision_feature_layer {i} is out of range for {} hidden states",
                        n
                    )))
                }
            })
            .collect()
    }

    /// Number of image features F: P, or P + 1 with strategy `full`.
    pub fn num_image_features(&self) -> usize {
        let p = self.vision_config.num_patches();
        match self.vision_feature_select_strategy {
            SelectStrategy::Default => p,
            SelectStrategy::Full => p + 1,
        }
    }
}
