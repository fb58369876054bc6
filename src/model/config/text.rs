//! `text_config`: the decoder families and the defaults of their transformers config classes.
//!
//! Each family takes a missing field from its own class (`LlamaConfig`, `MistralConfig`,
//! `GemmaConfig`, `Qwen2Config`), as transformers does when it builds the sub-config from the
//! dict in config.json. A field written as `null` is not the same as a missing one where
//! transformers tells them apart (`num_key_value_heads: null` means "as many as the query
//! heads", `sliding_window: null` means "no window").

use serde::{Deserialize, Deserializer};

use super::{unsupported, OneOrMany};
use crate::model::ops::Activation;
use crate::model::ModelError;
use TextFamily as Family;

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

/// The decoder family, chosen from `text_config.model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextFamily {
    /// `llama`: LLaVA-1.5's Vicuna.
    Llama,
    /// `mistral`: sliding-window attention, no biases (BakLLaVA).
    Mistral,
    /// `gemma`: RMSNorm with (1 + w), embeddings × sqrt(hidden), GeGLU, tied embeddings.
    Gemma,
    /// `qwen2`: biases on q/k/v, optional sliding window on the upper layers.
    Qwen2,
}

impl TextFamily {
    /// Every supported decoder family, in the order error messages list them.
    pub const ALL: [TextFamily; 4] = [Self::Llama, Self::Mistral, Self::Gemma, Self::Qwen2];

    /// The family of a `text_config.model_type`, if supported.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == model_type)
    }

    /// The `model_type` string of this family (also its name in session files).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Gemma => "gemma",
            Self::Qwen2 => "qwen2",
        }
    }
}

