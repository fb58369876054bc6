//! Model-backed jobs on an existing session, with the model loaded once and kept.
//!
//! The TUI's job worker and `lvlmscope report` hold one [`ModelService`]: the first job loads the
//! model named in the session's manifest, later jobs on a session of the same model reuse it.
//! Jobs are a [`ModelJob`] enum: relevancy on demand, the faithfulness of a token's maps
//! (the probability drop when each map's top patches are removed), an attention knockout and
//! the logit lens of a token (the app's keys; the same code as `lvlmscope knockout` and
//! `report --method lens`), all with the kept model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::DType;

use crate::explain::faithfulness::{Deletion, FaithfulnessError, DEFAULT_BATCH};
use crate::explain::knockout::{self, KnockoutError, KnockoutRequest, KnockoutResult};
use crate::explain::lens::{self, Lens, LensError};
use crate::explain::relevancy::{self, RelevancyError, RelevancyMaps};
use crate::generate::GenerateError;
use crate::model::DeviceName;
use crate::processing::PromptProcessor;
use crate::session::{RegionKind, Session};

use super::models::SessionModel;
use super::shared::{RunSettings, SharedModel};

/// Which model to load, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Model folder or model id in the local Hugging Face cache.
    pub path: String,
    /// Weights and activations dtype.
    pub dtype: DType,
    /// Where the model runs.
    pub device: DeviceName,
}

impl ModelSpec {
    /// The model a session was made with, on the device and in the dtype its run recorded;
    /// f32 on the CPU (what `run` and the app use by default) for a file that records neither
    /// or names ones this build does not know.
    pub fn for_session(session: &Session) -> Self {
        let (dtype, device) = crate::generate::recorded_settings(&session.manifest.generation);
        Self {
            path: session.manifest.model.path.clone(),
            dtype,
            device,
        }
    }
}

/// A computation that needs the model, on a session the caller holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelJob {
    /// Chefer relevancy of these output tokens (those the session already holds are skipped).
    Relevancy {
        /// Output token indices.
        tokens: Vec<usize>,
    },
    /// Faithfulness of maps of one output token: for each map, p(original image) − p(the map's
    /// top `fraction` of patches replaced by the mean colour), as
    /// [`crate::explain::faithfulness::probability_drop`] defines it.
    Faithfulness {
        /// Output token index.
        token: usize,
        /// The maps, named, one value per patch of the image grid.
        maps: Vec<(String, Vec<f32>)>,
        /// Fraction of patches removed, in [0, 1].
        fraction: f32,
        /// The image region whose cells are removed (the maps still hold every region's
        /// cells); `None`: the session's default, the high-resolution grid of a LLaVA-NeXT /
        /// OneVision session, else every cell
        /// ([`crate::explain::faithfulness::scored_region`]).
        region: Option<RegionKind>,
    },
    /// An attention knockout ([`crate::explain::knockout::knockout`]); a key set of a map
    /// must come as its patches (the job's session holds no attention to make the map from).
    Knockout(KnockoutRequest),
    /// The logit lens of an output token with its patch map at a decoder layer.
    Lens {
        /// Output token index.
        token: usize,
        /// Decoder layer of the patch map.
        layer: usize,
    },
}

