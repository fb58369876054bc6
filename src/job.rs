//! The whole job behind `lvlmscope run` and the TUI's live runs: load the model, generate, then
//! compute the explanations the request asks for, all into one [`Session`]. [`service`] runs
//! model-backed jobs (relevancy on demand, faithfulness of maps) on sessions that already exist.

pub mod live;
pub mod models;
pub mod service;
pub mod shared;

pub use live::Live;
pub use models::SessionModel;
pub use service::{JobOutput, JobProgress, ModelJob, ModelService, ModelSpec, ServiceError};
pub use shared::{RunSettings, SharedModel};

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::explain::causal::{self, CausalError};
use crate::explain::relevancy::{self, RelevancyError, RelevancyMaps};
use crate::generate::{
    self, anyres, conversation, qwen, GenerateError, LoadedModel, Progress, RunRequest,
};
use crate::session::{CausalParams, RegionKind, Session};

/// Why a job failed; each variant is one clear sentence.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Loading or generation failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The causal explanation could not be computed.
    #[error("causal explanation failed: {0}")]
    Causal(#[from] CausalError),
    /// The relevancy maps could not be computed.
    #[error("relevancy failed: {0}")]
    Relevancy(#[from] RelevancyError),
}

/// Loads the model named in `request`, generates, and adds the requested explanations.
pub fn run(
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, JobError> {
    generate::validate(request)?;
    let device = request.device.open().map_err(GenerateError::from)?;
    on_progress(Progress::Stage("loading model".into()));
    let started = Instant::now();
    let spec = ModelSpec {
        path: request.model.clone(),
        dtype: request.dtype,
        device: request.device,
    };
    let model = SessionModel::load(&spec, &device)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let mut session = run_with(&model, request, cancel, on_progress)?;
    session
        .manifest
        .timings
        .insert("load_model".into(), load_seconds);
    Ok(session)
}

/// The part of [`run`] after loading, for a model of any pipeline: reads the image, generates
/// and adds the requested explanations. `lvlmscope batch` calls it once per line with one
/// loaded model.
pub fn run_with(
    model: &SessionModel,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, JobError> {
    match model {
        SessionModel::Llava(m) => run_loaded(m, request, cancel, on_progress),
        SessionModel::Qwen(m) => run_qwen(m, request, cancel, on_progress),
        SessionModel::Anyres(m) => run_anyres(m, request, cancel, on_progress),
    }
}

/// [`run`] of a scripted conversation: `request.prompt`, then each of `follow_ups` on the same
/// image, one session holding every turn, on a model of any pipeline. The questions alone are
/// checked against the model's context before anything runs, each turn again before it runs.
/// Relevancy, when requested, is computed for every turn (an earlier turn's rows saved in its
/// per-turn fields); causal explanations for the last turn, the one whose full attention
/// generation recorded.
pub fn run_conversation(
    request: &RunRequest,
    follow_ups: &[String],
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, JobError> {
    if follow_ups.is_empty() {
        return run(request, cancel, on_progress);
    }
    generate::validate(request)?;
    let device = request.device.open().map_err(GenerateError::from)?;
    on_progress(Progress::Stage("loading model".into()));
    let started = Instant::now();
    let spec = ModelSpec {
        path: request.model.clone(),
        dtype: request.dtype,
        device: request.device,
    };
    let model = SessionModel::load(&spec, &device)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let questions: Vec<String> = std::iter::once(request.prompt.clone())
        .chain(follow_ups.iter().cloned())
        .collect();
    let image = crate::processing::load_image(&request.image).map_err(GenerateError::from)?;
    conversation::check_questions(&model, &image, request, &questions)?;
    let total = questions.len();
    on_progress(Progress::Stage(format!("turn 1 of {total}")));
    let mut talk = conversation::Conversation::start(&model, &image, request, cancel, on_progress)?;
    for (k, prompt) in follow_ups.iter().enumerate() {
        on_progress(Progress::Stage(format!("turn {} of {total}", k + 2)));
        talk.follow_up(prompt, cancel, on_progress)
            .map_err(|e| match e {
                GenerateError::TooLong { .. } => {
                    GenerateError::Setting(format!("turn {} of the conversation: {e}", k + 2))
                }
                other => other,
            })?;
    }
    let mut session = talk.into_session();
    session
        .manifest
        .timings
        .insert("load_model".into(), load_seconds);
    if request.relevancy {
        explain_earlier_turns(&mut session, on_progress, |s, tokens, on_token| {
            relevancy_rows(&model, &image, s, tokens, on_token)
        })?;
    }
    add_requested(&mut session, request, on_progress, |s, tokens, on_token| {
        relevancy_rows(&model, &image, s, tokens, on_token)
    })?;
    Ok(session)
}

/// Relevancy of every answer token of every earlier turn of `session`, by `rows` (as in
/// [`add_requested`]), stored in the turns' own fields; the seconds it took are the timing
/// `relevancy_earlier_turns`.
fn explain_earlier_turns(
    session: &mut Session,
    on_progress: &mut dyn FnMut(Progress),
    mut rows: impl FnMut(&Session, &[usize], &mut dyn FnMut(usize)) -> Result<RelevancyMaps, JobError>,
) -> Result<(), JobError> {
    let started = Instant::now();
    for k in 0..session.num_turns() - 1 {
        let Some(turn) = session.turn(k) else {
            continue;
        };
        let mut turn = turn.into_owned();
        on_progress(Progress::Stage(format!("relevancy of turn {}", k + 1)));
        let tokens: Vec<usize> = (0..turn.num_output()).collect();
        let total = tokens.len().max(1) as f64;
        let mut done = 0usize;
        let maps = rows(&turn, &tokens, &mut |_| {
            done += 1;
            on_progress(Progress::Fraction(done as f64 / total));
        })?;
        relevancy::store(&mut turn, &maps)?;
        session.set_turn_results(k, &turn);
    }
    session.manifest.timings.insert(
        "relevancy_earlier_turns".into(),
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// Relevancy rows of output tokens `tokens` of `session`, which `model` made from `image`, by
/// the model's pipeline.
fn relevancy_rows(
    model: &SessionModel,
    image: &image::DynamicImage,
    session: &Session,
    tokens: &[usize],
    on_token: &mut dyn FnMut(usize),
) -> Result<RelevancyMaps, JobError> {
    Ok(match model {
        SessionModel::Llava(m) => relevancy::relevancy(&m.model, session, tokens, on_token)?,
        SessionModel::Qwen(m) => qwen::relevancy_maps(m, session, tokens, on_token)?,
        SessionModel::Anyres(m) => {
            let kinds: Vec<RegionKind> = session.regions().iter().map(|r| r.kind).collect();
            anyres::relevancy_maps(m, image, session, &kinds, tokens, on_token)?
        }
    })
}

/// [`run_with`] for a model of the LLaVA family: reads the image, generates with `loaded`, and
/// adds the requested explanations.
pub fn run_loaded(
    loaded: &LoadedModel,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, JobError> {
    let image = crate::processing::load_image(&request.image).map_err(GenerateError::from)?;
    let mut session = generate::generate(loaded, &image, request, cancel, on_progress)?;
    if request.relevancy {
        on_progress(Progress::Stage("relevancy".into()));
        let tokens: Vec<usize> = (0..session.num_output()).collect();
        let total = tokens.len().max(1) as f64;
        relevancy::ensure(&loaded.model, &mut session, &tokens, &mut |done| {
            on_progress(Progress::Fraction(done as f64 / total))
        })?;
    }
    if request.causal {
        on_progress(Progress::Stage("causal explanations".into()));
        add_causal(&mut session)?;
    }
    Ok(session)
}

/// [`run_with`] for a Qwen2-VL / Qwen2.5-VL model.
fn run_qwen(
    loaded: &qwen::QwenLoaded,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, JobError> {
    let image = crate::processing::load_image(&request.image).map_err(GenerateError::from)?;
    let mut request = request.clone();
    if request.causal {
        request.capture = generate::Capture::Full;
    }
    let mut session = qwen::generate(loaded, &image, &request, cancel, on_progress)?;
    add_requested(
        &mut session,
        &request,
        on_progress,
        |s, tokens, on_token| Ok(qwen::relevancy_maps(loaded, s, tokens, on_token)?),
    )?;
    Ok(session)
}

/// [`run_with`] for a LLaVA-NeXT / OneVision model.
fn run_anyres(
    loaded: &anyres::AnyresLoaded,
    request: &RunRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Session, JobError> {
    let image = crate::processing::load_image(&request.image).map_err(GenerateError::from)?;
    let mut session = anyres::generate(loaded, &image, request, cancel, on_progress)?;
    let kinds: Vec<RegionKind> = session.manifest.regions.iter().map(|r| r.kind).collect();
    add_requested(&mut session, request, on_progress, |s, tokens, on_token| {
        Ok(anyres::relevancy_maps(
            loaded, &image, s, &kinds, tokens, on_token,
        )?)
    })?;
    Ok(session)
}

/// The explanations `request` asks for after generation, for a pipeline whose relevancy pass
/// is `rows` (output tokens → rows, calling its last argument once per token done): relevancy of
/// every output token stored in `session`, then the causal results.
fn add_requested(
    session: &mut Session,
    request: &RunRequest,
    on_progress: &mut dyn FnMut(Progress),
    rows: impl FnOnce(&Session, &[usize], &mut dyn FnMut(usize)) -> Result<RelevancyMaps, JobError>,
) -> Result<(), JobError> {
    if request.relevancy {
        on_progress(Progress::Stage("relevancy".into()));
        let tokens: Vec<usize> = (0..session.num_output()).collect();
        let total = tokens.len().max(1) as f64;
        let mut done = 0usize;
        let maps = rows(session, &tokens, &mut |_| {
            done += 1;
            on_progress(Progress::Fraction(done as f64 / total));
        })?;
        relevancy::store(session, &maps)?;
    }
    if request.causal {
        on_progress(Progress::Stage("causal explanations".into()));
        add_causal(session)?;
    }
    Ok(())
}

/// Fills the session's causal results for every output token, with the default parameters on
/// the last decoder layer (whose full attention generation recorded).
pub fn add_causal(session: &mut Session) -> Result<(), CausalError> {
    let started = Instant::now();
    let params = CausalParams {
        layer: session.manifest.model.text_layers.saturating_sub(1),
        ..CausalParams::default()
    };
    let tokens: Vec<usize> = (0..session.num_output()).collect();
    let results = causal::explain_session(session, &tokens, &params)?;
    session.manifest.causal = Some(results);
    session
        .manifest
        .timings
        .insert("causal".into(), started.elapsed().as_secs_f64());
    Ok(())
}
