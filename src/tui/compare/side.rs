//! The side of the split view that is not focused: a [`SessionState`] of its own (swapped
//! whole with the app's [`App::doc`] when the focus moves), read through a [`Ctx`] of its own
//! to draw.

use super::super::app::{App, SessionState};
use super::super::component::Ctx;
use super::super::state::{Pane, RunState};

/// No live run: what the side's panes are told while it is not focused.
static IDLE: RunState = RunState {
    active: false,
    stage: String::new(),
    fraction: 0.0,
    tokens: Vec::new(),
    cancel: None,
};

/// What the side's panes read while it is not focused: its own session and selection, `app`'s
/// look and keys, no pane focused, no live run, its own model job.
pub fn ctx<'a>(side: &'a SessionState, app: &'a App) -> Ctx<'a> {
    // No pane of this side is lit: its heads × layers pane is drawn with another focus.
    side.ctx(&app.look, &app.keymap, Pane::Grid, &IDLE)
}
