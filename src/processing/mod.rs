//! Image preprocessing (CLIP and SigLIP), chat template, tokenizer, image-token expansion.
//!
//! Image side: [`load_image`] / [`load_image_bytes`] decode with limits and clear errors;
//! [`ImageProcessor`] turns the image into the vision tower's `[3, h, w]` [`PixelValues`] as
//! transformers' CLIP or SigLIP image processor does (Pillow-exact resampling), in one of four
//! [`ImageMode`]s. Prompt side: [`PromptProcessor`] applies the model's chat template,
//! tokenizes, and expands the image token into one id per image feature ([`EncodedPrompt`]).

pub mod anyres;
pub mod config;
mod error;
pub mod image;
mod llama;
mod load;
pub mod prompt;
pub mod qwen_vl;
pub mod resample;
pub mod template;

pub use self::config::{PreprocessorConfig, ProcessorKind, ResizeTarget};
pub use self::error::ProcessingError;
pub use self::image::{load_image, load_image_bytes, ImageMode, ImageProcessor, PixelValues};
pub use self::prompt::{EncodedPrompt, PromptProcessor};
