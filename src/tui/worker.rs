//! Work on other threads: live runs through the [`Runner`] seam, and model jobs on the open
//! session (relevancy on demand, faithfulness) through the [`JobRunner`] seam, on one
//! long-lived job worker that keeps the loaded model between jobs.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use crate::job::{JobOutput, JobProgress, Live, ModelJob, ModelService, RunSettings, SharedModel};
use crate::session::Session;

pub use super::msg::{JobDone, LiveRequest, Msg, RunEvent};

/// Runs the model; [`GenerateRunner`] runs it through `job::run`, tests use fakes.
pub trait Runner: Send + Sync {
    /// Runs `req`, reporting progress, stopping early (with an error) once `cancel` is set.
    fn run(
        &self,
        req: &LiveRequest,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(RunEvent),
    ) -> Result<Session, String>;
}

/// Starts `req` on a new thread; every event and the result come back on `tx` as messages.
pub fn spawn_run(
    runner: Arc<dyn Runner>,
    req: LiveRequest,
    cancel: Arc<AtomicBool>,
    tx: Sender<Msg>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _span = tracing::info_span!("tui_run", follow_up = req.history.is_some()).entered();
        let progress_tx = tx.clone();
        let mut report = move |e: RunEvent| {
            let _ = progress_tx.send(Msg::Run(e));
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runner.run(&req, &cancel, &mut report)
        }))
        .unwrap_or_else(|_| Err("the model run failed unexpectedly (panic in the worker)".into()));
        let _ = tx.send(Msg::RunDone(result.map(Box::new)));
    })
}

/// The runner of the real model, recording the generated rows and the full attention of the
/// last layer (so causal explanations can be computed in the app). It keeps the model of its
/// last run and the conversation with its KV cache ([`Live`]): a follow-up on that
/// conversation runs only its new positions; a follow-up on a session opened from a file loads
/// its model once and resumes it.
#[derive(Default)]
pub struct GenerateRunner {
    live: Mutex<Live>,
}

impl GenerateRunner {
    /// A runner that shares its model through `shared` (with the model-job service) and runs
    /// with `settings` (the app's `--device` / `--dtype`).
    pub fn new(shared: SharedModel, settings: RunSettings) -> Self {
        Self {
            live: Mutex::new(Live::new(shared, settings)),
        }
    }

    /// How many times the runner loaded a model.
    pub fn loads(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .loads()
    }

    /// Positions the kept conversation's KV cache holds.
    pub fn cached(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cached()
    }
}

impl Runner for GenerateRunner {
    fn run(
        &self,
        req: &LiveRequest,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(RunEvent),
    ) -> Result<Session, String> {
        use crate::generate::{Capture, Progress, RunRequest};
        let request = RunRequest {
            model: req.model.clone(),
            image: req.image.clone(),
            prompt: req.prompt.clone(),
            max_new_tokens: req.max_new_tokens,
            capture: Capture::Full,
            ..RunRequest::default()
        };
        let mut report = |p: Progress| match p {
            Progress::Stage(s) => progress(RunEvent::Stage(s)),
            Progress::Fraction(f) => progress(RunEvent::Fraction(f)),
            Progress::Token { index, text, .. } => progress(RunEvent::Token { index, text }),
        };
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match &req.history {
            Some(talk) => {
                live.follow_up(talk, &req.prompt, req.max_new_tokens, cancel, &mut report)
            }
            None => live.run(&request, cancel, &mut report),
        }
        .map_err(|e| e.to_string())
    }
}

/// Runs model jobs on a session; [`ModelService`] runs them with the session's model (loaded
/// on the first job and kept), tests use fakes. Called on the job worker only, one job at a
/// time, so it may keep state between jobs.
pub trait JobRunner: Send {
    /// Runs `job` on `session`, reporting progress, stopping early (with an error) once
    /// `cancel` is set where it can. The error is one sentence for the status line.
    fn run_job(
        &mut self,
        session: &Session,
        job: &ModelJob,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String>;
}

impl JobRunner for ModelService {
    fn run_job(
        &mut self,
        session: &Session,
        job: &ModelJob,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        self.run(session, job, cancel, progress)
            .map_err(|e| e.to_string())
    }
}

/// One model job sent to the job worker.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// Identifies the job in the messages that answer it.
    pub id: u64,
    /// The app's session epoch when the job was asked for (see `App::epoch`).
    pub epoch: u64,
    /// What the job reads: the session without its recorded tensors.
    pub session: Session,
    /// The job.
    pub job: ModelJob,
    /// Set to cancel the job.
    pub cancel: Arc<AtomicBool>,
}

/// The job worker: one thread that owns the [`JobRunner`] (and so the loaded model) and runs
/// the jobs sent to it in order; progress and results come back as messages.
#[derive(Debug)]
pub struct JobWorker {
    jobs: Sender<JobRequest>,
}

impl JobWorker {
    /// Queues `req`; returns false when the worker is gone.
    pub fn submit(&self, req: JobRequest) -> bool {
        self.jobs.send(req).is_ok()
    }
}

/// Starts the job worker around `runner`, answering on `tx`. The thread ends when the
/// returned [`JobWorker`] is dropped.
pub fn spawn_job_worker(mut runner: Box<dyn JobRunner>, tx: Sender<Msg>) -> JobWorker {
    let (jobs, queue) = channel::<JobRequest>();
    std::thread::spawn(move || {
        for req in queue {
            let id = req.id;
            let _span = tracing::info_span!("tui_job", id).entered();
            let progress_tx = tx.clone();
            let mut report = move |p: JobProgress| {
                let _ = progress_tx.send(Msg::Job(id, p));
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runner.run_job(&req.session, &req.job, &req.cancel, &mut report)
            }))
            .unwrap_or_else(|_| {
                Err("the model job failed unexpectedly (panic in the worker)".into())
            });
            let done = JobDone {
                id,
                epoch: req.epoch,
                job: req.job,
                result,
            };
            if tx.send(Msg::JobDone(done)).is_err() {
                break;
            }
        }
    });
    JobWorker { jobs }
}
