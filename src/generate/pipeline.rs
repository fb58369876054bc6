//! What differs between the pipelines of a run, behind one type: [`Pipeline`] (a loaded
//! LLaVA-style, Qwen VL or LLaVA-NeXT / OneVision model) turns an image into image features and
//! a [`Seen`] (what the session records of the image: regions, picture, shape), and gives the
//! decoder ([`TextModel`]) that runs a prompt. Everything else of a run — the prompt through the
//! chat template, prefill, decoding, the session — is written once, in
//! [`super::conversation::Conversation`]; [`super::generate`], [`super::qwen::generate`] and
//! [`super::anyres::generate`] are its first turn.

use std::time::Instant;

use candle_core::Tensor;

use super::anyres::AnyresLoaded;
use super::qwen::QwenLoaded;
use super::{
    vision_rows, Decoding, GenerateError, LoadedModel, ModelShape, Progress, RunRequest,
    SessionBuilder, TextModel,
};
use crate::model::AttentionRecorder;
use crate::processing::{EncodedPrompt, PromptProcessor};
use crate::session::{
    Array, ImageRegion, ModelFamily, RegionKind, Session, VisionAttention, VisionInfo, VisionViews,
};
use crate::trace::Stage;

/// A loaded model of one of the pipelines.
#[derive(Clone, Copy)]
pub enum Pipeline<'a> {
    /// LLaVA-1.5 and the LLaVA-style families.
    Llava(&'a LoadedModel),
    /// Qwen2-VL or Qwen2.5-VL.
    Qwen(&'a QwenLoaded),
    /// LLaVA-NeXT or LLaVA-OneVision.
    Anyres(&'a AnyresLoaded),
}

/// A loaded model a run can go through (one of the pipelines, or a type holding one).
pub trait Talker {
    /// The model as one of the pipelines.
    fn pipeline(&self) -> Pipeline<'_>;
}

impl Talker for LoadedModel {
    fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::Llava(self)
    }
}

impl Talker for QwenLoaded {
    fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::Qwen(self)
    }
}

impl Talker for AnyresLoaded {
    fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::Anyres(self)
    }
}

/// The image of a run as the model saw it and as its sessions record it; the same in every
/// turn of a conversation.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Image tokens the prompt's image placeholder becomes.
    pub tokens: usize,
    /// Qwen VL: the merged grid `[rows, cols]` the M-RoPE positions follow.
    pub grid: Option<[usize; 2]>,
    /// Input positions of the image tokens, `[start, len]`.
    pub image_span: [usize; 2],
    /// The image regions in input order.
    pub regions: Vec<ImageRegion>,
    /// The picture the session shows, `[3, h, w]`.
    pub pixel_values: Array,
    /// How the image was fitted (`default`, `native`, `anyres`, ...).
    pub image_mode: String,
    /// `[width, height]` of the original image.
    pub original_size: [u32; 2],
    /// The model's identity and sizes.
    pub shape: ModelShape,
    /// Whether the recorded vision attention is over the regions' cells (and so stored).
    pub vision_attention: bool,
    /// An anyres image's vision attention kept per view, with its placement on the regions.
    pub vision_views: Option<(VisionInfo, VisionViews)>,
}

impl Seen {
    /// The session of a turn whose input was `encoded` and whose decoding state is `run`.
    pub fn session(
        &self,
        model: Pipeline<'_>,
        request: &RunRequest,
        encoded: EncodedPrompt,
        run: &Decoding,
    ) -> Session {
        let builder = SessionBuilder {
            model_name: model.name(),
            shape: self.shape.clone(),
            request,
            image_mode: self.image_mode.clone(),
            original_size: self.original_size,
            encoded,
            regions: self.regions.clone(),
            pixel_values: self.pixel_values.clone(),
            output: run.output.clone(),
            timings: run.timings.clone(),
        };
        let mut session = builder.build(model.prompts(), &run.recorder, self.vision_attention);
        if let Some((info, views)) = &self.vision_views {
            session.manifest.vision_attention = Some(*info);
            session.attn_vit = Some(VisionAttention::Views(views.clone()));
        }
        session
    }
}

/// Refuses a prompt of `prompt` positions that with `new` tokens passes `context`.
pub fn check_context(prompt: usize, new: usize, context: usize) -> Result<(), GenerateError> {
    if prompt + new > context {
        return Err(GenerateError::TooLong {
            prompt,
            new,
            context,
        });
    }
    Ok(())
}

