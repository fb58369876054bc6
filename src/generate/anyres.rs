//! Generation with a LLaVA-NeXT / LLaVA-OneVision model: the image becomes a base view and
//! tiles ([`AnyresImageConfig`]), the prompt's image token is expanded to the layout's token
//! count, the packed features are embedded like LLaVA's and the decoder runs through the same
//! prefill / decode stages as LLaVA-1.5 ([`super::Decoding`], through
//! [`super::pipeline::Pipeline`]).
//!
//! The session stores the image as fitted into the canvas (aspect kept, no padding) and two
//! image regions over it ([`regions`]): `Base`, the base view's grid, and `Highres`, the
//! stitched high-resolution grid, whose newline tokens are separators.

mod views;

pub use views::{place, placement, vision_views};

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::conversation::Conversation;
use super::pipeline::{check_context, encode_image, Seen};
use super::{vision_rows, Decoding, GenerateError, Progress, RunRequest};
use crate::explain::relevancy::RelevancyMaps;
use crate::model::config::AnyresConfig;
use crate::model::tracked::{AnyresRows, AnyresTrackedPass};
use crate::model::{LlavaNext, ModelDir, NoTape};
use crate::processing::anyres::{AnyresImageConfig, AnyresLayout};
use crate::processing::{EncodedPrompt, PromptProcessor};
use crate::session::{Array, ImageRegion, RegionKind, Session};
use crate::trace::Stage;

/// A LLaVA-NeXT / OneVision model with its preprocessors.
pub struct AnyresLoaded {
    /// What the user named the model.
    pub name: String,
    /// The resolved folder.
    pub dir: ModelDir,
    /// The network.
    pub model: LlavaNext,
    /// The image processor.
    pub images: AnyresImageConfig,
    /// Chat template and tokenizer.
    pub prompts: PromptProcessor,
}

