//! Generation with a Qwen2-VL / Qwen2.5-VL model: the image cut into native-resolution patches
//! (`smart_resize` within the pixel budget), the prompt's `<|image_pad|>` expanded to the
//! merged tokens, M-RoPE positions in prefill and decode, and a session with one image region
//! (the merged grid `[rows, cols]`, rarely square, over the whole image).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::conversation::Conversation;
use super::pipeline::{encode_image, Seen};
use super::{vision_rows, Decoding, GenerateError, ModelShape, Progress, RunRequest};
use crate::explain::relevancy::RelevancyMaps;
use crate::model::config::QwenVlVariant;
use crate::model::tracked::QwenTrackedPass;
use crate::model::{AttentionRecorder, ModelDir, NoTape, QwenVl};
use crate::processing::qwen_vl::{QwenImageConfig, QwenPixels};
use crate::processing::{EncodedPrompt, PromptProcessor};
use crate::session::{
    Array, ImageRegion, ModelFamily, RegionKind, Session, VisionInfo, VisionRow, VisionViews,
};
use crate::trace::Stage;

/// The image placeholder of the Qwen VL chat template.
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// A Qwen VL model with its preprocessors.
pub struct QwenLoaded {
    /// What the user named the model.
    pub name: String,
    /// The resolved folder.
    pub dir: ModelDir,
    /// The network.
    pub model: QwenVl,
    /// The image processor's settings (`preprocessor_config.json`).
    pub images: QwenImageConfig,
    /// Chat template and tokenizer.
    pub prompts: PromptProcessor,
}

impl QwenLoaded {
    /// Load a resolved Qwen VL folder.
    pub fn load(
        name: &str,
        dir: ModelDir,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, GenerateError> {
        let images = QwenImageConfig::from_dir(&dir.root)?;
        let prompts = PromptProcessor::from_dir_with_token(&dir.root, IMAGE_PAD)?;
        let model = QwenVl::load(&dir, dtype, device)?;
        let cfg = model.config();
        prompts.check_vocab(cfg.text_config.vocab_size, cfg.image_token_id)?;
        Ok(Self {
            name: name.to_string(),
            dir,
            model,
            images,
            prompts,
        })
    }
}

/// Whether the model folder `dir` holds a Qwen2-VL / Qwen2.5-VL model.
pub fn is_qwen_vl(dir: &ModelDir) -> bool {
    std::fs::read_to_string(&dir.config)
        .ok()
        .and_then(|t| crate::model::config::QwenVlConfig::variant_of(&t))
        .is_some()
}

/// The image settings of a request applied to the folder's.
fn image_config(loaded: &QwenLoaded, request: &RunRequest) -> QwenImageConfig {
    let mut cfg = loaded.images.clone();
    if let Some(max) = request.max_pixels {
        cfg.max_pixels = max;
    }
    if let Some(min) = request.min_pixels {
        cfg.min_pixels = min;
    }
    cfg
}

/// Preprocess, encode the prompt, check the context.
fn prepare(
    loaded: &QwenLoaded,
    image: &image::DynamicImage,
    request: &RunRequest,
) -> Result<(QwenPixels, EncodedPrompt, QwenImageConfig), GenerateError> {
    let cfg = image_config(loaded, request);
    if cfg.min_pixels > cfg.max_pixels {
        return Err(GenerateError::Setting(format!(
            "--min-pixels {} is above --max-pixels {}",
            cfg.min_pixels, cfg.max_pixels
        )));
    }
    let pixels = cfg.preprocess(image)?;
    let tokens = pixels.num_tokens(cfg.merge_size);
    let encoded = loaded.prompts.encode(&request.prompt, tokens)?;
    let n = encoded.ids.len();
    let context = loaded.model.config().text_config.max_position_embeddings;
    let text = n - tokens.min(n);
    if text.saturating_add(request.max_new_tokens) >= context {
        let advice = if request.max_new_tokens >= context {
            "lower --max-new-tokens"
        } else {
            "shorten the prompt"
        };
        return Err(GenerateError::Setting(format!(
            "the prompt's text is {text} tokens and {} new tokens were asked for, but the \
             model's context is {context} positions; {advice}",
            request.max_new_tokens
        )));
    }
    if n + request.max_new_tokens > context {
        let (h, w) = pixels.resized_hw;
        return Err(GenerateError::Setting(format!(
            "the image becomes {tokens} image tokens ({w}x{h} pixels) and the prompt {n} tokens, \
             which with {} new tokens is more than the model's context of {context} positions; \
             lower --max-pixels (now {}) to use fewer image tokens",
            request.max_new_tokens, cfg.max_pixels
        )));
    }
    Ok((pixels, encoded, cfg))
}

/// The resized picture as `[3, h, w]` normalised planes (what the session stores).
fn picture(cfg: &QwenImageConfig, px: &QwenPixels) -> Option<Array> {
    let (h, w) = px.resized_hw;
    let plane = h * w;
    let mut data = vec![0f32; 3 * plane];
    for (i, rgb) in px.resized_rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane + i] = cfg.value(rgb[c], c);
        }
    }
    Array::new(vec![3, h, w], data)
}