/// Runs the vision side as the "encoding image" stage of `run`: `features` computes the image
/// features with the recorder; they are kept in `run`.
pub fn encode_image(
    run: &mut Decoding,
    on_progress: &mut dyn FnMut(Progress),
    features: impl FnOnce(&mut AttentionRecorder) -> Result<Tensor, GenerateError>,
) -> Result<(), GenerateError> {
    on_progress(Progress::Stage("encoding image".into()));
    let _span = tracing::info_span!("encode_image").entered();
    let clock = Instant::now();
    run.features = Some(features(&mut run.recorder)?);
    run.timings
        .insert("encode_image".into(), clock.elapsed().as_secs_f64());
    Ok(())
}

impl<'a> Pipeline<'a> {
    /// What the user named the model.
    pub fn name(self) -> &'a str {
        match self {
            Self::Llava(m) => &m.name,
            Self::Qwen(m) => &m.name,
            Self::Anyres(m) => &m.name,
        }
    }

    /// The chat template and tokenizer.
    pub fn prompts(self) -> &'a PromptProcessor {
        match self {
            Self::Llava(m) => &m.prompts,
            Self::Qwen(m) => &m.prompts,
            Self::Anyres(m) => &m.prompts,
        }
    }

    /// The decoder's maximum positions.
    pub fn context(self) -> usize {
        match self {
            Self::Llava(m) => m.model.config().text_config.max_position_embeddings,
            Self::Qwen(m) => m.model.config().text_config.max_position_embeddings,
            Self::Anyres(m) => m.model.llava().config().text_config.max_position_embeddings,
        }
    }

    /// Decoder layers.
    pub fn num_layers(self) -> usize {
        match self {
            Self::Llava(m) => m.model.num_layers(),
            Self::Qwen(m) => m.model.num_layers(),
            Self::Anyres(m) => m.model.llava().num_layers(),
        }
    }

    /// The first turn's preparation: preprocess `image`, render and tokenise `request.prompt`,
    /// check the context, then encode the image into `run` (its features and timing).
    pub fn see(
        self,
        image: &image::DynamicImage,
        request: &RunRequest,
        run: &mut Decoding,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<(Seen, EncodedPrompt), GenerateError> {
        match self {
            Self::Llava(m) => see_llava(m, image, request, run, on_progress),
            Self::Qwen(m) => super::qwen::see(m, image, request, run, on_progress),
            Self::Anyres(m) => super::anyres::see(m, image, request, run, on_progress),
        }
    }

    /// The image of `session` (made by this model) as the session records it; its features
    /// come later, from [`Pipeline::session_features`].
    pub fn see_session(self, session: &Session) -> Result<Seen, GenerateError> {
        let m = &session.manifest;
        let grid = match self {
            Self::Qwen(_) => Some(m.model.image_grid),
            _ => None,
        };
        Ok(Seen {
            tokens: m.image_span[1],
            grid,
            image_span: m.image_span,
            regions: session.regions().into_owned(),
            pixel_values: session.pixel_values.clone(),
            image_mode: m.image.mode.clone(),
            original_size: m.image.original_size,
            shape: self.shape(),
            vision_attention: matches!(self, Self::Llava(_)),
            vision_views: match (&session.attn_vit, m.vision_attention) {
                (Some(VisionAttention::Views(views)), Some(info)) => Some((info, views.clone())),
                _ => None,
            },
        })
    }

    /// The image features of `session` (made by this model), computed again from its picture
    /// (a LLaVA-NeXT / OneVision model re-reads the original image).
    pub fn session_features(
        self,
        session: &Session,
        recorder: &mut AttentionRecorder,
    ) -> Result<Tensor, GenerateError> {
        Ok(match self {
            Self::Llava(loaded) => {
                let [c, h, w] = session.pixel_values.shape[..] else {
                    return Err(GenerateError::Setting(
                        "the session's pixel values are not one [3, h, w] image".into(),
                    ));
                };
                let model = &loaded.model;
                let pixels = Tensor::from_vec(
                    session.pixel_values.data.clone(),
                    (1, c, h, w),
                    model.device(),
                )?;
                model.image_features(&pixels, recorder)?
            }
            Self::Qwen(loaded) => super::qwen::session_features(loaded, session)?,
            Self::Anyres(loaded) => super::anyres::session_features(loaded, session)?,
        })
    }

    /// Image tokens `image` becomes in a prompt, without running the model.
    pub fn image_tokens(
        self,
        image: &image::DynamicImage,
        request: &RunRequest,
    ) -> Result<usize, GenerateError> {
        match self {
            Self::Llava(m) => Ok(m.model.num_image_features()),
            Self::Qwen(m) => super::qwen::image_tokens(m, image, request),
            Self::Anyres(m) => Ok(m.images.preprocess(image)?.layout.num_tokens()),
        }
    }

    /// The decoder running the prompt `ids` (Qwen VL: with the M-RoPE positions of `ids`, as
    /// transformers' `get_rope_index` computes them for the whole sequence).
    pub fn text(self, seen: &Seen, ids: &[u32]) -> Result<TextModel<'a>, GenerateError> {
        Ok(match self {
            Self::Llava(m) => TextModel::Llava(&m.model),
            Self::Anyres(m) => TextModel::Llava(m.model.llava()),
            Self::Qwen(m) => {
                let grid = seen.grid.ok_or_else(|| {
                    GenerateError::Setting("a Qwen VL image has no merged grid".into())
                })?;
                TextModel::Qwen(&m.model, m.model.positions(ids, &[grid])?)
            }
        })
    }

    /// The model's identity and sizes.
    pub fn shape(self) -> ModelShape {
        match self {
            Self::Llava(m) => llava_shape(&m.model),
            Self::Anyres(m) => llava_shape(m.model.llava()),
            Self::Qwen(m) => super::qwen::shape(m),
        }
    }
}

