//! The messages the app runs on: everything that can happen ([`Msg`]), the work the app asks the
//! runtime to do ([`Cmd`]), and what worker threads report (live runs, model jobs). Shared by
//! the app, its components and the workers; depends on none of them.

use std::path::PathBuf;

use crossterm::event::{KeyEvent, MouseEvent};

use crate::job::{JobOutput, JobProgress, ModelJob};
use crate::session::{CausalParams, CausalToken, Session};

use super::state::{Pane, Selection};

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
    /// The conversation a follow-up continues (the prompt is its next question), or none for
    /// a new run.
    pub history: Option<Box<Session>>,
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

/// How a model job ended.
#[derive(Debug)]
pub struct JobDone {
    /// The job's id.
    pub id: u64,
    /// The session epoch it was asked for in.
    pub epoch: u64,
    /// The job.
    pub job: ModelJob,
    /// Its output, or one sentence saying why there is none.
    pub result: Result<JobOutput, String>,
}

/// Everything that can happen to the app.
#[derive(Debug)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// A mouse event.
    Mouse(MouseEvent),
    /// The terminal was resized.
    Resize(u16, u16),
    /// Progress from a live run.
    Run(RunEvent),
    /// A live run ended.
    RunDone(Result<Box<Session>, String>),
    /// A save ended.
    Saved(Result<PathBuf, String>),
    /// A PNG export ended.
    Exported(Result<PathBuf, String>),
    /// A causal computation for an answer token, with these parameters, ended.
    CausalDone(usize, CausalParams, Result<CausalToken, String>),
    /// Progress of the model job with this id.
    Job(u64, JobProgress),
    /// A model job ended.
    JobDone(JobDone),
    /// SIGINT or SIGTERM: leave cleanly.
    Interrupt,
    /// A session file for the compare split view was read (or why it could not be).
    CompareLoaded(PathBuf, Result<Box<Session>, String>),
    /// A worker's message for the session with this epoch (see `App::epoch`): the split view
    /// applies it on the side showing that session; it is dropped when no side does.
    ForSession(u64, Box<Msg>),
}

/// Work the runtime does for the app off the draw loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// Start a live run.
    StartRun(LiveRequest),
    /// Save the session to a file.
    Save(PathBuf),
    /// Write the current map over the image as a PNG.
    Export(PathBuf),
    /// Compute the causal explanation of an answer token with these parameters.
    ComputeCausal(usize, CausalParams),
    /// Run the pending model job with this id (the app's pending job) on the job worker.
    ModelJob(u64, ModelJob),
    /// Read this session file for the compare split view.
    LoadCompare(PathBuf),
    /// Do this command for the session with this epoch: the split view's side not focused
    /// (the runtime gives that side the app's fields while it starts the work).
    ForSession(u64, Box<Cmd>),
}

/// What a component asks of the app when it handles an action (the app applies these in
/// order; components never reach into the app themselves).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Show a notice in the status line (`true`: an error).
    Notify(String, bool),
    /// Show another map: the new selection.
    Select(Selection),
    /// Give the keyboard to a pane.
    Focus(Pane),
    /// Start a model job on the session (refused with a notice while another runs).
    StartJob(ModelJob),
    /// Start a live run.
    StartRun(LiveRequest),
    /// Run a command on the runtime.
    Cmd(Cmd),
    /// Ask this follow-up question about the session's image (a new turn of its conversation).
    FollowUp(String),
}
