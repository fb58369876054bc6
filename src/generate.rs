//! Sampling loop with KV cache that produces a [`Session`].
//!
//! [`generate`] preprocesses the image, renders and tokenises the prompt, prefills, decodes token
//! by token (streaming each token to a callback), and gathers the recorded attention into a
//! `Session`. [`crate::job::run`] puts loading, generation and explanations together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{AttentionRecorder, CaptureMode, KvCache, Llava, ModelDir, ModelError};
use crate::processing::{ImageMode, ImageProcessor, ProcessingError, PromptProcessor};
use crate::session::{
    Array, GenerationInfo, ImageInfo, Manifest, ModelFamily, ModelInfo, Session, TokenStrings,
    SCHEMA,
};

/// Everything one run needs, as the CLI and the TUI describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    /// A model folder, or a model id found in the local Hugging Face cache.
    pub model: String,
    /// The image file.
    pub image: PathBuf,
    /// The user's question, before the chat template.
    pub prompt: String,
    /// `default`, `crop`, `resize` or `pad`.
    pub image_mode: String,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f64,
    /// Nucleus mass for sampling; 1 keeps every token.
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Which attention to record.
    pub capture: Capture,
    /// Compute relevancy for every output token after generation.
    pub relevancy: bool,
    /// Compute causal explanations for every output token after generation.
    pub causal: bool,
}

impl Default for RunRequest {
    fn default() -> Self {
        Self {
            model: String::new(),
            image: PathBuf::new(),
            prompt: String::new(),
            image_mode: "default".into(),
            max_new_tokens: 32,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            dtype: "f32".into(),
            device: "cpu".into(),
            capture: Capture::Rows,
            relevancy: false,
            causal: false,
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
    #[error("the model failed while running: {0}")]
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
    /// The run was cancelled by the user.
    #[error("the run was cancelled")]
    Cancelled,
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
    let model = &loaded.model;
    let cfg = model.config();
    let mode: ImageMode = request
        .image_mode
        .parse()
        .map_err(|e: ProcessingError| GenerateError::Setting(e.to_string()))?;
    let mut timings = BTreeMap::new();

    on_progress(Progress::Stage("encoding image".into()));
    let clock = Instant::now();
    let pixels = loaded.images.preprocess(image, mode)?;
    let encoded = loaded
        .prompts
        .encode(&request.prompt, model.num_image_features())?;
    let n = encoded.ids.len();
    let context = cfg.text_config.max_position_embeddings;
    if n + request.max_new_tokens > context {
        return Err(GenerateError::TooLong {
            prompt: n,
            new: request.max_new_tokens,
            context,
        });
    }
    let num_layers = cfg.text_config.num_hidden_layers;
    let mut recorder = AttentionRecorder::new(capture_mode(capture, num_layers));
    let pixel_tensor = Tensor::from_vec(
        pixels.data.clone(),
        (1, pixels.shape[0], pixels.shape[1], pixels.shape[2]),
        model.device(),
    )?;
    let features = model.image_features(&pixel_tensor, &mut recorder)?;
    timings.insert("encode_image".into(), clock.elapsed().as_secs_f64());

    on_progress(Progress::Stage("prefill".into()));
    let clock = Instant::now();
    let mut cache = KvCache::new(num_layers);
    let embeds = model.embed(&encoded.ids, Some(&features))?;
    let mut logits = model.forward(&embeds, 0, &mut cache, &mut recorder, false)?;
    timings.insert("prefill".into(), clock.elapsed().as_secs_f64());

    on_progress(Progress::Stage("decoding".into()));
    let clock = Instant::now();
    let mut sampler = Sampler::new(request.temperature, request.top_p, request.seed);
    let eos = loaded.prompts.eos_token_ids().to_vec();
    let mut output: Vec<u32> = Vec::new();
    let mut shown = String::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(GenerateError::Cancelled);
        }
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let id = sampler.sample(&row);
        output.push(id);
        let text = loaded.prompts.decode(&output);
        let piece = text
            .strip_prefix(shown.as_str())
            .unwrap_or(&text)
            .to_string();
        shown = text;
        on_progress(Progress::Token {
            index: output.len() - 1,
            id,
            text: piece,
        });
        on_progress(Progress::Fraction(
            output.len() as f64 / request.max_new_tokens as f64,
        ));
        if eos.contains(&id) || output.len() >= request.max_new_tokens {
            break;
        }
        let embeds = model.embed(&[id], None)?;
        logits = model.forward(
            &embeds,
            n + output.len() - 1,
            &mut cache,
            &mut recorder,
            false,
        )?;
    }
    let decode_seconds = clock.elapsed().as_secs_f64();
    timings.insert("decode".into(), decode_seconds);
    timings.insert(
        "tokens_per_second".into(),
        output.len() as f64 / decode_seconds.max(1e-9),
    );