/// The identity and sizes of a LLaVA-style model.
fn llava_shape(model: &crate::model::Llava) -> ModelShape {
    let cfg = model.config();
    ModelShape {
        architecture: cfg.architecture.clone(),
        text_layers: model.num_layers(),
        text_heads: model.num_heads(),
        vision_layers: cfg.vision_config.num_hidden_layers,
        vision_heads: cfg.vision_config.num_attention_heads,
        family: ModelFamily {
            decoder: cfg.text_config.family.as_str().into(),
            vision: cfg.vision_config.family.as_str().into(),
        },
    }
}

/// [`Pipeline::see`] of a LLaVA-style model: the image is one region, the grid's patches (after
/// a CLS feature when the span holds one), over the part of the image the pixel values show.
fn see_llava(
    loaded: &LoadedModel,
    image: &image::DynamicImage,
    request: &RunRequest,
    run: &mut Decoding,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(Seen, EncodedPrompt), GenerateError> {
    let model = &loaded.model;
    let pixels = loaded.images.preprocess(image, request.image_mode)?;
    let tokens = model.num_image_features();
    let encoded = loaded.prompts.encode(&request.prompt, tokens)?;
    check_context(
        encoded.ids.len(),
        request.max_new_tokens,
        model.config().text_config.max_position_embeddings,
    )?;
    let [c, h, w] = pixels.shape;
    // The tower's attention is kept as one row a head (docs/design.md, "Session file").
    let row = vision_rows::vision_row(model.vision().spec().class_token);
    vision_rows::keep_rows(run, row);
    encode_image(run, on_progress, |recorder| {
        let upload = Stage::new(tracing::info_span!("upload"), model.device());
        let tensor = Tensor::from_vec(pixels.data.clone(), (1, c, h, w), model.device())?;
        drop(upload);
        Ok(model.image_features(&tensor, recorder)?)
    })?;
    let [start, len] = encoded.image_span;
    let grid = model.image_grid();
    let cells = grid[0] * grid[1];
    let (width, height) = (image.width(), image.height());
    let region = ImageRegion {
        kind: RegionKind::Image,
        span: [start + len.saturating_sub(cells), cells.min(len)],
        grid,
        rect: loaded
            .images
            .covered_rect(width, height, request.image_mode),
        separators: Vec::new(),
    };
    let pixel_values = Array::new(vec![c, h, w], pixels.data)
        .ok_or_else(|| GenerateError::Setting("pixel values do not match their shape".into()))?;
    let seen = Seen {
        tokens,
        grid: None,
        image_span: encoded.image_span,
        regions: vec![region],
        pixel_values,
        image_mode: request.image_mode.to_string(),
        original_size: [width, height],
        shape: llava_shape(model),
        vision_attention: true,
        // One view; a cell is its patch (the class token's column, if any, is not kept).
        vision_views: vision_rows::kept_views(
            &run.recorder,
            1,
            cells,
            row,
            vision_rows::grouped_placement(cells, 1),
        ),
    };
    Ok((seen, encoded))
}
