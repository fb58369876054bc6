//! `config.json` of Qwen2-VL and Qwen2.5-VL, read as transformers reads it.
//!
//! Two layouts exist: the one the hub ships (Qwen/Qwen2-VL-2B-Instruct: text fields at the top
//! level, `rope_theta` and `rope_scaling {"type": "mrope", "mrope_section": [..]}`) and the one
//! transformers 5 writes (nested `text_config` with `rope_parameters {"rope_type": "default",
//! "rope_theta", "mrope_section"}`). A field left out takes the default of the transformers
//! class (`Qwen2VLTextConfig`, `Qwen2VLVisionConfig`, `Qwen2_5_VLTextConfig`,
//! `Qwen2_5_VLVisionConfig`). The decoder is read as a `qwen2` [`TextConfig`] whose RoPE is
//! plain; the multimodal split of its frequencies is [`QwenVlConfig::mrope_section`].

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::text::RawText;
use super::{unsupported, TextConfig};
use crate::model::ops::Activation;
use crate::model::ModelError;

/// Which of the two Qwen vision-language generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QwenVlVariant {
    /// `qwen2_vl`: LayerNorm blocks, quick-GELU MLP, full attention everywhere.
    Qwen2Vl,
    /// `qwen2_5_vl`: RMSNorm blocks, SwiGLU MLP, window attention outside
    /// `fullatt_block_indexes`.
    Qwen25Vl,
}

impl QwenVlVariant {
    /// The variant of a top-level `model_type`, if it is one.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "qwen2_vl" => Some(Self::Qwen2Vl),
            "qwen2_5_vl" => Some(Self::Qwen25Vl),
            _ => None,
        }
    }

    /// The top-level `model_type` string (also the family name in sessions).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qwen2Vl => "qwen2_vl",
            Self::Qwen25Vl => "qwen2_5_vl",
        }
    }
}

/// The Qwen vision tower's configuration (`vision_config`), both variants in one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenVisionConfig {
    /// Number of blocks (`depth`).
    pub depth: usize,
    /// Width of the tower (Qwen2-VL `embed_dim`, Qwen2.5-VL `hidden_size`).
    pub embed_dim: usize,
    /// Width of the merger's output (Qwen2-VL `hidden_size`, Qwen2.5-VL `out_hidden_size`).
    pub out_hidden_size: usize,
    /// MLP inner size (Qwen2-VL: `embed_dim * mlp_ratio`; Qwen2.5-VL `intermediate_size`).
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Input channels (`in_channels`; Qwen2-VL's published `in_chans` is ignored, as
    /// transformers 5 ignores it).
    pub in_channels: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch (a still image is repeated this many times).
    pub temporal_patch_size: usize,
    /// Merge block side (2: four patches become one token).
    pub spatial_merge_size: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Window side in pixels (Qwen2.5-VL); `None`: full attention in every block.
    pub window_size: Option<usize>,
    /// Blocks with full attention when windows are used.
    pub fullatt_block_indexes: Vec<usize>,
}

impl QwenVisionConfig {
    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Values in one flattened patch (channels × temporal × patch × patch).
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Whether block `i` attends within windows only.
    pub fn windowed(&self, i: usize) -> bool {
        self.window_size.is_some() && !self.fullatt_block_indexes.contains(&i)
    }

    /// Window side in merged tokens (`window_size / patch / merge`), if windows are used.
    pub fn window_tokens(&self) -> Option<usize> {
        self.window_size
            .map(|w| (w / self.patch_size / self.spatial_merge_size).max(1))
    }
}

/// The whole Qwen2-VL / Qwen2.5-VL configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenVlConfig {
    /// Which generation.
    pub variant: QwenVlVariant,
    /// The decoder, as a `qwen2` text config with plain RoPE frequencies.
    pub text_config: TextConfig,
    /// How the RoPE frequency pairs split into the (t, h, w) bands; sums to head_dim / 2.
    pub mrope_section: Vec<usize>,
    /// The vision tower.
    pub vision_config: QwenVisionConfig,
    /// `<|image_pad|>`.
    pub image_token_id: u32,
    /// `<|video_pad|>`.
    pub video_token_id: u32,
    /// `<|vision_start|>`.
    pub vision_start_token_id: u32,
    /// `<|vision_end|>`.
    pub vision_end_token_id: u32,
    /// lm_head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The first of `architectures`.
    pub architecture: String,
}

#[derive(Deserialize, Default)]
struct RawVision {
    depth: Option<usize>,
    embed_dim: Option<usize>,
    hidden_size: Option<usize>,
    out_hidden_size: Option<usize>,
    mlp_ratio: Option<f64>,
    intermediate_size: Option<usize>,
    num_heads: Option<usize>,
    in_channels: Option<usize>,
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    spatial_merge_size: Option<usize>,
    hidden_act: Option<Activation>,
    window_size: Option<usize>,
    fullatt_block_indexes: Option<Vec<usize>>,
}

