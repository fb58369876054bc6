//! The supported families, each described by what it changes in the shared decoder
//! ([`DecoderSpec`]) and vision tower ([`VisionSpec`]).
//!
//! | decoder (`text_config.model_type`) | differences from LLaMA |
//! |---|---|
//! | `llama` | none (q/k/v/o biases when `attention_bias`) |
//!
//! | vision tower (`vision_config.model_type`) | |
//! |---|---|
//! | `clip_vision_model` | class token, pre-layernorm, patch convolution without bias |

use super::config::{TextConfig, VisionConfig};
use super::decoder::DecoderSpec;
use super::vision::VisionSpec;

/// LLaMA (LLaVA-1.5, Vicuna).
fn llama(cfg: &TextConfig) -> DecoderSpec {
    DecoderSpec {
        qkv_bias: cfg.attention_bias,
        o_bias: cfg.attention_bias,
        norm_offset_one: false,
        embed_scale: None,
        sliding_window: None,
    }
}

/// The decoder spec of `cfg`'s family.
pub fn decoder_spec(cfg: &TextConfig) -> DecoderSpec {
    llama(cfg)
}

/// CLIP ViT.
fn clip() -> VisionSpec {
    VisionSpec {
        class_token: true,
        pre_norm: true,
        patch_bias: false,
    }
}

/// The vision spec of `cfg`'s family.
pub fn vision_spec(_cfg: &VisionConfig) -> VisionSpec {
    clip()
}