    let positions = n + output.len() - 1;
    let heads = cfg.text_config.num_attention_heads;
    let to_array = |(shape, data): (Vec<usize>, Vec<f32>)| Array::new(shape, data);
    let attn_gen = recorder
        .generated_rows(num_layers, heads, positions)
        .and_then(to_array);
    let mut attn_full = BTreeMap::new();
    for &layer in &recorder.mode().full_layers {
        if let Some(a) = recorder.full(layer, positions).and_then(to_array) {
            attn_full.insert(layer, a);
        }
    }
    let attn_vit = recorder.vision().and_then(to_array);

    let manifest = Manifest {
        schema: SCHEMA.into(),
        model: ModelInfo {
            path: loaded.name.clone(),
            architecture: cfg.architecture.clone(),
            text_layers: num_layers,
            text_heads: heads,
            vision_layers: cfg.vision_config.num_hidden_layers,
            vision_heads: cfg.vision_config.num_attention_heads,
            image_grid: model.image_grid(),
            family: Some(ModelFamily {
                decoder: cfg.text_config.family.as_str().into(),
                vision: cfg.vision_config.family.as_str().into(),
            }),
        },
        prompt: request.prompt.clone(),
        image: ImageInfo {
            path: request.image.display().to_string(),
            mode: mode.to_string(),
            original_size: [image.width(), image.height()],
        },
        generation: GenerationInfo {
            max_new_tokens: request.max_new_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            seed: request.seed,
        },
        tokens: TokenStrings {
            input: encoded.tokens.clone(),
            output: output
                .iter()
                .map(|&id| loaded.prompts.decode_token(id))
                .collect(),
        },
        image_span: encoded.image_span,
        relevancy_tokens: Vec::new(),
        causal: None,
        timings,
    };
    let [c, h, w] = pixels.shape;
    Ok(Session {
        manifest,
        input_ids: encoded.ids.iter().map(|&i| i as i64).collect(),
        output_ids: output.iter().map(|&i| i as i64).collect(),
        pixel_values: Array::new(vec![c, h, w], pixels.data).ok_or_else(|| {
            GenerateError::Setting("pixel values do not match their shape".into())
        })?,
        attn_gen,
        attn_full,
        attn_vit,
        relevancy_llm: None,
        relevancy_vit: None,
        relevancy_combined: None,
    })
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

/// Greedy or temperature + top-p sampling from logits, reproducible for a seed.
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
}

impl Sampler {
    /// A sampler; `temperature` 0 means greedy (argmax, first index on ties).
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Self {
        Self {
            temperature,
            top_p,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Picks the next token id from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((l as f64 - max) / self.temperature).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= total);
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (i, p) in probs.iter().enumerate() {
            kept += p.1;
            if kept >= self.top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        let mass: f64 = probs.iter().map(|p| p.1).sum();
        let mut draw = self.rng.gen::<f64>() * mass;
        for (id, p) in &probs {
            if draw < *p {
                return *id as u32;
            }
            draw -= p;
        }
        probs.last().map(|p| p.0 as u32).unwrap_or(0)
    }
}

/// Index of the largest value; the first one on ties, as torch's argmax.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(0.0, 1.0, 7);
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let mut s = Sampler::new(1.0, 0.5, 3);
        let logits = [10.0, 0.0, 0.0, 0.0];
        for _ in 0..50 {
            assert_eq!(s.sample(&logits), 0);
        }
    }

    #[test]
    fn sampling_is_reproducible_for_a_seed() {
        let logits: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(1.5, 0.9, seed);
            (0..30).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(11), draw(11));
        assert_ne!(draw(11), draw(12));
    }

    #[test]
    fn capture_names_parse() {
        assert_eq!("off".parse::<Capture>(), Ok(Capture::Off));
        assert_eq!("full".parse::<Capture>(), Ok(Capture::Full));
        assert!("all".parse::<Capture>().is_err());
    }
}
