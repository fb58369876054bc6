//! Live runs on a worker thread: the [`Runner`] seam the integrator plugs generation into.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use crate::session::Session;

use super::update::Msg;

/// What a live run needs from the form.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRequest {
    /// Model folder or id.
    pub model: String,
    /// Image file.
    pub image: PathBuf,
    /// The prompt.
    pub prompt: String,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
}

/// Progress of a live run, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A new stage began ("loading model", "encoding image", "prefill", "decoding", ...).
    Stage(String),
    /// Fraction of the current stage done, in [0, 1].
    Fraction(f64),
    /// A generated token.
    Token {
        /// Its index in the answer.
        index: usize,
        /// Its text.
        text: String,
    },
}

/// Runs the model; implemented over `job::run` by the binary, and by fakes in tests.
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

/// The runner of the real model: `crate::job::run`, recording the generated rows and the
/// full attention of the last layer (so causal explanations can be computed in the app).
#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateRunner;

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
        crate::job::run(&request, cancel, &mut |p| match p {
            Progress::Stage(s) => progress(RunEvent::Stage(s)),
            Progress::Fraction(f) => progress(RunEvent::Fraction(f)),
            Progress::Token { index, text, .. } => progress(RunEvent::Token { index, text }),
        })
        .map_err(|e| e.to_string())
    }
}
