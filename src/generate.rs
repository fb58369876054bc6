//! Sampling loop with KV cache that produces a [`Session`].
//!
//! [`generate`] runs in stages: prepare the inputs (preprocess the image, render and tokenise
//! the prompt), prefill (encode the image, run the prompt), decode token by token (streaming
//! each token to a callback), and assemble the `Session` from the recorded attention.
//! [`crate::job::run`] puts loading, generation and explanations together.

pub mod anyres;
mod assemble;
pub mod conversation;
mod decode;
pub mod pipeline;
pub mod qwen;
mod replay;
mod sample;
pub mod vision_rows;

pub use assemble::{ModelShape, SessionBuilder};
pub use decode::{Decoding, TextModel};
pub use sample::{argmax, Sampler};

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};

use crate::model::{CaptureMode, DeviceName, Llava, ModelDir, ModelError};
use crate::processing::{ImageMode, ImageProcessor, ProcessingError, PromptProcessor};
use crate::session::Session;

/// Everything one run needs, as the CLI and the TUI describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    /// A model folder, or a model id found in the local Hugging Face cache.
    pub model: String,
    /// The image file.
    pub image: PathBuf,
    /// The user's question, before the chat template.
    pub prompt: String,
    /// How the image is fitted to the vision tower.
    pub image_mode: ImageMode,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f64,
    /// Nucleus mass for sampling; 1 keeps every token.
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Weights and activations dtype.
    pub dtype: DType,
    /// Where the model runs.
    pub device: DeviceName,
    /// Which attention to record.
    pub capture: Capture,
    /// Compute relevancy for every output token after generation.
    pub relevancy: bool,
    /// Compute causal explanations for every output token after generation.
    pub causal: bool,
    /// Qwen VL: largest number of image pixels after resizing (overrides the folder's).
    pub max_pixels: Option<usize>,
    /// Qwen VL: smallest number of image pixels after resizing (overrides the folder's).
    pub min_pixels: Option<usize>,
}

impl Default for RunRequest {
    fn default() -> Self {
        Self {
            model: String::new(),
            image: PathBuf::new(),
            prompt: String::new(),
            image_mode: ImageMode::default(),
            max_new_tokens: 32,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            dtype: DType::F32,
            device: DeviceName::Cpu,
            capture: Capture::Rows,
            relevancy: false,
            causal: false,
            max_pixels: None,
            min_pixels: None,
        }
    }
}

/// What attention a run records (the recorder's capture modes, as the CLI names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Capture {
    /// Nothing: plain generation.
    Off,
    /// The generated rows of every layer (`attn.gen`), the default.
    #[default]
    Rows,
    /// Generated rows, plus the full matrix of the last layer (`attn.full.{L-1}`).
    Full,
}

impl std::str::FromStr for Capture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "rows" => Ok(Self::Rows),
            "full" => Ok(Self::Full),
            other => Err(format!("unknown capture mode {other:?} (off, rows, full)")),
        }
    }
}

/// Progress reported while a run goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A new stage began: "loading model", "encoding image", "prefill", "decoding", ...
    Stage(String),
    /// Fraction of the current stage done, in [0, 1].
    Fraction(f64),
    /// Output token `index` was generated; `text` is its readable piece.
    Token {
        /// Index of the output token.
        index: usize,
        /// The token's id.
        id: u32,
        /// The readable text this token adds to the answer.
        text: String,
    },
}