/// The text defaults of `Qwen2VLTextConfig` / `Qwen2_5_VLTextConfig` that differ from
/// `Qwen2Config`'s (which the `qwen2` reader would otherwise apply).
fn text_defaults(variant: QwenVlVariant) -> Value {
    let eps = match variant {
        QwenVlVariant::Qwen2Vl => 1e-5,
        QwenVlVariant::Qwen25Vl => 1e-6,
    };
    serde_json::json!({
        "vocab_size": 152064,
        "hidden_size": 8192,
        "intermediate_size": 29568,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rms_norm_eps": eps,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": false,
        "sliding_window": 4096,
        "max_window_layers": 80,
    })
}

/// The text part of `root`: `text_config` when present, else the top level without
/// `vision_config`.
fn text_object(root: &Map<String, Value>) -> Map<String, Value> {
    match root.get("text_config").and_then(Value::as_object) {
        Some(t) => t.clone(),
        None => {
            let mut t = root.clone();
            t.remove("vision_config");
            t
        }
    }
}

/// Take `mrope_section` out of the RoPE settings of `text` (either key) and leave plain RoPE
/// there; returns the section.
fn take_mrope(text: &mut Map<String, Value>) -> Result<Vec<usize>, ModelError> {
    let mut section = None;
    for key in ["rope_scaling", "rope_parameters"] {
        let Some(Value::Object(rope)) = text.get_mut(key) else {
            continue;
        };
        if let Some(s) = rope.remove("mrope_section") {
            section =
                Some(serde_json::from_value::<Vec<usize>>(s).map_err(|_| {
                    unsupported(format!("{key}.mrope_section is not a list of sizes"))
                })?);
        }
        for kind in ["type", "rope_type"] {
            if rope.get(kind).and_then(Value::as_str) == Some("mrope") {
                rope.insert(kind.to_string(), Value::from("default"));
            }
        }
        rope.remove("mrope_interleaved");
    }
    section.ok_or_else(|| unsupported("the configuration has no rope mrope_section"))
}

fn vision_from_raw(raw: RawVision, variant: QwenVlVariant) -> Result<QwenVisionConfig, ModelError> {
    let v = match variant {
        QwenVlVariant::Qwen2Vl => {
            let embed_dim = raw.embed_dim.unwrap_or(1280);
            QwenVisionConfig {
                depth: raw.depth.unwrap_or(32),
                embed_dim,
                out_hidden_size: raw.hidden_size.unwrap_or(3584),
                intermediate_size: (embed_dim as f64 * raw.mlp_ratio.unwrap_or(4.0)) as usize,
                num_heads: raw.num_heads.unwrap_or(16),
                in_channels: raw.in_channels.unwrap_or(3),
                patch_size: raw.patch_size.unwrap_or(14),
                temporal_patch_size: raw.temporal_patch_size.unwrap_or(2),
                spatial_merge_size: raw.spatial_merge_size.unwrap_or(2),
                hidden_act: raw.hidden_act.unwrap_or(Activation::QuickGelu),
                window_size: None,
                fullatt_block_indexes: Vec::new(),
            }
        }
        QwenVlVariant::Qwen25Vl => QwenVisionConfig {
            depth: raw.depth.unwrap_or(32),
            embed_dim: raw.hidden_size.unwrap_or(3584),
            out_hidden_size: raw.out_hidden_size.unwrap_or(3584),
            intermediate_size: raw.intermediate_size.unwrap_or(3420),
            num_heads: raw.num_heads.unwrap_or(16),
            in_channels: raw.in_channels.unwrap_or(3),
            patch_size: raw.patch_size.unwrap_or(14),
            temporal_patch_size: raw.temporal_patch_size.unwrap_or(2),
            spatial_merge_size: raw.spatial_merge_size.unwrap_or(2),
            hidden_act: raw.hidden_act.unwrap_or(Activation::Silu),
            window_size: Some(raw.window_size.unwrap_or(112)),
            fullatt_block_indexes: raw.fullatt_block_indexes.unwrap_or(vec![7, 15, 23, 31]),
        },
    };
    if v.num_heads == 0 || !v.embed_dim.is_multiple_of(v.num_heads) || v.head_dim() % 4 != 0 {
        return Err(unsupported(format!(
            "vision width {} does not split into {} heads of a size divisible by 4",
            v.embed_dim, v.num_heads
        )));
    }
    if v.patch_size == 0 || v.spatial_merge_size == 0 || v.temporal_patch_size == 0 {
        return Err(unsupported(
            "vision patch, merge and temporal sizes must be positive",
        ));
    }
    Ok(v)
}