impl ModelJob {
    /// A short description for progress lines: "relevancy of token 3".
    pub fn describe(&self) -> String {
        match self {
            ModelJob::Relevancy { tokens } => match tokens.as_slice() {
                [t] => format!("relevancy of token {t}"),
                ts => format!(
                    "relevancy of tokens {}",
                    ts.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            ModelJob::Faithfulness { token, .. } => format!("faithfulness of token {token}"),
            ModelJob::Knockout(r) => format!("knockout of token {}", r.token),
            ModelJob::Lens { token, layer } => {
                format!("logit lens of token {token} at layer {layer}")
            }
        }
    }
}

/// What a [`ModelJob`] produced, for the caller to store (in its session, or next to it).
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutput {
    /// Rows for [`relevancy::store`] (empty when the session already held every token).
    Relevancy(RelevancyMaps),
    /// The probability drops of [`ModelJob::Faithfulness`].
    Faithfulness {
        /// Output token index.
        token: usize,
        /// Probability of the token with the original image.
        original: f32,
        /// Each map's name and probability drop, in the order of the job's maps.
        drops: Vec<(String, f32)>,
        /// Modified images the model read (original included; repeated patch sets once).
        images: usize,
        /// Seconds the deletions took (model loading excluded).
        seconds: f64,
    },
    /// What [`ModelJob::Knockout`] changed.
    Knockout {
        /// The numbers.
        result: KnockoutResult,
        /// The token ids it names (the token, both greedy tokens) with their text.
        words: Vec<(u32, String)>,
    },
    /// The reading of [`ModelJob::Lens`], for [`crate::explain::lens::store`].
    Lens {
        /// The reading.
        lens: Lens,
        /// The ids it names (the token, each layer's top token) with their text.
        words: Vec<(u32, String)>,
    },
}

/// Progress of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobProgress {
    /// A new stage began ("loading model", "relevancy of token 3").
    Stage(String),
    /// Fraction of the current stage done, in [0, 1].
    Fraction(f64),
}

/// Why a model job failed; each variant is one clear sentence.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The session names no model.
    #[error("the session does not name its model, so it cannot be loaded")]
    NoModel,
    /// The model could not be loaded.
    #[error("could not load the session's model {path:?}: {source}")]
    Load {
        /// The model folder or id.
        path: String,
        /// Why.
        source: GenerateError,
    },
    /// The loaded model is not the one the session was made with.
    #[error("the model at {path:?} does not fit the session: {what}")]
    Mismatch {
        /// The model folder or id.
        path: String,
        /// What differs.
        what: String,
    },
    /// The relevancy computation failed.
    #[error("relevancy failed: {0}")]
    Relevancy(#[from] RelevancyError),
    /// The deletion experiments failed.
    #[error("{0}")]
    Faithfulness(#[from] FaithfulnessError),
    /// The knockout failed.
    #[error(transparent)]
    Knockout(#[from] KnockoutError),
    /// The logit lens failed.
    #[error(transparent)]
    Lens(#[from] LensError),
    /// The user cancelled the job before it finished.
    #[error("cancelled")]
    Cancelled,
    /// The session's original image could not be read back (LLaVA-NeXT / OneVision jobs
    /// re-read it).
    #[error(transparent)]
    Image(GenerateError),
}

/// Holds the model of the latest job (one at a time: a second large model would not fit) and
/// runs [`ModelJob`]s with it. The app's service shares it with the live-run worker
/// ([`ModelService::shared`]).
#[derive(Default)]
pub struct ModelService {
    loaded: Option<(ModelSpec, Arc<SessionModel>)>,
    loads: usize,
    shared: SharedModel,
    settings: RunSettings,
}

impl std::fmt::Debug for ModelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelService")
            .field("loaded", &self.loaded.as_ref().map(|(s, _)| s))
            .field("loads", &self.loads)
            .finish()
    }
}

impl ModelService {
    /// A service with no model loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A service that looks for its model in `shared` before loading one (and shares what it
    /// loads), running sessions' models with `settings` over their own device and dtype.
    pub fn shared(shared: SharedModel, settings: RunSettings) -> Self {
        Self {
            shared,
            settings,
            ..Self::default()
        }
    }

    /// How many times a model was loaded (a second job on the same model loads nothing).
    pub fn loads(&self) -> usize {
        self.loads
    }

    /// The model `spec` names: the one already loaded when it is the same, else loaded now
    /// (replacing the previous one).
    pub fn model(
        &mut self,
        spec: &ModelSpec,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<&SessionModel, ServiceError> {
        if spec.path.trim().is_empty() {
            return Err(ServiceError::NoModel);
        }
        let fresh = self.loaded.as_ref().is_some_and(|(s, _)| s == spec);
        if !fresh {
            self.loaded = None;
            let (model, loaded) = self.shared.get_or_load(spec, || {
                progress(JobProgress::Stage(format!("loading model {}", spec.path)));
                let load_error = |source| ServiceError::Load {
                    path: spec.path.clone(),
                    source,
                };
                let device = spec
                    .device
                    .open()
                    .map_err(|e| load_error(GenerateError::from(e)))?;
                SessionModel::load(spec, &device).map_err(load_error)
            })?;
            self.loads += usize::from(loaded);
            self.loaded = Some((spec.clone(), model));
        }
        match &self.loaded {
            Some((_, m)) => Ok(m.as_ref()),
            None => Err(ServiceError::NoModel),
        }
    }

    /// The model `session` was made with, loaded (or kept) and checked against the session.
    fn model_for(
        &mut self,
        session: &Session,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<&SessionModel, ServiceError> {
        let spec = self.settings.spec_for(session);
        let loaded = self.model(&spec, progress)?;
        loaded.check_fits(&spec.path, session)?;
        Ok(loaded)
    }

    /// Runs `job` on `session` with the session's model (loaded on first use); the session is
    /// not changed: the caller stores the output.
    #[tracing::instrument(name = "model_job", skip_all, fields(job = %job.describe()))]
    pub fn run(
        &mut self,
        session: &Session,
        job: &ModelJob,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, ServiceError> {
        let cancelled = || cancel.load(Ordering::SeqCst);
        if cancelled() {
            return Err(ServiceError::Cancelled);
        }
        let loaded = self.model_for(session, progress)?;
        if cancelled() {
            return Err(ServiceError::Cancelled);
        }
        progress(JobProgress::Stage(job.describe()));
        match job {
            ModelJob::Relevancy { tokens } => Ok(JobOutput::Relevancy(relevancy_rows(
                loaded, session, tokens, progress,
            )?)),
            ModelJob::Faithfulness {
                token,
                maps,
                fraction,
                region,
            } => {
                let deletion = loaded.deletion(session, *token, *region)?;
                faithfulness(deletion, *token, maps, *fraction, cancel, progress)
            }
            ModelJob::Knockout(request) => {
                let result = knockout::knockout(loaded.replayer(), session, request)?;
                let ids = [
                    result.token_id,
                    result.greedy_original,
                    result.greedy_knockout,
                ];
                let words = words(loaded.prompts(), ids);
                Ok(JobOutput::Knockout { result, words })
            }
            ModelJob::Lens { token, layer } => {
                let lens = lens::lens(loaded.replayer(), session, *token, Some(*layer))?;
                let ids = std::iter::once(lens.token_id).chain(lens.curve.iter().map(|p| p.top));
                let words = words(loaded.prompts(), ids);
                Ok(JobOutput::Lens { lens, words })
            }
        }
    }

    /// Computes the relevancy of the output tokens among `tokens` that `session` lacks, with
    /// the session's model, and stores it in the session; returns how many were computed.
    pub fn add_relevancy(
        &mut self,
        session: &mut Session,
        tokens: &[usize],
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<usize, ServiceError> {
        let job = ModelJob::Relevancy {
            tokens: tokens.to_vec(),
        };
        let loaded = self.model_for(session, progress)?;
        progress(JobProgress::Stage(job.describe()));
        let maps = relevancy_rows(loaded, session, tokens, progress)?;
        relevancy::store(session, &maps)?;
        Ok(maps.tokens.len())
    }
}

/// `ids` (duplicates dropped) with their text under the model's tokenizer.
fn words(prompts: &PromptProcessor, ids: impl IntoIterator<Item = u32>) -> Vec<(u32, String)> {
    let mut ids: Vec<u32> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| (id, prompts.decode_token(id)))
        .collect()
}

/// The relevancy rows of the tokens among `tokens` that `session` lacks.
fn relevancy_rows(
    loaded: &SessionModel,
    session: &Session,
    tokens: &[usize],
    progress: &mut dyn FnMut(JobProgress),
) -> Result<RelevancyMaps, ServiceError> {
    let todo = relevancy::missing_tokens(session, tokens);
    if todo.is_empty() {
        return Ok(RelevancyMaps::default());
    }
    loaded.relevancy(session, &todo, progress)
}

/// The probability drop of each map of `token`, with one [`Deletion`] (so the original image
/// runs once); the images go through the model in batches, `cancel` is checked between them.
fn faithfulness(
    mut deletion: Deletion<'_>,
    token: usize,
    maps: &[(String, Vec<f32>)],
    fraction: f32,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<JobOutput, ServiceError> {
    let started = Instant::now();
    let mut drops = Vec::with_capacity(maps.len());
    while drops.len() < maps.len() {
        if cancel.load(Ordering::SeqCst) {
            return Err(ServiceError::Cancelled);
        }
        // The first batch also holds the original image.
        let size = if drops.is_empty() {
            DEFAULT_BATCH - 1
        } else {
            DEFAULT_BATCH
        };
        let part = &maps[drops.len()..(drops.len() + size).min(maps.len())];
        let values: Vec<Vec<f32>> = part.iter().map(|(_, m)| m.clone()).collect();
        let d = deletion.probability_drops(&values, fraction)?;
        drops.extend(part.iter().map(|(name, _)| name.clone()).zip(d));
        progress(JobProgress::Fraction(
            drops.len() as f64 / maps.len() as f64,
        ));
    }
    Ok(JobOutput::Faithfulness {
        token,
        original: deletion.original()?,
        drops,
        images: deletion.images_run(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The parts of `session` a model job reads (manifest, ids, pixels), without the recorded
/// attention and explanations: cheap to send to a worker thread.
pub fn job_input(session: &Session) -> Session {
    Session {
        manifest: session.manifest.clone(),
        input_ids: session.input_ids.clone(),
        output_ids: session.output_ids.clone(),
        pixel_values: session.pixel_values.clone(),
        attn_gen: None,
        attn_full: Default::default(),
        attn_vit: None,
        relevancy_llm: None,
        relevancy_vit: None,
        relevancy_combined: None,
        turns: Vec::new(),
    }
}