/// Generate an answer for one image and prompt with a loaded Qwen VL model.
pub fn generate(
    loaded: &QwenLoaded,
    image: &image::DynamicImage,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, GenerateError> {
    Ok(Conversation::start(loaded, image, request, cancel, on_progress)?.into_session())
}

/// The identity and sizes of a Qwen VL model.
pub(super) fn shape(loaded: &QwenLoaded) -> ModelShape {
    let model = &loaded.model;
    let mcfg = model.config();
    let (decoder, vision) = match mcfg.variant {
        QwenVlVariant::Qwen2Vl => ("qwen2_vl_text", "qwen2_vl_vision"),
        QwenVlVariant::Qwen25Vl => ("qwen2_5_vl_text", "qwen2_5_vl_vision"),
    };
    ModelShape {
        architecture: mcfg.architecture.clone(),
        text_layers: model.num_layers(),
        text_heads: model.num_heads(),
        vision_layers: mcfg.vision_config.depth,
        vision_heads: mcfg.vision_config.num_heads,
        family: ModelFamily {
            decoder: decoder.into(),
            vision: vision.into(),
        },
    }
}

/// Image tokens `image` becomes under `request`'s pixel budget.
pub(super) fn image_tokens(
    loaded: &QwenLoaded,
    image: &image::DynamicImage,
    request: &RunRequest,
) -> Result<usize, GenerateError> {
    let cfg = image_config(loaded, request);
    Ok(cfg.preprocess(image)?.num_tokens(cfg.merge_size))
}

/// [`super::pipeline::Pipeline::see`] of a Qwen VL model: one image region, the merged grid
/// `[rows, cols]`, over the whole image, and the tower's attention kept as the attention each
/// patch receives ([`vision_attention`]).
pub(super) fn see(
    loaded: &QwenLoaded,
    image: &image::DynamicImage,
    request: &RunRequest,
    run: &mut Decoding,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(Seen, EncodedPrompt), GenerateError> {
    let model = &loaded.model;
    let (pixels, encoded, cfg) = prepare(loaded, image, request)?;
    vision_rows::keep_rows(run, VisionRow::Received);
    encode_image(run, on_progress, |recorder| {
        let upload = Stage::new(tracing::info_span!("upload"), model.device());
        let tensor = Tensor::from_vec(
            pixels.data.clone(),
            (pixels.num_patches, pixels.patch_len),
            model.device(),
        )?;
        drop(upload);
        Ok(model
            .image_features(&tensor, pixels.grid_thw, recorder)?
            .features)
    })?;
    let grid = pixels.merged_grid(cfg.merge_size);
    let region = ImageRegion {
        kind: RegionKind::Image,
        span: encoded.image_span,
        grid,
        rect: [0.0, 0.0, image.width() as f64, image.height() as f64],
        separators: Vec::new(),
    };
    let pixel_values = picture(&cfg, &pixels)
        .ok_or_else(|| GenerateError::Setting("pixel values do not match their shape".into()))?;
    let seen = Seen {
        tokens: encoded.image_span[1],
        grid: Some(grid),
        image_span: encoded.image_span,
        regions: vec![region],
        pixel_values,
        image_mode: "native".into(),
        original_size: [image.width(), image.height()],
        shape: shape(loaded),
        vision_attention: false,
        vision_views: vision_attention(loaded, &run.recorder, pixels.grid_thw),
    };
    Ok((seen, encoded))
}

/// The tower's attention `recorder` kept of one image of `grid_thw` patches: per layer and
/// head, the attention each patch receives, averaged over the query patches that can see it
/// (all of them, or in Qwen2.5-VL's window layers the patch's window: the recorder takes each
/// window's column means as the block runs window by window), in the processor's patch order;
/// a merged cell takes the mean of its `merge²` patches, as the features do.
fn vision_attention(
    loaded: &QwenLoaded,
    recorder: &AttentionRecorder,
    grid_thw: [usize; 3],
) -> Option<(VisionInfo, VisionViews)> {
    let [_, gh, gw] = grid_thw;
    let patches = gh * gw;
    let group = loaded.images.merge_size.pow(2);
    let placement = vision_rows::grouped_placement(patches / group, group);
    vision_rows::kept_views(recorder, 1, patches, VisionRow::Received, placement)
}

/// The image features of a session's picture (cut into patches again; checked against the
/// manifest's grid).
pub(super) fn session_features(
    loaded: &QwenLoaded,
    session: &Session,
) -> Result<Tensor, GenerateError> {
    let (pixel_values, grid) = session_patches(loaded, session)?;
    Ok(loaded
        .model
        .image_features(&pixel_values, grid, &mut NoTape)?
        .features)
}

/// A session's picture cut into patches `[P, patch_len]` again, and its `[t, h, w]` grid,
/// checked against the manifest's merged grid.
fn session_patches(
    loaded: &QwenLoaded,
    session: &Session,
) -> Result<(Tensor, [usize; 3]), GenerateError> {
    let px = &session.pixel_values;
    let [3, h, w] = px.shape[..] else {
        return Err(GenerateError::Setting(format!(
            "the session's picture has shape {:?}, not [3, h, w]",
            px.shape
        )));
    };
    let (patches, grid) = loaded.images.patches_of_picture(&px.data, h, w)?;
    let m = loaded.images.merge_size;
    if [grid[1] / m, grid[2] / m] != session.manifest.model.image_grid {
        return Err(GenerateError::Setting(format!(
            "the session's picture gives a {}x{} grid but its manifest says {:?}",
            grid[1] / m,
            grid[2] / m,
            session.manifest.model.image_grid
        )));
    }
    let patch_len = loaded.images.patch_len();
    let pixel_values = Tensor::from_vec(
        patches,
        (grid[1] * grid[2], patch_len),
        loaded.model.device(),
    )?;
    Ok((pixel_values, grid))
}

/// Relevancy of output tokens `tokens` of a session `generate` made with `loaded`, in the
/// session's layout: `llm` rows over the positions, `vit` and `combined` over the merged grid
/// (row-major), each merged token holding the mean of its patches' values (the tracked pass
/// computes them per patch, in the processor's order).
#[tracing::instrument(name = "relevancy", skip_all, fields(tokens = tokens.len()))]
pub fn relevancy_maps(
    loaded: &QwenLoaded,
    session: &Session,
    tokens: &[usize],
    on_token: &mut dyn FnMut(usize),
) -> Result<RelevancyMaps, GenerateError> {
    let start = Instant::now();
    let model = &loaded.model;
    let (pixel_values, grid) = session_patches(loaded, session)?;
    let m = loaded.images.merge_size;
    let ids = |v: &[i64]| v.iter().map(|&i| i as u32).collect::<Vec<_>>();
    let (input, output) = (ids(&session.input_ids), ids(&session.output_ids));
    let pass = QwenTrackedPass::forward(model, &input, &output, &pixel_values, grid)?;
    let group = m * m;
    let merge = |row: Vec<f32>| -> Vec<f32> {
        row.chunks(group)
            .map(|c| c.iter().sum::<f32>() / group as f32)
            .collect()
    };
    let mut maps = RelevancyMaps::default();
    for chunk in tokens.chunks(RELEVANCY_CHUNK) {
        for row in pass.relevancy(chunk, RELEVANCY_CHUNK)? {
            on_token(row.token);
            maps.tokens.push(row.token);
            maps.llm.push(row.llm);
            maps.vit.push(merge(row.vit));
            maps.combined.push(merge(row.combined));
        }
    }
    maps.seconds = start.elapsed().as_secs_f64();
    Ok(maps)
}

/// Output tokens carried by one backward of the Qwen relevancy pass.
const RELEVANCY_CHUNK: usize = 4;
