//! Instrumented LLaVA on candle: vision tower, projector, decoder.
//!
//! The model is built from a Hugging Face model folder ([`ModelDir`]) whose `config.json` is
//! read as transformers reads it ([`LlavaConfig`]). Each block (norm, attention, MLP, decoder
//! layer, vision layer, projector) has one forward, which calls a [`Tape`]: [`NoTape`] for
//! plain runs, the [`AttentionRecorder`] that keeps the attention a session stores, or the
//! tracked pass's tape that keeps what the relevancy backward needs ([`tracked`]). The
//! families ([`families`]) are specs of the shared decoder ([`decoder`]) and vision tower
//! ([`vision`]).
//!
//! Numerics: attention scores are computed in the model dtype, then the softmax runs in f32 and
//! the probabilities are cast back to the model dtype for the product with the values (as
//! transformers' eager attention does). The recorder receives the f32 probabilities. RMSNorm,
//! LayerNorm (two-pass) and the RoPE tables are computed in f32; logits are returned in f32.
//! The fused candle ops (softmax, RMSNorm, RoPE) are used only through [`ops`], so that a
//! differentiable variant can replace them in one place. bf16 needs a GPU: candle has no bf16
//! matrix multiply on CPU, and [`Llava::load`] says so.
//!
//! Generation, as the recorder expects it (prefill, then one token per call):
//!
//! ```ignore
//! let dir = ModelDir::resolve("llava-hf/llava-1.5-7b-hf")?;
//! let model = Llava::load(&dir, DType::F16, &device_from_str("cuda")?)?;
//! let mut rec = AttentionRecorder::new(CaptureMode::default_for(model.num_layers()));
//! let feats = model.image_features(&pixel_values, &mut rec)?; // [F, hidden]
//! let mut cache = model.new_cache();
//! let embeds = model.embed(&input_ids, Some(&feats))?; // ids hold F image tokens
//! let mut logits = model.forward(&embeds, 0, &mut cache, &mut rec, false)?; // [1, 1, vocab]
//! for t in 1..max_new {
//!     let next = pick(&logits);
//!     let e = model.embed_text(&[next])?;
//!     logits = model.forward(&e, input_ids.len() + t - 1, &mut cache, &mut rec, false)?;
//! }
//! let (shape, rows) = rec.generated_rows(model.num_layers(), model.num_heads(), s).unwrap();
//! ```

pub mod attention;
pub mod cache;
pub mod config;
pub mod decoder;
pub mod device;
mod error;
pub mod families;
pub mod files;
pub mod interventions;
pub mod llava;
pub mod llava_next;
pub mod mlp;
pub mod norm;
pub mod ops;
pub mod projector;
pub mod qwen_vl;
pub mod randomize;
pub mod recorder;
pub mod rope;
pub mod tape;
pub mod tracked;
pub mod vision;
pub mod weights;

pub use cache::KvCache;
pub use config::{LlavaConfig, TextConfig, VisionConfig};
pub use device::DeviceName;
pub use error::{message as error_message, ModelError};
pub use files::ModelDir;
pub use llava::Llava;
pub use llava_next::LlavaNext;
pub use qwen_vl::QwenVl;
pub use recorder::{AttentionRecorder, CaptureMode, VisionRowKind};
pub use tape::{NoTape, Tape};

use candle_core::Device;

/// Parse a device name (`cpu`, `cuda` (GPU 0) or `cuda:N`) and open the device.
pub fn device_from_str(name: &str) -> Result<Device, ModelError> {
    name.parse::<DeviceName>()?.open()
}
