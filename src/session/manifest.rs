//! The JSON manifest stored in a session file's `__metadata__["lvlmscope"]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::explain::causal::CausalParams;

use super::regions::ImageRegion;

/// The schema tag every session file written now carries.
pub const SCHEMA: &str = "lvlmscope.session/2";

/// The schema tag of files written before image regions; readers still accept it (its image is
/// one region made from `image_span`, `model.image_grid` and `image.original_size`).
pub const SCHEMA_1: &str = "lvlmscope.session/1";

/// Everything about a run that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA`] (or [`SCHEMA_1`] in older files).
    pub schema: String,
    /// Which model produced the run and its shape.
    pub model: ModelInfo,
    /// The user's prompt, before the chat template.
    pub prompt: String,
    /// The image the model saw.
    pub image: ImageInfo,
    /// Sampling settings.
    pub generation: GenerationInfo,
    /// Token strings of the input (after image-token expansion) and of the output.
    pub tokens: TokenStrings,
    /// `[start, len]` of the image features in input positions: the span covering every
    /// region (first start .. last end, plus a leading CLS feature under LLaVA's `full`
    /// feature strategy).
    pub image_span: [usize; 2],
    /// The image regions in input order; empty means one `Image` region made from
    /// `image_span`, `model.image_grid` and `image.original_size` (as in schema 1 files).
    #[serde(default)]
    pub regions: Vec<ImageRegion>,
    /// Output token indices whose relevancy rows are stored.
    #[serde(default)]
    pub relevancy_tokens: Vec<usize>,
    /// Causal (CLEANN) results, when computed.
    #[serde(default)]
    pub causal: Option<CausalResults>,
    /// Wall-clock seconds of each stage (load, prefill, decode, relevancy, causal, ...).
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
    /// Logit-lens readings cached per (answer token, layer) (`explain::lens::store`; the
    /// catalogue's `lens.l{L}` maps read them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lens: Vec<crate::explain::lens::Lens>,
    /// The turns of a conversation in order (the last one is the session's standard fields);
    /// empty for a single question, which is one turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<super::TurnInfo>,
    /// What the per-view vision attention tensors (`attn.vit.v{K}`) hold; absent when the
    /// session has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_attention: Option<super::VisionInfo>,
}

/// The model's identity and the sizes a view needs without loading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The folder or model id given on the command line.
    pub path: String,
    /// Architecture name from config.json (e.g. `LlavaForConditionalGeneration`).
    pub architecture: String,
    /// Decoder layers.
    pub text_layers: usize,
    /// Decoder attention heads.
    pub text_heads: usize,
    /// Vision-tower layers.
    pub vision_layers: usize,
    /// Vision-tower attention heads.
    pub vision_heads: usize,
    /// `[rows, cols]` of the image patch grid (the first region's grid).
    pub image_grid: [usize; 2],
    /// The decoder and vision-tower families; absent in files written before there were
    /// several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<ModelFamily>,
}

/// The families a model is composed of, as `config.json`'s model_types name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFamily {
    /// Decoder family: `llama`, `mistral`, `gemma` or `qwen2`.
    pub decoder: String,
    /// Vision tower family: `clip` or `siglip`.
    pub vision: String,
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} + {}", self.decoder, self.vision)
    }
}

/// Where the image came from and how it was fitted to the vision tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The image file, or a name for an embedded image.
    pub path: String,
    /// `default`, `crop`, `resize` or `pad`.
    pub mode: String,
    /// `[width, height]` of the original image.
    pub original_size: [u32; 2],
}

/// Sampling settings of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationInfo {
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus sampling mass; 1 disables it.
    pub top_p: f64,
    /// Random seed for sampling.
    pub seed: u64,
    /// Weights and activations dtype of the run (`f32`, `f16`, `bf16`); absent in files
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Device of the run (`cpu`, `cuda:N`); absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Token strings, one per id, as the tokenizer spells them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenStrings {
    /// Input tokens after image-token expansion (length N).
    pub input: Vec<String>,
    /// Generated tokens (length T).
    pub output: Vec<String>,
}

/// CLEANN results for some output tokens, shaped like the golden files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalResults {
    /// The parameters every result below was computed with.
    pub params: CausalParams,
    /// Output token index → its explanation.
    pub tokens: BTreeMap<usize, CausalToken>,
}

/// The explanation of one output token: one entry per head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalToken {
    /// Absolute position whose attention row is explained (N − 1 + t).
    pub target: usize,
    /// Per-head results.
    pub heads: Vec<CausalHead>,
}

/// CLEANN result of one attention head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalHead {
    /// Head index.
    pub head: usize,
    /// Positions taken as graph nodes, ascending.
    pub nodes: Vec<usize>,
    /// Explaining positions, ascending.
    pub explanation: Vec<usize>,
    /// Radius → positions first reached at that depth of the tree.
    pub per_radius: BTreeMap<usize, Vec<usize>>,
    /// Max image attention / max attention after the image.
    pub importance: f64,
    /// Explaining image position → 1 − p-value.
    pub image_weights: BTreeMap<usize, f64>,
}
