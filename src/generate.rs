//! Sampling loop with KV cache that produces a [`Session`].
//!
//! [`generate`] runs in stages: prepare the inputs (preprocess the image, render and tokenise
//! the prompt), prefill (encode the image, run the prompt), decode token by token (streaming
//! each token to a callback), and assemble the `Session` from the recorded attention.
//! [`crate::job::run`] puts loading, generation and explanations together.

pub mod anyres;
mod assemble;
pub mod conversation;
pub mod qwen;
mod replay;
mod sample;

pub use assemble::{ModelShape, SessionBuilder};
pub use sample::{argmax, Sampler};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::model::{
    AttentionRecorder, CaptureMode, DeviceName, KvCache, Llava, ModelDir, ModelError,
};
use crate::processing::{
    EncodedPrompt, ImageMode, ImageProcessor, PixelValues, ProcessingError, PromptProcessor,
};
use crate::session::{Array, ImageRegion, ModelFamily, RegionKind, Session};

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

/// What the prompt and the image become before the model runs.
struct Prepared {
    pixels: PixelValues,
    encoded: EncodedPrompt,
}

/// The state of one generation: recorder, cache, output so far, timings.
struct Decoding<'m> {
    model: &'m Llava,
    recorder: AttentionRecorder,
    cache: KvCache,
    output: Vec<u32>,
    timings: BTreeMap<String, f64>,
    /// The image features of the prefill, kept for a conversation's later turns.
    features: Option<Tensor>,
}

/// Stage 1: preprocess the image, render and tokenise the prompt, check the context length.
fn prepare(
    loaded: &LoadedModel,
    image: &image::DynamicImage,
    request: &RunRequest,
) -> Result<Prepared, GenerateError> {
    let model = &loaded.model;
    let pixels = loaded.images.preprocess(image, request.image_mode)?;
    let encoded = loaded
        .prompts
        .encode(&request.prompt, model.num_image_features())?;
    let n = encoded.ids.len();
    let context = model.config().text_config.max_position_embeddings;
    if n + request.max_new_tokens > context {
        return Err(GenerateError::TooLong {
            prompt: n,
            new: request.max_new_tokens,
            context,
        });
    }
    Ok(Prepared { pixels, encoded })
}

impl<'m> Decoding<'m> {
    fn new(model: &'m Llava, capture: Capture) -> Self {
        let num_layers = model.num_layers();
        Self {
            model,
            recorder: AttentionRecorder::new(capture_mode(capture, num_layers)),
            cache: KvCache::new(num_layers),
            output: Vec::new(),
            timings: BTreeMap::new(),
            features: None,
        }
    }

