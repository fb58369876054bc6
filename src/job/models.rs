//! The model a session was made with, whichever pipeline made it: the LLaVA family
//! ([`LoadedModel`]), Qwen2-VL / Qwen2.5-VL ([`QwenLoaded`]) or LLaVA-NeXT / OneVision
//! ([`AnyresLoaded`]). Model-backed jobs on saved sessions (relevancy on demand, faithfulness)
//! and `batch` go through this one type, so the app, `report` and `batch` serve every kind of
//! session the same way.

use candle_core::{DType, Device, Tensor};

use crate::explain::faithfulness::{scored_region, Deletion, PictureScorer};
use crate::explain::knockout::Replayer;
use crate::explain::relevancy::{self, RelevancyMaps};
use crate::generate::anyres::{self, AnyresLoaded};
use crate::generate::pipeline::{Pipeline, Talker};
use crate::generate::qwen::{self, QwenLoaded};
use crate::generate::{GenerateError, LoadedModel, Progress, RunRequest};
use crate::model::randomize::Randomize;
use crate::model::{Llava, LlavaNext, ModelDir, NoTape, QwenVl};
use crate::processing::PromptProcessor;
use crate::session::{RegionKind, Session};

use super::service::{JobProgress, ModelSpec, ServiceError};

/// A loaded model of either pipeline.
pub enum SessionModel {
    /// LLaVA-1.5 and the LLaVA-style families (Gemma, Mistral, Qwen2 decoders; CLIP, SigLIP).
    Llava(LoadedModel),
    /// Qwen2-VL or Qwen2.5-VL.
    Qwen(QwenLoaded),
    /// LLaVA-NeXT or LLaVA-OneVision.
    Anyres(Box<AnyresLoaded>),
}

impl SessionModel {
    /// Loads the model `spec` names, choosing the pipeline from its config.json.
    #[tracing::instrument(name = "load_model", skip_all, fields(model = %spec.path))]
    pub fn load(spec: &ModelSpec, device: &Device) -> Result<Self, GenerateError> {
        Self::load_path(&spec.path, spec.dtype, device)
    }

    /// Loads the model folder or id `path` in `dtype` on `device`, choosing the pipeline from
    /// its config.json.
    pub fn load_path(path: &str, dtype: DType, device: &Device) -> Result<Self, GenerateError> {
        let dir = ModelDir::resolve(path)?;
        if qwen::is_qwen_vl(&dir) {
            return Ok(Self::Qwen(QwenLoaded::load(path, dir, dtype, device)?));
        }
        if anyres::is_anyres(&dir) {
            return Ok(Self::Anyres(Box::new(AnyresLoaded::load(
                path, dir, dtype, device,
            )?)));
        }
        Ok(Self::Llava(LoadedModel::load(path, dtype, device)?))
    }

    /// Decoder layers and heads.
    pub fn decoder_shape(&self) -> (usize, usize) {
        match self {
            Self::Llava(m) => (m.model.num_layers(), m.model.num_heads()),
            Self::Qwen(m) => (m.model.num_layers(), m.model.num_heads()),
            Self::Anyres(m) => (m.model.llava().num_layers(), m.model.llava().num_heads()),
        }
    }

    /// What knockouts and the logit lens re-run the session's positions with.
    pub fn replayer(&self) -> &dyn Replayer {
        match self {
            Self::Llava(m) => &m.model,
            Self::Qwen(m) => m,
            Self::Anyres(m) => m.as_ref(),
        }
    }

    /// The chat template and tokenizer.
    pub fn prompts(&self) -> &PromptProcessor {
        match self {
            Self::Llava(m) => &m.prompts,
            Self::Qwen(m) => &m.prompts,
            Self::Anyres(m) => &m.prompts,
        }
    }

    /// What deletion experiments run on.
    pub fn scorer(&self) -> &dyn PictureScorer {
        match self {
            Self::Llava(m) => &m.model,
            Self::Qwen(m) => m,
            Self::Anyres(m) => m.as_ref(),
        }
    }

