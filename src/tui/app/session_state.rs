//! Everything the app holds per session, in one struct: the session and its conversation, what
//! is derived from it, the panes' cursors and results, the model job under way and the
//! session's epoch and revision. The app holds one ([`super::App::doc`]); the split view's
//! side that is not focused holds the other, and moving the focus swaps the two whole.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::explain::attention::TokenAggregates;
use crate::session::Session;
use crate::style::Look;

use super::super::component::Ctx;
use super::super::grid::GridPane;
use super::super::image::ImagePane;
use super::super::keymap::Keymap;
use super::super::method::MethodPane;
use super::super::prompt::PromptPane;
use super::super::state::{Pane, PendingJob, RunState, Selection};
use super::super::tokens::AnswerPane;
use super::super::view::{View, ViewInput};
use super::turns::KeptTurns;

/// The session shown, with a revision that every change to it bumps: every way to change it
/// (`as_mut`, `set`, `take`) draws a new one, so whatever is derived from the session and kept
/// can tell exactly whether it still holds. Revisions come from one counter for the whole
/// process, so no two states of any sessions share one (a tracked session replaced whole by
/// a fresh one cannot repeat an old revision).
#[derive(Debug, Default)]
pub struct TrackedSession {
    session: Option<Session>,
    revision: u64,
}

impl TrackedSession {
    /// The session, if any.
    pub fn as_ref(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The session to change, if any (counts as a change).
    pub fn as_mut(&mut self) -> Option<&mut Session> {
        self.bump();
        self.session.as_mut()
    }

    /// Whether there is a session.
    pub fn is_some(&self) -> bool {
        self.session.is_some()
    }

    /// Whether there is none.
    pub fn is_none(&self) -> bool {
        self.session.is_none()
    }

    /// Replaces the session.
    pub fn set(&mut self, session: Option<Session>) {
        self.bump();
        self.session = session;
    }

    /// Takes the session out, leaving none.
    pub fn take(&mut self) -> Option<Session> {
        self.bump();
        self.session.take()
    }

    /// The session's revision: a new number after every change (0 before the first).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn bump(&mut self) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        self.revision = NEXT.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which session, at which revision: equal stamps mean the same session, unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SessionStamp {
    /// The session's epoch (a new one per session or turn shown).
    pub epoch: u64,
    /// Its revision ([`TrackedSession::revision`]).
    pub revision: u64,
}

/// The per-session state of the app (the focused side of the split view) or of the split
/// view's other side.
#[derive(Debug, Default)]
pub struct SessionState {
    /// The loaded session, if any (the turn shown, when an earlier turn of a conversation is).
    pub session: TrackedSession,
    /// The whole conversation while an earlier turn of it is shown (`session` is that turn).
    pub talk: Option<Session>,
    /// Per-token aggregates of the loaded session.
    pub aggregates: Option<TokenAggregates>,
    /// Where the session came from or was last saved.
    pub session_path: Option<PathBuf>,
    /// Counts the sessions shown; a job's result is stored only in the session it was asked
    /// for (the split view keeps its two sides' epochs apart).
    pub epoch: u64,
    /// The session holds results not yet saved (relevancy or causal computed in the app).
    pub modified: bool,
    /// Which map is shown: method, layer, heads, relevancy source and normalisation.
    pub sel: Selection,
    /// The answer pane (token cursor and selection).
    pub answer: AnswerPane,
    /// The prompt pane (prompt cursor and selection).
    pub prompt: PromptPane,
    /// The method pane (attention view, causal parameters, faithfulness).
    pub method: MethodPane,
    /// The heads × layers pane (its scope and head scores).
    pub grid: GridPane,
    /// The image pane (patch mode, cursor and selection, opacity, the image, its region).
    pub image: ImagePane,
    /// Numbers derived from the selection, recomputed by [`super::App::refresh`].
    pub view: View,
    /// What was computed on the conversation's other turns, by 0-based turn, shown again when
    /// `(` `)` come back to them.
    pub kept: KeptTurns,
    /// The model job in progress on the session, if any (one at a time per session).
    pub job: Option<PendingJob>,
}

impl SessionState {
    /// An empty state beside this one (the split view's new side) that shares its head
    /// scores, opacity and map selection.
    pub fn beside(&self) -> SessionState {
        let mut image = ImagePane::default();
        image.set_opacity(self.image.opacity());
        SessionState {
            grid: self.grid.clone(),
            sel: self.sel,
            image,
            ..SessionState::default()
        }
    }

    /// Which session this is and how often it changed.
    pub fn stamp(&self) -> SessionStamp {
        SessionStamp {
            epoch: self.epoch,
            revision: self.session.revision(),
        }
    }

    /// The session with its stamp, if there is one.
    pub fn stamped(&self) -> Option<(&Session, SessionStamp)> {
        Some((self.session.as_ref()?, self.stamp()))
    }

    /// The whole conversation of the session shown (what is saved and followed up).
    pub fn conversation(&self) -> Option<&Session> {
        self.talk.as_ref().or(self.session.as_ref())
    }

    /// `(shown, total)`: the turn shown (1-based) and the conversation's turns; `(0, 0)`
    /// without a session.
    pub fn turn_position(&self) -> (usize, usize) {
        let total = self.conversation().map_or(0, Session::num_turns);
        let shown = self.session.as_ref().map_or(0, Session::num_turns);
        (shown, total)
    }

    /// What components read: this state, with the app-wide colours, keys, focus and live run.
    pub fn ctx<'a>(
        &'a self,
        look: &'a Look,
        keymap: &'a Keymap,
        focus: Pane,
        run: &'a RunState,
    ) -> Ctx<'a> {
        super::ctx!(@doc self, self.image.patches(), look, keymap, focus, run)
    }

    /// Recomputes the numbers derived from the session for its selection (the `View`, and
    /// what the method pane keeps from it).
    pub fn refresh_view(&mut self) {
        let tokens = self.answer.tokens();
        let input = ViewInput {
            session: self.session.as_ref(),
            aggregates: self.aggregates.as_ref(),
            sel: &self.sel,
            tokens: &tokens,
            cursor: self.answer.cursor(),
            one_token: self.answer.selected().len() <= 1,
            patches: self.image.patch_mode().then_some(self.image.patches()),
            region: self.image.region(),
            prompt_selected: self.prompt.selected(),
            attn_view: self.method.attn_view(),
            grid_all_tokens: self.grid.all_tokens(),
            causal: self.method.causal(),
            faith: self.method.faith(),
        };
        self.view = View::compute(&input);
        self.method.refresh(self.session.as_ref(), &self.view);
    }
}
