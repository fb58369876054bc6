//! The supported families, each described by what it changes in the shared decoder
//! ([`DecoderSpec`]) and vision tower ([`VisionSpec`]); recording and the tracked backward work
//! for all of them because they are the same blocks.
//!
//! | decoder (`text_config.model_type`) | differences from LLaMA |
//! |---|---|
//! | `llama` | none (q/k/v/o biases when `attention_bias`) |
//! | `mistral` | sliding-window attention (query p sees key j when p − j < `sliding_window`) |
//! | `gemma` | RMSNorm scale 1 + w, token embeddings × √hidden, GeGLU (tanh GELU), `head_dim` from the config |
//! | `qwen2` | biases on q/k/v (not on o_proj); a window only with `use_sliding_window` |
//!
//! | vision tower (`vision_config.model_type`) | |
//! |---|---|
//! | `clip_vision_model` | class token, pre-layernorm, patch convolution without bias |
//! | `siglip_vision_model` | no class token, no pre-layernorm, patch convolution with bias |
//!
//! Windows, biases, activations and head sizes come from [`TextConfig`] as the configuration
//! reader resolved them per family; what is left here is what the config does not say.

use super::config::{TextConfig, TextFamily, VisionConfig, VisionFamily};
use super::decoder::DecoderSpec;
use super::vision::VisionSpec;

/// LLaMA, Mistral and Qwen2: the plain decoder (their differences are config fields).
fn llama_like(cfg: &TextConfig) -> DecoderSpec {
    DecoderSpec {
        qkv_bias: cfg.qkv_bias,
        o_bias: cfg.o_bias,
        norm_offset_one: false,
        embed_scale: None,
    }
}

/// Gemma: RMSNorm scale 1 + w and token embeddings × √hidden (transformers 5 scales inside the
/// embedding module, so the merged image features are not scaled; 4.x scaled them too).
fn gemma(cfg: &TextConfig) -> DecoderSpec {
    DecoderSpec {
        norm_offset_one: true,
        embed_scale: Some((cfg.hidden_size as f64).sqrt()),
        ..llama_like(cfg)
    }
}

/// The decoder spec of `cfg`'s family.
pub fn decoder_spec(cfg: &TextConfig) -> DecoderSpec {
    match cfg.family {
        TextFamily::Llama | TextFamily::Mistral | TextFamily::Qwen2 => llama_like(cfg),
        TextFamily::Gemma => gemma(cfg),
    }
}

/// The vision spec of `cfg`'s family.
pub fn vision_spec(cfg: &VisionConfig) -> VisionSpec {
    match cfg.family {
        VisionFamily::Clip => VisionSpec {
            class_token: true,
            pre_norm: true,
            patch_bias: false,
        },
        VisionFamily::Siglip => VisionSpec {
            class_token: false,
            pre_norm: false,
            patch_bias: true,
        },
    }
}
