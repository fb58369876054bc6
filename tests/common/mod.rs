//! Helpers shared by the app's job tests (`tui_relevancy`, `tui_faithfulness`).

use std::sync::atomic::AtomicBool;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::job::{JobOutput, JobProgress, ModelJob};
use lvlmscope::session::Session;
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::{update, App, Cmd, JobRunner, Msg};

/// A job runner that fails as a session opened without its model folder does.
pub struct NoModel;

impl JobRunner for NoModel {
    fn run_job(
        &mut self,
        _session: &Session,
        _job: &ModelJob,
        _cancel: &AtomicBool,
        _progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        Err("could not load the session's model \"synthetic\": no such folder".into())
    }
}

/// The dark theme in true colour.
pub fn look() -> Look {
    Look::new(Theme::dark(), ColorMode::TrueColor)
}

/// Presses `code` (no modifiers) and returns the work the app asks for.
pub fn press(app: &mut App, code: KeyCode) -> Vec<Cmd> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}
