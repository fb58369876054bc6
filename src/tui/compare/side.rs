//! One side of the split view kept aside: everything the app holds per session (the session,
//! its conversation, what is derived from it, the panes' cursors and results), swapped with
//! the app's own fields when the focus moves, and read through a [`Ctx`] of its own to draw.

use std::path::PathBuf;

use crate::explain::attention::TokenAggregates;
use crate::session::Session;

use super::super::app::App;
use super::super::component::Ctx;
use super::super::grid::GridPane;
use super::super::image::ImagePane;
use super::super::method::MethodPane;
use super::super::prompt::PromptPane;
use super::super::state::{Pane, PendingJob, RunState, Selection};
use super::super::tokens::AnswerPane;
use super::super::view::View;

/// The per-session state of the side that is not focused (the fields of [`App`] of the same
/// names).
#[derive(Debug, Default)]
pub struct Side {
    /// The session (the turn shown).
    pub session: Option<Session>,
    /// The whole conversation while an earlier turn is shown.
    pub talk: Option<Session>,
    /// Per-token aggregates of the session.
    pub aggregates: Option<TokenAggregates>,
    /// Where the session came from or was last saved.
    pub session_path: Option<PathBuf>,
    /// The side's session epoch (a job's result goes to the side whose epoch it carries).
    pub epoch: u64,
    /// The session holds results not yet saved.
    pub modified: bool,
    /// Which map is shown.
    pub sel: Selection,
    /// Token cursor and selection.
    pub answer: AnswerPane,
    /// Prompt cursor and selection.
    pub prompt: PromptPane,
    /// Method pane state (faithfulness, knockout, lens results).
    pub method: MethodPane,
    /// Heads × layers state (its scope and head scores).
    pub grid: GridPane,
    /// Image, patch cursor and selection, region.
    pub image: ImagePane,
    /// Numbers derived from the side's selection.
    pub view: View,
    /// What was computed on the side's other turns (a conversation's results per turn).
    pub kept: crate::tui::app::turns::KeptTurns,
    /// The side's model job under way (each side has its own; the job worker runs them one
    /// after the other).
    pub job: Option<PendingJob>,
    /// No live run: what the side's panes are told while it is not focused.
    idle: RunState,
}

impl Side {
    /// An empty side that shares `app`'s head scores, opacity and map selection.
    pub fn for_other(app: &App) -> Side {
        let mut image = ImagePane::default();
        image.set_opacity(app.image.opacity());
        Side {
            grid: app.grid.clone(),
            sel: app.sel,
            image,
            ..Side::default()
        }
    }

    /// Exchanges this side's state with the app's own fields.
    pub fn swap_with(&mut self, app: &mut App) {
        use std::mem::swap;
        swap(&mut self.session, &mut app.session);
        swap(&mut self.talk, &mut app.talk);
        swap(&mut self.aggregates, &mut app.aggregates);
        swap(&mut self.session_path, &mut app.session_path);
        swap(&mut self.epoch, &mut app.epoch);
        swap(&mut self.modified, &mut app.modified);
        swap(&mut self.sel, &mut app.sel);
        swap(&mut self.answer, &mut app.answer);
        swap(&mut self.prompt, &mut app.prompt);
        swap(&mut self.method, &mut app.method);
        swap(&mut self.grid, &mut app.grid);
        swap(&mut self.image, &mut app.image);
        swap(&mut self.view, &mut app.view);
        swap(&mut self.kept, &mut app.kept);
        swap(&mut self.job, &mut app.job);
    }

    /// What the side's panes read while it is not focused: its own session and selection,
    /// `app`'s look and keys, no pane focused, no live run, its own model job.
    pub fn ctx<'a>(&'a self, app: &'a App) -> Ctx<'a> {
        let total = self
            .talk
            .as_ref()
            .or(self.session.as_ref())
            .map_or(0, Session::num_turns);
        let shown = self.session.as_ref().map_or(0, Session::num_turns);
        Ctx {
            look: &app.look,
            keymap: &app.keymap,
            session: self.session.as_ref(),
            view: &self.view,
            sel: &self.sel,
            // No pane of this side is lit: its heads × layers pane is drawn with another focus.
            focus: Pane::Grid,
            run: &self.idle,
            job: self.job.as_ref(),
            patch_mode: self.image.patch_mode(),
            patches: self.image.patches(),
            opacity: self.image.opacity(),
            region: self.image.region(),
            modified: self.modified,
            turn: (shown, total),
        }
    }
}