    /// Stage 2: encode the image and run the prompt; returns the logits of the last position.
    fn prefill(
        &mut self,
        prepared: &Prepared,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<Tensor, GenerateError> {
        let model = self.model;
        on_progress(Progress::Stage("encoding image".into()));
        let clock = Instant::now();
        let [c, h, w] = prepared.pixels.shape;
        let pixel_tensor =
            Tensor::from_vec(prepared.pixels.data.clone(), (1, c, h, w), model.device())?;
        let features = model.image_features(&pixel_tensor, &mut self.recorder)?;
        self.timings
            .insert("encode_image".into(), clock.elapsed().as_secs_f64());

        on_progress(Progress::Stage("prefill".into()));
        let clock = Instant::now();
        let embeds = model.embed(&prepared.encoded.ids, Some(&features))?;
        let logits = model.forward(&embeds, 0, &mut self.cache, &mut self.recorder, false)?;
        self.timings
            .insert("prefill".into(), clock.elapsed().as_secs_f64());
        self.features = Some(features);
        Ok(logits)
    }

    /// Stage 3: pick a token, stream it, run it; until an end token or the token budget. A
    /// generated image-token id is embedded as an ordinary token (as transformers does).
    fn decode(
        &mut self,
        mut logits: Tensor,
        prompts: &PromptProcessor,
        request: &RunRequest,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<(), GenerateError> {
        on_progress(Progress::Stage("decoding".into()));
        let clock = Instant::now();
        let mut sampler = Sampler::new(request.temperature, request.top_p, request.seed);
        let eos = prompts.eos_token_ids().to_vec();
        let mut shown = String::new();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(GenerateError::Cancelled);
            }
            let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            let id = sampler.sample(&row);
            self.output.push(id);
            let text = prompts.decode(&self.output);
            let piece = text
                .strip_prefix(shown.as_str())
                .unwrap_or(&text)
                .to_string();
            shown = text;
            on_progress(Progress::Token {
                index: self.output.len() - 1,
                id,
                text: piece,
            });
            on_progress(Progress::Fraction(
                self.output.len() as f64 / request.max_new_tokens as f64,
            ));
            if eos.contains(&id) || self.output.len() >= request.max_new_tokens {
                break;
            }
            let embeds = self.model.embed_text(&[id])?;
            let offset = self.cache.len();
            logits =
                self.model
                    .forward(&embeds, offset, &mut self.cache, &mut self.recorder, false)?;
        }
        let seconds = clock.elapsed().as_secs_f64();
        self.timings.insert("decode".into(), seconds);
        self.timings.insert(
            "tokens_per_second".into(),
            self.output.len() as f64 / seconds.max(1e-9),
        );
        Ok(())
    }

    /// Stage 4: gather the recorded attention and everything else into a session (the image
    /// was `original_size` pixels); the image is one region, the grid's patches (after a CLS feature when the span holds one), over
    /// the part of the image the pixel values show.
    fn session(
        &self,
        prepared: &Prepared,
        loaded: &LoadedModel,
        original_size: [u32; 2],
        request: &RunRequest,
    ) -> Result<Session, GenerateError> {
        let model = self.model;
        let cfg = model.config();
        let [width, height] = original_size;
        let [start, len] = prepared.encoded.image_span;
        let grid = model.image_grid();
        let cells = grid[0] * grid[1];
        let region = ImageRegion {
            kind: RegionKind::Image,
            span: [start + len.saturating_sub(cells), cells.min(len)],
            grid,
            rect: loaded
                .images
                .covered_rect(width, height, request.image_mode),
            separators: Vec::new(),
        };
        let [c, h, w] = prepared.pixels.shape;
        let pixel_values =
            Array::new(vec![c, h, w], prepared.pixels.data.clone()).ok_or_else(|| {
                GenerateError::Setting("pixel values do not match their shape".into())
            })?;
        let builder = SessionBuilder {
            model_name: &loaded.name,
            shape: ModelShape {
                architecture: cfg.architecture.clone(),
                text_layers: model.num_layers(),
                text_heads: model.num_heads(),
                vision_layers: cfg.vision_config.num_hidden_layers,
                vision_heads: cfg.vision_config.num_attention_heads,
                family: ModelFamily {
                    decoder: cfg.text_config.family.as_str().into(),
                    vision: cfg.vision_config.family.as_str().into(),
                },
            },
            request,
            image_mode: request.image_mode.to_string(),
            original_size,
            encoded: prepared.encoded.clone(),
            regions: vec![region],
            pixel_values,
            output: self.output.clone(),
            timings: self.timings.clone(),
        };
        Ok(builder.build(&loaded.prompts, &self.recorder, true))
    }
}

/// Generates an answer for one image and prompt with an already loaded model.
pub fn generate(
    loaded: &LoadedModel,
    image: &image::DynamicImage,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, GenerateError> {
    validate(request)?;
    let capture = if request.causal {
        Capture::Full
    } else {
        request.capture
    };
    let prepared = prepare(loaded, image, request)?;
    let mut run = Decoding::new(&loaded.model, capture);
    let logits = run.prefill(&prepared, on_progress)?;
    run.decode(logits, &loaded.prompts, request, cancel, on_progress)?;
    run.session(&prepared, loaded, [image.width(), image.height()], request)
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
