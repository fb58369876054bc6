//! `config.json` of a LLaVA checkpoint, read with the defaults transformers applies.
//!
//! The decoder family comes from `text_config.model_type` ([`TextFamily`]), the vision tower
//! from `vision_config.model_type` ([`VisionFamily`]); each sub-config takes a missing field from
//! its own transformers class. transformers fills a missing `text_config` with `LlamaConfig()`
//! defaults and a missing `vision_config` with `CLIPVisionConfig(hidden_size=1024,
//! intermediate_size=4096, patch_size=14, image_size=336, num_hidden_layers=24,
//! num_attention_heads=16, projection_dim=768)`. A `vision_config` that is present but omits a
//! field gets the plain class default for it (CLIP: 768 hidden, 12 layers, image 224, patch 32,
//! ...), exactly as transformers does. Both layouts are read: the older one the hub ships
//! (`rope_theta` / `rope_scaling` in `text_config`) and the one transformers 5 writes
//! (`rope_parameters`, `layer_types`).

mod anyres;
mod qwen_vl;
mod text;
mod vision;

use std::path::Path;

use serde::Deserialize;

use super::ops::Activation;
use super::ModelError;

pub use anyres::{parse_anyres_max, AnyresConfig, AnyresVariant};
pub use qwen_vl::{QwenVisionConfig, QwenVlConfig, QwenVlVariant};
pub use text::{AttentionType, RopeScaling, TextConfig, TextFamily};
pub use vision::{VisionConfig, VisionFamily};

use text::RawText;
use vision::RawVision;

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
    /// Drop the first position (CLIP's CLS feature: P features).
    Default,
    /// Keep every position (CLIP: CLS first, P + 1 features; SigLIP: P features).
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

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RawLlava {
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

/// Top-level `model_type`s of checkpoints that later issues will support.
const PLANNED: [&str; 1] = ["llava_next_video"];

/// Refuse a top-level `model_type` other than `llava`, in one sentence naming what is supported.
fn check_model_type(mt: &str) -> Result<(), ModelError> {
    if mt == "llava" {
        return Ok(());
    }
    let when = if PLANNED.contains(&mt) {
        "not supported yet"
    } else if QwenVlVariant::from_model_type(mt).is_some()
        || AnyresVariant::from_model_type(mt).is_some()
    {
        "run by `lvlmscope run` (with --relevancy and --causal) but not by this LLaVA path"
    } else {
        "not supported"
    };
    Err(unsupported(format!(
        "model_type '{mt}' is {when}; lvlmscope runs model_type 'llava' with a {} decoder and a {} vision tower",
        text::supported_text_types().replace(", ", "/"),
        vision::supported_vision_types().replace(", ", "/"),
    )))
}

/// Check every `model_type` (top level, text, vision) before the fields are read, so that an
/// unsupported checkpoint is named as such rather than for a field it spells differently.
fn check_model_types(root: &serde_json::Value) -> Result<(), ModelError> {
    let model_type = |v: Option<&serde_json::Value>| {
        v.and_then(|c| c.get("model_type"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    if let Some(mt) = model_type(Some(root)) {
        check_model_type(&mt)?;
    }
    if let Some(mt) = model_type(root.get("text_config")) {
        if TextFamily::from_model_type(&mt).is_none() {
            return Err(unsupported(format!(
                "text_config.model_type '{mt}' is not supported (supported: {})",
                text::supported_text_types()
            )));
        }
    }
    if let Some(mt) = model_type(root.get("vision_config")) {
        if VisionFamily::from_model_type(&mt).is_none() {
            return Err(unsupported(format!(
                "vision_config.model_type '{mt}' is not supported (supported: {})",
                vision::supported_vision_types()
            )));
        }
    }
    Ok(())
}

impl LlavaConfig {
    /// Parse the text of a config.json; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ModelError> {
        let malformed = |e: serde_json::Error| ModelError::MalformedConfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let root: serde_json::Value = serde_json::from_str(text).map_err(malformed)?;
        check_model_types(&root)?;
        let raw: RawLlava = serde_json::from_value(root).map_err(malformed)?;
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

    /// The vision hidden-state indices (0 = embeddings, after the pre-layernorm for CLIP, which
    /// SigLIP has not; k = after layer k, never with SigLIP's post-layernorm) that feed the projector, negative indices resolved.
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

    /// Number of image features F: the tower's positions, less the first with strategy
    /// `default` (CLIP: P + 1 or P; SigLIP, which has no CLS token: P, or P - 1 with `default`,
    /// as transformers drops the first position whatever it holds).
    pub fn num_image_features(&self) -> usize {
        let n = self.vision_config.num_positions();
        match self.vision_feature_select_strategy {
            SelectStrategy::Default => n - 1,
            SelectStrategy::Full => n,
        }
    }
}