    /// Deletion experiments on output token `token` of `session`, scoring the cells of `region`
    /// (`None`: [`scored_region`], the high-resolution grid of an anyres session, else every
    /// cell). LLaVA and Qwen VL models re-read the session's pixel values with cells greyed; a
    /// LLaVA-NeXT / OneVision model re-reads the original image (read back from the session's
    /// image path) with the cells' rectangles blanked, through its whole processor.
    pub fn deletion<'a>(
        &'a self,
        session: &Session,
        token: usize,
        region: Option<RegionKind>,
    ) -> Result<Deletion<'a>, ServiceError> {
        self.deletion_inner(session, None, token, region)
    }

    /// [`SessionModel::deletion`] with the original image given rather than read back from the
    /// session's image path (a LLaVA-NeXT / OneVision model blanks cells in it; the other
    /// pipelines re-read the session's pixel values and ignore it): `eval` deletes cells of
    /// scenes it made in memory.
    pub fn deletion_of_image<'a>(
        &'a self,
        session: &Session,
        original: &image::DynamicImage,
        token: usize,
        region: Option<RegionKind>,
    ) -> Result<Deletion<'a>, ServiceError> {
        self.deletion_inner(session, Some(original), token, region)
    }

    fn deletion_inner<'a>(
        &'a self,
        session: &Session,
        original: Option<&image::DynamicImage>,
        token: usize,
        region: Option<RegionKind>,
    ) -> Result<Deletion<'a>, ServiceError> {
        let region = region.or_else(|| scored_region(session));
        let deletion = match self {
            Self::Anyres(m) => {
                let read;
                let image = match original {
                    Some(image) => image,
                    None => {
                        read = anyres::session_image(m, session).map_err(ServiceError::Image)?;
                        &read
                    }
                };
                let rect = [0.0, 0.0, image.width() as f64, image.height() as f64];
                Deletion::on_picture(
                    m.as_ref(),
                    session,
                    token,
                    anyres::picture_of(m, image),
                    rect,
                )?
            }
            _ => Deletion::new(self.scorer(), session, token)?,
        };
        Ok(deletion.with_region(region)?)
    }

    /// Whether this model has the shape `session` records; `path` names it in the error.
    pub fn check_fits(&self, path: &str, session: &Session) -> Result<(), ServiceError> {
        let m = &session.manifest.model;
        let mismatch = |what: String| {
            Err(ServiceError::Mismatch {
                path: path.to_string(),
                what,
            })
        };
        let (layers, heads) = self.decoder_shape();
        if layers != m.text_layers || heads != m.text_heads {
            return mismatch(format!(
                "it has {layers} layers × {heads} heads, the session {} × {}",
                m.text_layers, m.text_heads
            ));
        }
        match self {
            Self::Llava(loaded) if loaded.model.image_grid() != m.image_grid => mismatch(format!(
                "its patch grid is {:?}, the session's {:?}",
                loaded.model.image_grid(),
                m.image_grid
            )),
            Self::Qwen(_) if !m.architecture.starts_with("Qwen2") => mismatch(format!(
                "it is a Qwen VL model, the session was made by {}",
                m.architecture
            )),
            Self::Llava(_) if m.architecture.starts_with("Qwen2") => mismatch(format!(
                "it is a LLaVA-style model, the session was made by {}",
                m.architecture
            )),
            Self::Anyres(loaded) if loaded.model.config().llava.architecture != m.architecture => {
                mismatch(format!(
                    "it is a {}, the session was made by {}",
                    loaded.model.config().llava.architecture,
                    m.architecture
                ))
            }
            Self::Llava(_) | Self::Qwen(_)
                if session
                    .regions()
                    .iter()
                    .any(|r| r.kind == RegionKind::Highres) =>
            {
                mismatch("the session was made by a LLaVA-NeXT / OneVision model".to_string())
            }
            _ => Ok(()),
        }
    }

    /// Relevancy rows of output tokens `todo` of `session`.
    pub fn relevancy(
        &self,
        session: &Session,
        todo: &[usize],
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<RelevancyMaps, ServiceError> {
        self.relevancy_inner(session, None, todo, progress)
    }

    /// [`SessionModel::relevancy`] with the original image given rather than read back from
    /// the session's image path (only a LLaVA-NeXT / OneVision model reads it).
    pub fn relevancy_of_image(
        &self,
        session: &Session,
        original: &image::DynamicImage,
        todo: &[usize],
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<RelevancyMaps, ServiceError> {
        self.relevancy_inner(session, Some(original), todo, progress)
    }

    fn relevancy_inner(
        &self,
        session: &Session,
        original: Option<&image::DynamicImage>,
        todo: &[usize],
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<RelevancyMaps, ServiceError> {
        let total = todo.len().max(1) as f64;
        let mut on_token = |done: usize| progress(JobProgress::Fraction(done as f64 / total));
        match self {
            Self::Llava(m) => Ok(relevancy::relevancy(
                &m.model,
                session,
                todo,
                &mut on_token,
            )?),
            Self::Qwen(m) => {
                let mut done = 0;
                qwen::relevancy_maps(m, session, todo, &mut |_| {
                    done += 1;
                    on_token(done)
                })
                .map_err(|e| {
                    ServiceError::Relevancy(relevancy::RelevancyError::Model(e.to_string()))
                })
            }
            Self::Anyres(m) => {
                let read;
                let image = match original {
                    Some(image) => image,
                    None => {
                        read = anyres::session_image(m, session).map_err(ServiceError::Image)?;
                        &read
                    }
                };
                let kinds: Vec<RegionKind> = session.regions().iter().map(|r| r.kind).collect();
                let mut done = 0;
                anyres::relevancy_maps(m, image, session, &kinds, todo, &mut |_| {
                    done += 1;
                    on_token(done)
                })
                .map_err(|e| {
                    ServiceError::Relevancy(relevancy::RelevancyError::Model(e.to_string()))
                })
            }
        }
    }

    /// Generates an answer to `request`'s prompt about `image` (an image in memory;
    /// `request.image` only names it in the session) through this model's own pipeline:
    /// its processor, its generation. No explanation is added.
    pub fn generate(
        &self,
        image: &image::DynamicImage,
        request: &RunRequest,
        cancel: &std::sync::atomic::AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<Session, GenerateError> {
        match self {
            Self::Llava(m) => crate::generate::generate(m, image, request, cancel, on_progress),
            Self::Qwen(m) => qwen::generate(m, image, request, cancel, on_progress),
            Self::Anyres(m) => anyres::generate(m, image, request, cancel, on_progress),
        }
    }

    /// This model again with its decoder layers `layers` randomised (seeded noise of each
    /// trained tensor's scale, norms kept; [`crate::model::randomize`]), the rest (vision tower,
    /// projector, embeddings, processors) as trained: the model of a model-randomisation
    /// sanity check.
    pub fn load_randomized(
        &self,
        layers: std::ops::Range<usize>,
        seed: u64,
    ) -> Result<Self, GenerateError> {
        let randomize = Randomize { layers, seed };
        let randomize = &randomize;
        Ok(match self {
            Self::Llava(m) => Self::Llava(LoadedModel {
                name: m.name.clone(),
                dir: m.dir.clone(),
                model: Llava::load_randomized(
                    &m.dir,
                    m.model.dtype(),
                    m.model.device(),
                    randomize,
                )?,
                images: m.images.clone(),
                prompts: PromptProcessor::from_dir(&m.dir.root)?,
            }),
            Self::Qwen(m) => Self::Qwen(QwenLoaded {
                name: m.name.clone(),
                dir: m.dir.clone(),
                model: QwenVl::load_randomized(
                    &m.dir,
                    m.model.dtype(),
                    m.model.device(),
                    randomize,
                )?,
                images: m.images.clone(),
                prompts: PromptProcessor::from_dir_with_token(&m.dir.root, qwen::IMAGE_PAD)?,
            }),
            Self::Anyres(m) => Self::Anyres(Box::new(AnyresLoaded {
                name: m.name.clone(),
                dir: m.dir.clone(),
                model: LlavaNext::load_randomized(
                    &m.dir,
                    m.model.llava().dtype(),
                    m.model.llava().device(),
                    randomize,
                )?,
                images: m.images.clone(),
                prompts: PromptProcessor::from_dir(&m.dir.root)?,
            })),
        })
    }

    /// What the user named the model.
    pub fn name(&self) -> &str {
        match self {
            Self::Llava(m) => &m.name,
            Self::Qwen(m) => &m.name,
            Self::Anyres(m) => &m.name,
        }
    }
}

impl Talker for SessionModel {
    fn pipeline(&self) -> Pipeline<'_> {
        match self {
            Self::Llava(m) => Pipeline::Llava(m),
            Self::Qwen(m) => Pipeline::Qwen(m),
            Self::Anyres(m) => Pipeline::Anyres(m),
        }
    }
}

impl PictureScorer for AnyresLoaded {
    /// Each picture is a [`anyres::picture_of`] picture of the original image (RGB values in
    /// [0, 1]), read through the whole anyres processor.
    fn next_token_logits(
        &self,
        ids: &[u32],
        n_input: usize,
        pictures: &[Vec<f32>],
        hw: (usize, usize),
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        anyres::next_token_logits(self, ids, n_input, pictures, hw)
    }
}

impl PictureScorer for QwenLoaded {
    fn next_token_logits(
        &self,
        ids: &[u32],
        n_input: usize,
        pictures: &[Vec<f32>],
        (h, w): (usize, usize),
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let m = self.images.merge_size;
        let positions_of = |grid: [usize; 3]| {
            self.model.positions(
                &ids[..n_input.min(ids.len())],
                &[[grid[1] / m, grid[2] / m]],
            )
        };
        pictures
            .iter()
            .map(|picture| {
                let (patches, grid) = self
                    .images
                    .patches_of_picture(picture, h, w)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                let pixel_values = Tensor::from_vec(
                    patches,
                    (grid[1] * grid[2], self.images.patch_len()),
                    self.model.device(),
                )?;
                let features = self
                    .model
                    .image_features(&pixel_values, grid, &mut NoTape)?
                    .features;
                let embeds = self.model.embed_sequence(ids, n_input, Some(&features))?;
                let pos = positions_of(grid)?;
                let mut cache = self.model.new_cache();
                let logits =
                    self.model
                        .forward(&embeds, 0, &pos, &mut cache, &mut NoTape, false)?;
                logits.flatten_all()?.to_vec1()
            })
            .collect()
    }
}