impl AnyresLoaded {
    /// Load a resolved anyres folder.
    pub fn load(
        name: &str,
        dir: ModelDir,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, GenerateError> {
        // The config is read before anything else, so an unsupported one is named first.
        let cfg = AnyresConfig::from_file(&dir.config)?;
        let prompts = PromptProcessor::from_dir(&dir.root)?;
        let model = LlavaNext::load(&dir, dtype, device)?;
        let images =
            AnyresImageConfig::from_dir(&dir.root, &cfg.image_grid_pinpoints, model.token_rule())?;
        if images.rule.side != model.token_rule().side {
            return Err(GenerateError::Setting(format!(
                "the processor gives {0}x{0} features a tile but the vision tower {1}x{1}",
                images.rule.side,
                model.token_rule().side
            )));
        }
        let llava = model.config();
        prompts.check_vocab(
            llava.llava.text_config.vocab_size,
            llava.llava.image_token_index,
        )?;
        Ok(Self {
            name: name.to_string(),
            dir,
            model,
            images,
            prompts,
        })
    }
}

/// Whether the model folder `dir` holds a LLaVA-NeXT or LLaVA-OneVision model.
pub fn is_anyres(dir: &ModelDir) -> bool {
    std::fs::read_to_string(&dir.config)
        .ok()
        .and_then(|t| AnyresConfig::variant_of(&t))
        .is_some()
}

/// The two regions of an anyres image whose tokens start at input position `start`: the base
/// view (the whole image) then the stitched grid with its newline separators.
pub fn regions(layout: &AnyresLayout, start: usize) -> [ImageRegion; 2] {
    let side = layout.rule.side;
    let [h, w] = layout.image_hw;
    let base = ImageRegion {
        kind: RegionKind::Base,
        span: [start, layout.rule.base],
        grid: [side, side],
        rect: [0.0, 0.0, w as f64, h as f64],
        separators: Vec::new(),
    };
    let hi_start = start + layout.rule.base;
    let highres = ImageRegion {
        kind: RegionKind::Highres,
        span: [hi_start, layout.num_tokens() - layout.rule.base],
        grid: layout.grid,
        rect: layout.highres_rect(),
        separators: layout
            .newline_offsets()
            .into_iter()
            .map(|o| start + o)
            .collect(),
    };
    [base, highres]
}

/// Generate an answer for one image and prompt with a loaded anyres model.
pub fn generate(
    loaded: &AnyresLoaded,
    image: &image::DynamicImage,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, GenerateError> {
    Ok(Conversation::start(loaded, image, request, cancel, on_progress)?.into_session())
}

/// [`super::pipeline::Pipeline::see`] of an anyres model: the base view and the tiles encoded,
/// the image fitted into the canvas as the picture, the base and high-resolution regions, and
/// the tower's attention kept per view ([`vision_views`]).
pub(super) fn see(
    loaded: &AnyresLoaded,
    image: &image::DynamicImage,
    request: &RunRequest,
    run: &mut Decoding,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(Seen, EncodedPrompt), GenerateError> {
    let model = &loaded.model;
    let llava = model.llava();
    let pixels = loaded.images.preprocess(image)?;
    let layout = &pixels.layout;
    let tokens = layout.num_tokens();
    let encoded = loaded.prompts.encode(&request.prompt, tokens)?;
    check_context(
        encoded.ids.len(),
        request.max_new_tokens,
        llava.config().text_config.max_position_embeddings,
    )?;
    // The tower's attention is kept as one row a head per view (docs/design.md, "Session
    // file"), placed on the regions' cells as the features are.
    let row = vision_rows::vision_row(llava.vision().spec().class_token);
    vision_rows::keep_rows(run, row);
    encode_image(run, on_progress, |recorder| {
        let upload = Stage::new(tracing::info_span!("upload"), llava.device());
        let tensor = Tensor::from_vec(pixels.data.clone(), pixels.shape.to_vec(), llava.device())?;
        drop(upload);
        Ok(model.image_features(&tensor, layout, recorder)?)
    })?;
    let seen = Seen {
        tokens,
        grid: None,
        image_span: encoded.image_span,
        regions: regions(layout, encoded.image_span[0]).to_vec(),
        pixel_values: Array::new(pixels.fitted.shape.to_vec(), pixels.fitted.data).ok_or_else(
            || GenerateError::Setting("pixel values do not match their shape".into()),
        )?,
        image_mode: "anyres".into(),
        original_size: [image.width(), image.height()],
        shape: super::pipeline::Pipeline::Anyres(loaded).shape(),
        vision_attention: false,
        vision_views: vision_views(&run.recorder, layout, row),
    };
    Ok((seen, encoded))
}

/// The image features of a session `generate` made with `loaded`, from its original image
/// (read back and checked, [`session_image`]).
pub(super) fn session_features(
    loaded: &AnyresLoaded,
    session: &Session,
) -> Result<Tensor, GenerateError> {
    let image = session_image(loaded, session)?;
    let pixels = loaded.images.preprocess(&image)?;
    let llava = loaded.model.llava();
    let tensor = Tensor::from_vec(pixels.data, pixels.shape.to_vec(), llava.device())?;
    Ok(loaded
        .model
        .image_features(&tensor, &pixels.layout, &mut NoTape)?)
}

/// Output tokens carried by one decoder backward of the anyres relevancy pass.
const RELEVANCY_CHUNK: usize = 4;

/// Relevancy of output tokens `tokens` of a session `generate` made with `loaded` from
/// `image`: `llm` rows over the positions; `vit` and `combined` per view, placed on the cells
/// of the regions `kinds` (see [`place`]).
#[tracing::instrument(name = "relevancy", skip_all, fields(tokens = tokens.len()))]
pub fn relevancy_maps(
    loaded: &AnyresLoaded,
    image: &image::DynamicImage,
    session: &Session,
    kinds: &[RegionKind],
    tokens: &[usize],
    on_token: &mut dyn FnMut(usize),
) -> Result<RelevancyMaps, GenerateError> {
    let start = Instant::now();
    let model = &loaded.model;
    let pixels = loaded.images.preprocess(image)?;
    let pv = Tensor::from_vec(
        pixels.data.clone(),
        pixels.shape.to_vec(),
        model.llava().device(),
    )?;
    let ids = |v: &[i64]| v.iter().map(|&i| i as u32).collect::<Vec<_>>();
    let (input, output) = (ids(&session.input_ids), ids(&session.output_ids));
    let pass = AnyresTrackedPass::forward(model, &input, &output, &pv, &pixels.layout)?;
    let mut maps = RelevancyMaps::default();
    for chunk in tokens.chunks(RELEVANCY_CHUNK) {
        for row in pass.relevancy(chunk, RELEVANCY_CHUNK)? {
            let AnyresRows {
                token,
                llm,
                vit,
                combined,
                class_token,
            } = row;
            on_token(token);
            maps.tokens.push(token);
            maps.llm.push(llm);
            maps.vit
                .push(place(&vit, class_token, &pixels.layout, kinds));
            maps.combined
                .push(place(&combined, class_token, &pixels.layout, kinds));
        }
    }
    maps.seconds = start.elapsed().as_secs_f64();
    Ok(maps)
}

/// The original image a session `generate` made with `loaded` was made from, read back from the
/// manifest's image path and checked against the session: its size, and the fitted picture the
/// session stores (so an edited or replaced file is refused rather than explained).
pub fn session_image(
    loaded: &AnyresLoaded,
    session: &Session,
) -> Result<image::DynamicImage, GenerateError> {
    let info = &session.manifest.image;
    let image = crate::processing::load_image(std::path::Path::new(&info.path)).map_err(|e| {
        GenerateError::SessionImage(format!(
            "a LLaVA-NeXT / OneVision session is re-read from its original image, which cannot \
             be read: {e}"
        ))
    })?;
    let [w, h] = info.original_size;
    if [image.width(), image.height()] != info.original_size {
        return Err(GenerateError::SessionImage(format!(
            "the image {} is {}x{} pixels, but the session was made from a {w}x{h} image",
            info.path,
            image.width(),
            image.height()
        )));
    }
    let fitted = loaded.images.preprocess(&image)?.fitted;
    let stored = &session.pixel_values;
    let same = stored.shape == fitted.shape.to_vec()
        && stored
            .data
            .iter()
            .zip(&fitted.data)
            .all(|(a, b)| (a - b).abs() <= 1e-5);
    if !same {
        return Err(GenerateError::SessionImage(format!(
            "the image {} is not the one the session was made from (its pixels differ)",
            info.path
        )));
    }
    Ok(image)
}

/// `image` as `[3, height, width]` planes of its RGB values scaled to [0, 1] (after the
/// processor's RGB conversion): the picture deletion experiments blank cells in.
pub fn picture_of(loaded: &AnyresLoaded, image: &image::DynamicImage) -> Array {
    let rgb = crate::processing::image::to_rgb(image, loaded.images.images.config().do_convert_rgb);
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            data[c * h * w + i] = f32::from(p.0[c]) / 255.0;
        }
    }
    Array {
        shape: vec![3, h, w],
        data,
    }
}

/// The image a [`picture_of`] picture `[3, h, w]` shows (values rounded to 8 bits).
fn image_of_picture(
    picture: &[f32],
    h: usize,
    w: usize,
) -> candle_core::Result<image::DynamicImage> {
    if picture.len() != 3 * h * w {
        candle_core::bail!(
            "a picture of {} values is not 3 planes of {h}x{w} pixels",
            picture.len()
        );
    }
    let mut rgb = vec![0u8; 3 * h * w];
    for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
        for (c, v) in px.iter_mut().enumerate() {
            *v = (picture[c * h * w + i] * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    image::RgbImage::from_raw(w as u32, h as u32, rgb)
        .map(image::DynamicImage::ImageRgb8)
        .ok_or_else(|| candle_core::Error::Msg(format!("no {w}x{h} image")))
}

/// Logits of the token after `ids` (the prompt `ids[..n_input]`, its image tokens taking the
/// picture's features, then generated tokens), one row per picture: each picture (a
/// [`picture_of`] picture of `hw` pixels) goes through the whole anyres processor (base view
/// and tiles), the tower runs once over every picture's views, the decoder once over the batch.
pub fn next_token_logits(
    loaded: &AnyresLoaded,
    ids: &[u32],
    n_input: usize,
    pictures: &[Vec<f32>],
    (h, w): (usize, usize),
) -> candle_core::Result<Vec<Vec<f32>>> {
    let llava = loaded.model.llava();
    let mut data = Vec::new();
    let mut shape = None;
    let mut layout = None;
    for picture in pictures {
        let px = loaded
            .images
            .preprocess(&image_of_picture(picture, h, w)?)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        shape.get_or_insert(px.shape);
        layout.get_or_insert(px.layout);
        data.extend(px.data);
    }
    let (Some([v, c, th, tw]), Some(layout)) = (shape, layout) else {
        return Ok(Vec::new());
    };
    let views = Tensor::from_vec(data, (pictures.len() * v, c, th, tw), llava.device())?;
    let features = loaded.model.view_features(&views, &mut NoTape)?;
    let embeds = (0..pictures.len())
        .map(|b| {
            let packed = loaded.model.pack(&features.narrow(0, b * v, v)?, &layout)?;
            llava.embed_sequence(ids, n_input, Some(&packed))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let embeds = Tensor::cat(&embeds, 0)?;
    let mut cache = llava.new_cache();
    let logits = llava.forward(&embeds, 0, &mut cache, &mut NoTape, false)?;
    logits.squeeze(1)?.to_vec2()
}