impl QwenVlConfig {
    /// Parse a Qwen2-VL / Qwen2.5-VL config.json; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ModelError> {
        let malformed = |e: serde_json::Error| ModelError::MalformedConfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let root: Value = serde_json::from_str(text).map_err(malformed)?;
        let Some(root) = root.as_object() else {
            return Err(unsupported("config.json is not a JSON object"));
        };
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        let variant = QwenVlVariant::from_model_type(model_type).ok_or_else(|| {
            unsupported(format!(
                "model_type '{model_type}' is not qwen2_vl or qwen2_5_vl"
            ))
        })?;
        let mut text_obj = text_object(root);
        let mrope_section = take_mrope(&mut text_obj)?;
        if let Value::Object(d) = text_defaults(variant) {
            for (k, v) in d {
                text_obj.entry(k).or_insert(v);
            }
        }
        text_obj.insert("model_type".into(), Value::from("qwen2"));
        let raw_text: RawText =
            serde_json::from_value(Value::Object(text_obj)).map_err(malformed)?;
        let text_config = TextConfig::from_raw(raw_text)?;
        if mrope_section.iter().sum::<usize>() != text_config.head_dim / 2 {
            return Err(unsupported(format!(
                "mrope_section {mrope_section:?} does not add up to head_dim / 2 = {}",
                text_config.head_dim / 2
            )));
        }
        let raw_vision: RawVision = match root.get("vision_config") {
            Some(v) => serde_json::from_value(v.clone()).map_err(malformed)?,
            None => RawVision::default(),
        };
        let vision_config = vision_from_raw(raw_vision, variant)?;
        let id = |key: &str, default: u32| {
            root.get(key)
                .and_then(Value::as_u64)
                .map_or(default, |v| v as u32)
        };
        let tie = root
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || text_config.tie_word_embeddings;
        Ok(Self {
            variant,
            mrope_section,
            vision_config,
            image_token_id: id("image_token_id", 151655),
            video_token_id: id("video_token_id", 151656),
            vision_start_token_id: id("vision_start_token_id", 151652),
            vision_end_token_id: id("vision_end_token_id", 151653),
            tie_word_embeddings: tie,
            architecture: root
                .get("architectures")
                .and_then(|a| a.get(0))
                .and_then(Value::as_str)
                .unwrap_or(match variant {
                    QwenVlVariant::Qwen2Vl => "Qwen2VLForConditionalGeneration",
                    QwenVlVariant::Qwen25Vl => "Qwen2_5_VLForConditionalGeneration",
                })
                .to_string(),
            text_config,
        })
    }

    /// Read and parse a config.json file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// The top-level `model_type` of a config.json text, if it names a Qwen VL model.
    pub fn variant_of(text: &str) -> Option<QwenVlVariant> {
        let root: Value = serde_json::from_str(text).ok()?;
        QwenVlVariant::from_model_type(root.get("model_type")?.as_str()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> QwenVlConfig {
        QwenVlConfig::from_json(json, Path::new("config.json")).unwrap()
    }

    #[test]
    fn flat_hub_layout_reads_mrope_and_defaults() {
        let c = parse(
            r#"{"model_type": "qwen2_vl", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rope_theta": 1000000.0,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "vision_config": {"embed_dim": 32, "hidden_size": 64, "num_heads": 4, "depth": 2}}"#,
        );
        assert_eq!(c.variant, QwenVlVariant::Qwen2Vl);
        assert_eq!(c.mrope_section, vec![2, 3, 3]);
        assert_eq!(c.text_config.rms_norm_eps, 1e-5);
        assert_eq!(c.text_config.vocab_size, 152064);
        assert!(c.text_config.qkv_bias && !c.text_config.o_bias);
        assert_eq!(c.vision_config.intermediate_size, 128);
        assert_eq!(c.vision_config.out_hidden_size, 64);
        assert_eq!(c.vision_config.hidden_act, Activation::QuickGelu);
        assert_eq!(c.image_token_id, 151655);
        assert!(!c.vision_config.windowed(0));
    }

    #[test]
    fn nested_layout_reads_windows() {
        let c = parse(
            r#"{"model_type": "qwen2_5_vl", "text_config": {"hidden_size": 64,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rope_parameters": {"rope_type": "default",
            "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}},
            "vision_config": {"hidden_size": 32, "num_heads": 4, "window_size": 56,
            "fullatt_block_indexes": [1], "out_hidden_size": 64}}"#,
        );
        assert_eq!(c.variant, QwenVlVariant::Qwen25Vl);
        assert_eq!(c.text_config.rope_theta, 1e6);
        assert_eq!(c.text_config.rms_norm_eps, 1e-6);
        assert_eq!(c.vision_config.window_tokens(), Some(2));
        assert!(c.vision_config.windowed(0) && !c.vision_config.windowed(1));
        assert_eq!(c.vision_config.hidden_act, Activation::Silu);
    }

    #[test]
    fn a_section_that_does_not_fit_the_head_is_refused() {
        let e = QwenVlConfig::from_json(
            r#"{"model_type": "qwen2_vl", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 2]}}"#,
            Path::new("config.json"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mrope_section"), "{e}");
    }
}
