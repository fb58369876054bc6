//! Instrumented LLaVA on candle: CLIP vision tower, projector, LLaMA decoder.
//!
//! The model is built from a Hugging Face model folder ([`ModelDir`]) whose `config.json` is
//! read as transformers reads it ([`LlavaConfig`]). Every attention probability of the decoder
//! (and, opt-in, of the vision tower) passes through one [`AttentionRecorder`].
//!
//! Numerics: attention scores are computed in the model dtype, then the softmax runs in f32 and
//! the probabilities are cast back to the model dtype for the product with the values (as
//! transformers' eager attention does). The recorder receives the f32 probabilities. RMSNorm,
//! LayerNorm and RoPE tables are computed in f32; logits are returned in f32.

pub mod cache;
pub mod clip;
pub mod config;
mod error;
pub mod files;
pub mod llama;
pub mod llava;
pub mod ops;
pub mod projector;
pub mod recorder;
pub mod tracked;
pub mod weights;

pub use cache::KvCache;
pub use config::{LlavaConfig, TextConfig, VisionConfig};
pub use error::ModelError;
pub use files::ModelDir;
pub use llava::Llava;
pub use recorder::{AttentionRecorder, CaptureMode};

use candle_core::Device;

/// Parse a device name: `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn device_from_str(name: &str) -> Result<Device, ModelError> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = if name.eq_ignore_ascii_case("cuda") {
        0
    } else if let Some(n) = name
        .strip_prefix("cuda:")
        .or_else(|| name.strip_prefix("CUDA:"))
    {
        n.parse::<usize>()
            .map_err(|_| ModelError::BadDevice(name.to_string()))?
    } else {
        return Err(ModelError::BadDevice(name.to_string()));
    };
    if !cfg!(feature = "cuda") {
        return Err(ModelError::CudaNotBuilt(name.to_string()));
    }
    Device::new_cuda(ordinal).map_err(|e| ModelError::DeviceUnavailable {
        name: name.to_string(),
        message: e.to_string(),
    })
}
