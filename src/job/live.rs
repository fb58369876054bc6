//! The app's live conversation: the model of the last live run or follow-up stays loaded (in the
//! [`SharedModel`] the model-job service also reads) with the [`Conversation`] it ran and its KV
//! cache, so the next follow-up on that conversation runs only its new positions. A session
//! opened from a file is resumed on its first follow-up (the model loaded once, the image
//! encoded again, the turn run afresh); later follow-ups continue from the cache. A new run, or a
//! follow-up on another session, drops the conversation.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::models::SessionModel;
use super::service::ModelSpec;
use super::shared::{RunSettings, SharedModel};
use super::JobError;
use crate::generate::conversation::Conversation;
use crate::generate::{self, GenerateError, Progress, RunRequest};
use crate::session::Session;

/// The live-run worker's state: the loaded model and the conversation in progress.
#[derive(Default)]
pub struct Live {
    shared: SharedModel,
    settings: RunSettings,
    talk: Option<Conversation<Arc<SessionModel>>>,
    loads: usize,
}

impl Live {
    /// A live state that shares its model through `shared` and runs with `settings` (over the
    /// request's device and dtype, or a saved session's).
    pub fn new(shared: SharedModel, settings: RunSettings) -> Self {
        Self {
            shared,
            settings,
            talk: None,
            loads: 0,
        }
    }

    /// How many times a model was loaded (a follow-up on the kept conversation loads nothing).
    pub fn loads(&self) -> usize {
        self.loads
    }

    /// Positions the kept conversation's KV cache holds (0 without one).
    pub fn cached(&self) -> usize {
        self.talk.as_ref().map_or(0, Conversation::cached)
    }

    /// The model `spec` names: the shared one, else loaded (and shared) now; the seconds the
    /// load took when it loaded.
    fn model(
        &mut self,
        spec: &ModelSpec,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<(Arc<SessionModel>, Option<f64>), JobError> {
        let started = Instant::now();
        let (model, loaded) = self.shared.get_or_load(spec, || {
            on_progress(Progress::Stage("loading model".into()));
            let device = spec.device.open().map_err(GenerateError::from)?;
            SessionModel::load(spec, &device)
        })?;
        self.loads += usize::from(loaded);
        Ok((model, loaded.then(|| started.elapsed().as_secs_f64())))
    }

    /// A new live run of `request` (the conversation so far dropped); keeps its conversation.
    pub fn run(
        &mut self,
        request: &RunRequest,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<Session, JobError> {
        self.talk = None;
        generate::validate(request)?;
        let spec = self.settings.apply(ModelSpec {
            path: request.model.clone(),
            dtype: request.dtype,
            device: request.device,
        });
        let request = RunRequest {
            dtype: spec.dtype,
            device: spec.device,
            ..request.clone()
        };
        let (model, load_seconds) = self.model(&spec, on_progress)?;
        let image = crate::processing::load_image(&request.image).map_err(GenerateError::from)?;
        let talk = Conversation::start(model, &image, &request, cancel, on_progress)?;
        let mut session = talk.session().clone();
        if let Some(seconds) = load_seconds {
            session
                .manifest
                .timings
                .insert("load_model".into(), seconds);
        }
        self.talk = Some(talk);
        Ok(session)
    }

    /// The follow-up `prompt` on `session` (one question or a conversation): continues the kept
    /// conversation when `session` is it (explanations added since are kept), else resumes
    /// `session` with its model; returns the session with the new turn. On an error (a cancel
    /// included) the kept conversation is as it was.
    pub fn follow_up(
        &mut self,
        session: &Session,
        prompt: &str,
        max_new_tokens: usize,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<Session, JobError> {
        let kept = self.talk.as_mut().is_some_and(|t| t.adopt(session.clone()));
        let mut load_seconds = None;
        if !kept {
            self.talk = None;
            let spec = self.settings.spec_for(session);
            let (model, seconds) = self.model(&spec, on_progress)?;
            load_seconds = seconds;
            model
                .check_fits(&spec.path, session)
                .map_err(|e| GenerateError::Setting(e.to_string()))?;
            let talk = Conversation::resume(model, session.clone(), max_new_tokens)?;
            self.talk = Some(talk.running_on(spec.dtype, spec.device));
        }
        let Some(talk) = self.talk.as_mut() else {
            return Err(GenerateError::Setting("no conversation to continue".into()).into());
        };
        let mut next = talk.follow_up(prompt, cancel, on_progress)?.clone();
        if let Some(seconds) = load_seconds {
            next.manifest.timings.insert("load_model".into(), seconds);
        }
        Ok(next)
    }
}