impl std::fmt::Display for TextFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The attention of one decoder layer (`layer_types` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AttentionType {
    /// Causal attention over every earlier position.
    #[serde(rename = "full_attention")]
    Full,
    /// Causal attention over the last `sliding_window` positions only.
    #[serde(rename = "sliding_attention")]
    Sliding,
}

/// The decoder configuration (`text_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// `model_type` as written (`llama` when absent, as transformers assumes).
    pub model_type: String,
    /// The decoder family, from `model_type`.
    pub family: TextFamily,
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
    /// Size of one head: `head_dim` when config.json gives it, else hidden / heads (Gemma: 256).
    pub head_dim: usize,
    /// MLP activation. Gemma: `hidden_activation`, falling back to `hidden_act` (whose legacy
    /// `gelu` means the tanh approximation, as transformers reads it).
    pub hidden_act: Activation,
    /// Context length (used by dynamic RoPE and as llama3's original length by default).
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// `attention_bias` as config.json gives it (default false). The decoder reads
    /// [`qkv_bias`](Self::qkv_bias) and [`o_bias`](Self::o_bias), which say what the family
    /// really builds.
    pub attention_bias: bool,
    /// Biases on q_proj, k_proj, v_proj: `attention_bias` for LLaMA and Gemma, always for
    /// Qwen2, never for Mistral.
    pub qkv_bias: bool,
    /// Bias on o_proj: `attention_bias` for LLaMA and Gemma, never for Qwen2 and Mistral.
    pub o_bias: bool,
    /// Biases on the MLP projections (`mlp_bias`, LLaMA only; the other families have none).
    pub mlp_bias: bool,
    /// The attention window: a query at position q sees keys k with q - k < window, on the
    /// layers whose [`layer_types`](Self::layer_types) entry is `Sliding`. Mistral:
    /// `sliding_window` (4096 when absent, none when null); Qwen2: `sliding_window` only when
    /// `use_sliding_window` is true; LLaMA and Gemma: none.
    pub sliding_window: Option<usize>,
    /// Per layer, full or sliding attention. Mistral: every layer slides when there is a
    /// window. Qwen2: `layer_types` when given, else layers from `max_window_layers` on slide.
    /// All `Full` when [`sliding_window`](Self::sliding_window) is none.
    pub layer_types: Vec<AttentionType>,
    /// Whether lm_head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawRope {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

/// A field that may be missing (`None`), `null` (`Some(None)`) or set (`Some(Some(v))`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
pub(super) struct RawText {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    #[serde(default, deserialize_with = "nullable")]
    num_key_value_heads: Option<Option<usize>>,
    head_dim: Option<usize>,
    hidden_act: Option<Activation>,
    hidden_activation: Option<Activation>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    sliding_window: Option<Option<usize>>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<AttentionType>>,
    tie_word_embeddings: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    bos_token_id: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    eos_token_id: Option<Option<OneOrMany>>,
    #[serde(default, deserialize_with = "nullable")]
    pad_token_id: Option<Option<u32>>,
}

/// The class defaults of one family that differ between families.
struct Defaults {
    vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    /// `None`: as many as the query heads.
    kv_heads: Option<usize>,
    head_dim: Option<usize>,
    act: Activation,
    max_pos: usize,
    tie: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
}

impl TextFamily {
    fn defaults(self) -> Defaults {
        match self {
            Self::Llama => Defaults {
                vocab: 32000,
                hidden: 4096,
                intermediate: 11008,
                layers: 32,
                heads: 32,
                kv_heads: None,
                head_dim: None,
                act: Activation::Silu,
                max_pos: 2048,
                tie: false,
                bos: Some(1),
                eos: Some(2),
                pad: None,
            },
            Self::Mistral => Defaults {
                vocab: 32000,
                hidden: 4096,
                intermediate: 14336,
                layers: 32,
                heads: 32,
                kv_heads: Some(8),
                head_dim: None,
                act: Activation::Silu,
                max_pos: 4096 * 32,
                tie: false,
                bos: Some(1),
                eos: Some(2),
                pad: None,
            },
            Self::Gemma => Defaults {
                vocab: 256000,
                hidden: 3072,
                intermediate: 24576,
                layers: 28,
                heads: 16,
                kv_heads: Some(16),
                head_dim: Some(256),
                act: Activation::GeluTanh,
                max_pos: 8192,
                tie: true,
                bos: Some(2),
                eos: Some(1),
                pad: Some(0),
            },
            Self::Qwen2 => Defaults {
                vocab: 151936,
                hidden: 4096,
                intermediate: 22016,
                layers: 32,
                heads: 32,
                kv_heads: Some(32),
                head_dim: None,
                act: Activation::Silu,
                max_pos: 32768,
                tie: false,
                bos: None,
                eos: None,
                pad: None,
            },
        }
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

/// The names of the supported decoder families, for error messages.
pub(super) fn supported_text_types() -> String {
    TextFamily::ALL.map(TextFamily::as_str).join(", ")
}

impl TextConfig {
    pub(super) fn from_raw(raw: RawText) -> Result<Self, ModelError> {
        let model_type = raw.model_type.unwrap_or_else(|| "llama".to_string());
        let family = TextFamily::from_model_type(&model_type).ok_or_else(|| {
            unsupported(format!(
                "text_config.model_type '{model_type}' is not supported (supported: {})",
                supported_text_types()
            ))
        })?;
        let d = family.defaults();
        let hidden_size = raw.hidden_size.unwrap_or(d.hidden);
        let num_attention_heads = raw.num_attention_heads.unwrap_or(d.heads);
        if num_attention_heads == 0 {
            return Err(unsupported("text num_attention_heads is 0"));
        }
        let num_key_value_heads = match raw.num_key_value_heads {
            Some(Some(n)) => n,
            Some(None) => num_attention_heads,
            None => d.kv_heads.unwrap_or(num_attention_heads),
        };
        if num_key_value_heads == 0 || !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(unsupported(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        let head_dim = match raw.head_dim.or(d.head_dim) {
            Some(h) => h,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(unsupported(format!(
                    "text hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads} and no head_dim is given"
                )))
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(unsupported(format!("head_dim {head_dim} is not even")));
        }
        let num_hidden_layers = raw.num_hidden_layers.unwrap_or(d.layers);
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(d.max_pos);
        // transformers: values inside rope_parameters win over a top-level rope_theta; the old
        // `rope_scaling` key replaces `rope_parameters` when both are given.
        let rope = raw.rope_scaling.or(raw.rope_parameters).unwrap_or_default();
        let rope_theta = rope.rope_theta.or(raw.rope_theta).unwrap_or(10000.0);
        let rope_scaling = RopeScaling::from_raw(&rope, max_position_embeddings)?;
        let eos_token_ids = match raw.eos_token_id {
            None => d.eos.into_iter().collect(),
            Some(None) => Vec::new(),
            Some(Some(OneOrMany::One(id))) => vec![id],
            Some(Some(OneOrMany::Many(ids))) => ids,
        };
        // Gemma: `hidden_activation` when given (transformers 4.x); otherwise `hidden_act`,
        // whose legacy "gelu" both transformers 4.x and 5 run as the tanh approximation.
        let legacy_gelu = |a: Activation| match a {
            Activation::Gelu => Activation::GeluTanh,
            other => other,
        };
        let hidden_act = match family {
            Family::Gemma => raw.hidden_activation.or(raw.hidden_act.map(legacy_gelu)),
            _ => raw.hidden_act,
        }
        .unwrap_or(d.act);
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match family {
            Family::Llama | Family::Gemma => (attention_bias, attention_bias),
            Family::Qwen2 => (true, false),
            Family::Mistral => (false, false),
        };
        let window = raw.sliding_window.unwrap_or(Some(4096));
        let sliding_window = match family {
            Family::Mistral => window,
            Family::Qwen2 if raw.use_sliding_window.unwrap_or(false) => window,
            _ => None,
        };
        let layer_types = match (sliding_window, family, raw.layer_types) {
            (None, ..) => vec![AttentionType::Full; num_hidden_layers],
            (Some(_), Family::Qwen2, Some(given)) => {
                if given.len() != num_hidden_layers {
                    return Err(unsupported(format!(
                        "text_config.layer_types has {} entries for {num_hidden_layers} layers",
                        given.len()
                    )));
                }
                given
            }
            (Some(_), Family::Qwen2, None) => {
                let first = raw.max_window_layers.unwrap_or(28);
                (0..num_hidden_layers)
                    .map(|i| {
                        if i >= first {
                            AttentionType::Sliding
                        } else {
                            AttentionType::Full
                        }
                    })
                    .collect()
            }
            (Some(_), ..) => vec![AttentionType::Sliding; num_hidden_layers],
        };
        if sliding_window == Some(0) {
            return Err(unsupported("text_config.sliding_window is 0"));
        }
        Ok(Self {
            model_type,
            family,
            vocab_size: raw.vocab_size.unwrap_or(d.vocab),
            hidden_size,
            intermediate_size: raw.intermediate_size.unwrap_or(d.intermediate),
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            hidden_act,
            max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            attention_bias,
            qkv_bias,
            o_bias,
            mlp_bias: family == Family::Llama && raw.mlp_bias.unwrap_or(false),
            sliding_window,
            layer_types,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(d.tie),
            bos_token_id: raw.bos_token_id.unwrap_or(d.bos),
            eos_token_ids,
            pad_token_id: raw.pad_token_id.unwrap_or(d.pad),
        })
    }

    /// The attention window of decoder layer `layer`, or `None` for full causal attention.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        match self.layer_types.get(layer) {
            Some(AttentionType::Sliding) => self.sliding_window,
            _ => None,
        }
    }
}