/// Why a run failed; each variant is one clear sentence.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The model could not be found or loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The image or the prompt could not be prepared.
    #[error(transparent)]
    Processing(#[from] ProcessingError),
    /// A tensor operation failed while running the model.
    #[error("the model failed while running: {}", crate::model::error_message(.0))]
    Tensor(#[from] candle_core::Error),
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
    /// The prompt does not fit the model's context.
    #[error("the prompt is {prompt} tokens and {new} new tokens were asked for, but the model's context is {context} positions")]
    TooLong {
        /// Input positions after image expansion.
        prompt: usize,
        /// Requested new tokens.
        new: usize,
        /// The model's maximum positions.
        context: usize,
    },
    /// A scripted conversation's questions alone do not fit the model's context.
    #[error("the conversation's {turns} questions are already {prompt} tokens through the chat template and {new} new tokens were asked for per answer, but the model's context is {context} positions")]
    ConversationTooLong {
        /// Number of questions.
        turns: usize,
        /// Input positions of all questions with empty answers, image expanded.
        prompt: usize,
        /// Requested new tokens.
        new: usize,
        /// The model's maximum positions.
        context: usize,
    },
    /// The run was cancelled by the user.
    #[error("the run was cancelled")]
    Cancelled,
    /// The original image a session was made from cannot be read back, or is another image.
    #[error("{0}")]
    SessionImage(String),
}

/// A model with its preprocessors, loaded once and used for many runs.
pub struct LoadedModel {
    /// What the user named the model (folder or id), recorded in sessions.
    pub name: String,
    /// The resolved folder.
    pub dir: ModelDir,
    /// The network.
    pub model: Llava,
    /// CLIP preprocessing.
    pub images: ImageProcessor,
    /// Chat template and tokenizer.
    pub prompts: PromptProcessor,
}

impl LoadedModel {
    /// Resolves `name` (folder or cached model id) and loads everything a run needs.
    pub fn load(name: &str, dtype: DType, device: &Device) -> Result<Self, GenerateError> {
        let dir = ModelDir::resolve(name)?;
        if anyres::is_anyres(&dir) {
            return Err(GenerateError::Setting(format!(
                "{name} is a LLaVA-NeXT / OneVision model, and this step takes LLaVA-1.5-style \
                 models only (`run`, `batch`, `report`, `eval` and the app take it)"
            )));
        }
        if qwen::is_qwen_vl(&dir) {
            return Err(GenerateError::Setting(format!(
                "{name} is a Qwen2-VL / Qwen2.5-VL model, and this step takes LLaVA-1.5-style \
                 models only (`run`, `batch`, `report`, `eval` and the app take it)"
            )));
        }
        let images = match &dir.preprocessor_config {
            Some(path) => ImageProcessor::from_file(path)?,
            None => {
                return Err(GenerateError::Setting(format!(
                    "the model folder {} has no preprocessor_config.json",
                    dir.root.display()
                )))
            }
        };
        let prompts = PromptProcessor::from_dir(&dir.root)?;
        let model = Llava::load(&dir, dtype, device)?;
        let cfg = model.config();
        prompts.check_vocab(cfg.text_config.vocab_size, cfg.image_token_index)?;
        Ok(Self {
            name: name.to_string(),
            dir,
            model,
            images,
            prompts,
        })
    }
}

/// Parses a dtype name of the command line.
pub fn parse_dtype(s: &str) -> Result<DType, GenerateError> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(GenerateError::Setting(format!(
            "unknown dtype {other:?}: use f32, f16 or bf16"
        ))),
    }
}

/// The dtype and device a session's run recorded; f32 on the CPU (what `run` and the app use by
/// default) for a file that records neither or names ones this build does not know.
pub fn recorded_settings(g: &crate::session::GenerationInfo) -> (DType, DeviceName) {
    let dtype = g.dtype.as_deref().and_then(|d| parse_dtype(d).ok());
    let device = g.device.as_deref().and_then(|d| d.parse().ok());
    (dtype.unwrap_or(DType::F32), device.unwrap_or_default())
}

/// Checks the sampling settings of a request before any work is done.
pub fn validate(request: &RunRequest) -> Result<(), GenerateError> {
    if request.max_new_tokens == 0 {
        return Err(GenerateError::Setting(
            "--max-new-tokens must be at least 1".into(),
        ));
    }
    if !(request.temperature >= 0.0 && request.temperature.is_finite()) {
        return Err(GenerateError::Setting(
            "--temperature must be a finite number ≥ 0".into(),
        ));
    }
    if !(request.top_p > 0.0 && request.top_p <= 1.0) {
        return Err(GenerateError::Setting("--top-p must be in (0, 1]".into()));
    }
    Ok(())
}

/// Generates an answer for one image and prompt with an already loaded model.
pub fn generate(
    loaded: &LoadedModel,
    image: &image::DynamicImage,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, GenerateError> {
    Ok(
        conversation::Conversation::start(loaded, image, request, cancel, on_progress)?
            .into_session(),
    )
}

/// The recorder's mode for a capture setting.
pub fn capture_mode(capture: Capture, num_layers: usize) -> CaptureMode {
    match capture {
        Capture::Off => CaptureMode::off(),
        Capture::Rows => CaptureMode {
            generated_rows: true,
            full_layers: Vec::new(),
            vision: false,
        },
        Capture::Full => CaptureMode {
            generated_rows: true,
            full_layers: vec![num_layers.saturating_sub(1)],
            vision: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_names_parse() {
        assert_eq!("off".parse::<Capture>(), Ok(Capture::Off));
        assert_eq!("full".parse::<Capture>(), Ok(Capture::Full));
        assert!("all".parse::<Capture>().is_err());
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!(parse_dtype("f16").unwrap(), DType::F16);
        assert!(parse_dtype("f8").unwrap_err().to_string().contains("dtype"));
    }
}
