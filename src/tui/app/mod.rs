//! The app: the session and everything held per session ([`SessionState`]), the focus, the
//! app-wide components, and the live run in progress.
//!
//! Derived numbers (the current map, the small multiples, the grids, ...) live in
//! [`super::view::View`] and are recomputed by [`App::refresh`] after every change, never
//! while drawing; per-token aggregates over the whole of `attn.gen` are computed once per
//! session ([`TokenAggregates`]).

pub mod draw;
pub mod session_state;
pub mod turns;

use std::path::PathBuf;

use ratatui::layout::Rect;

use crate::explain::attention::{HeadAgg, TokenAggregates};
use crate::explain::catalogue::{CausalHeads, Layers, MapId};
use crate::session::Session;
use crate::style::Look;

pub use super::state::{
    prompt_positions, Agg, AttnView, Method, Notice, Pane, PendingJob, RelSource, RunState,
    Selection,
};

use super::component::Ctx;
use super::help::HelpOverlay;
use super::keymap::Keymap;
use super::method::TurnMeasures;
use super::prompt::PromptPane;
use super::run_form::RunFormPane;
use super::status::StatusBar;
use super::tokens::AnswerPane;
pub use session_state::{SessionStamp, SessionState, TrackedSession};

/// The [`Ctx`] of an app, borrowing only the fields that are not components, so that a
/// component can be borrowed mutably beside it; the image pane's selected patches are given
/// as the second argument when the image pane is to be borrowed mutably too. The `@doc` form
/// is the one place a `Ctx` is built: from a [`SessionState`] and the app-wide parts.
macro_rules! ctx {
    ($app:expr) => {
        $crate::tui::app::ctx!($app, $app.doc.image.patches())
    };
    ($app:expr, $patches:expr) => {
        $crate::tui::app::ctx!(
            @doc $app.doc, $patches, &$app.look, &$app.keymap, $app.focus, &$app.run
        )
    };
    (@doc $doc:expr, $patches:expr, $look:expr, $keymap:expr, $focus:expr, $run:expr) => {
        $crate::tui::component::Ctx {
            look: $look,
            keymap: $keymap,
            session: $doc.session.as_ref(),
            view: &$doc.view,
            sel: &$doc.sel,
            focus: $focus,
            run: $run,
            job: $doc.job.as_ref(),
            patch_mode: $doc.image.patch_mode(),
            patches: $patches,
            opacity: $doc.image.opacity(),
            region: $doc.image.region(),
            modified: $doc.modified,
            turn: $doc.turn_position(),
        }
    };
}
pub(crate) use ctx;

/// The app's state.
#[derive(Debug)]
pub struct App {
    /// The session shown and everything held per session (the split view's focused side).
    pub doc: SessionState,
    /// Colours.
    pub look: Look,
    /// Keys → actions (the theme's `[keys]` table over the defaults).
    pub keymap: Keymap,
    /// The focused pane.
    pub focus: Pane,
    /// The status line (the notice).
    pub status: StatusBar,
    /// The new-run form.
    pub form: RunFormPane,
    /// The help overlay.
    pub help: HelpOverlay,
    /// The terminal's size (updated on resize): mouse clicks are mapped through the layout of
    /// a frame this big.
    pub screen: Rect,
    /// A live run in progress (its worker reports through messages).
    pub run: RunState,
    /// The id of the last model job asked for.
    pub last_job_id: u64,
    /// Set when the app should exit.
    pub quit: bool,
    /// The split view's other side and comparison (`tui --compare`, `B`), when it is open.
    pub compare: Option<super::compare::ComparePane>,
    /// The one-line prompt that opens session B (`B`).
    pub open_b: super::compare::open::OpenPrompt,
    /// What a closed split view's side B left under way (its results are dropped).
    pub orphans: super::compare::Orphans,
}

impl App {
    /// An app with nothing loaded; a theme whose `[keys]` table cannot be read leaves the
    /// default keys and says why in the status line.
    pub fn new(look: Look) -> Self {
        let mut status = StatusBar::default();
        let keymap = Keymap::with_overrides(&look.theme.keys).unwrap_or_else(|e| {
            status.notify(format!("theme keys: {e}; the default keys apply"), true);
            Keymap::default()
        });
        Self {
            doc: SessionState::default(),
            look,
            keymap,
            focus: Pane::Answer,
            status,
            form: RunFormPane::default(),
            help: HelpOverlay::default(),
            screen: Rect::default(),
            run: RunState::default(),
            last_job_id: 0,
            quit: false,
            compare: None,
            open_b: Default::default(),
            orphans: Default::default(),
        }
    }

    /// What components read from the app.
    pub fn ctx(&self) -> Ctx<'_> {
        self.doc
            .ctx(&self.look, &self.keymap, self.focus, &self.run)
    }

    /// An app showing `session`.
    pub fn with_session(look: Look, session: Session, path: Option<PathBuf>) -> Self {
        let mut app = Self::new(look);
        app.set_session(session, path);
        app
    }

    /// Replaces the session, resets the selection and recomputes everything. What was
    /// computed on the turns of the conversation shown before is kept for the turns the new
    /// session shares with it (a follow-up's earlier turns), else dropped.
    pub fn set_session(&mut self, session: Session, path: Option<PathBuf>) {
        let old = self.take_turns();
        self.doc.kept = turns::carry(std::mem::take(&mut self.doc.kept), old, &session);
        self.open_session(session, path, None);
    }

    /// Shows `session` (a conversation, or one of its turns with the conversation set aside
    /// by the caller), with what was measured on it before.
    fn open_session(
        &mut self,
        session: Session,
        path: Option<PathBuf>,
        measures: Option<TurnMeasures>,
    ) {
        self.doc.talk = None;
        self.doc.aggregates = TokenAggregates::compute(&session).ok();
        self.doc.image.open_session(&session);
        self.doc.answer = AnswerPane::default();
        self.doc.prompt = PromptPane::for_session(&session);
        self.doc.sel.layer = session.manifest.model.text_layers.saturating_sub(1) / 2;
        self.doc.sel.head = 0;
        self.doc.sel.vision_layer = None;
        self.doc.method.open_session(&session);
        if let Some(m) = measures {
            self.doc.method.restore(m);
        }
        if let Some(why) = self.doc.grid.open_session(&session) {
            self.notify(why, true);
        }
        if let Some(job) = self.doc.job.take() {
            job.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.doc.epoch += 1;
        self.doc.modified = false;
        self.doc.session.set(Some(session));
        self.doc.session_path = path;
        self.refresh();
    }

    /// Shows turn `k` (0-based) of the conversation as the session (the views work on it as
    /// on one question), with what was computed on it when it was last shown (relevancy,
    /// causal and lens results, faithfulness, the last knockout). `false` when there is no
    /// such turn.
    pub fn show_turn(&mut self, k: usize) -> bool {
        if self.doc.conversation().is_none_or(|c| k >= c.num_turns()) {
            return false;
        }
        let Some((full, shown, kept)) = self.take_turns() else {
            return false;
        };
        self.doc.kept.insert(shown, kept);
        let (path, modified) = (self.doc.session_path.clone(), self.doc.modified);
        let again = self.doc.kept.remove(&k);
        let measures = again.as_ref().map(|t| t.measures.clone());
        if k + 1 == full.num_turns() {
            self.open_session(full, path, measures);
        } else {
            let turn = again.and_then(|t| t.session);
            let Some(turn) = turn.or_else(|| full.turn(k).map(|t| t.into_owned())) else {
                self.doc.session.set(Some(full));
                return false;
            };
            self.open_session(turn, path, measures);
            self.doc.talk = Some(full);
        }
        self.doc.modified = modified;
        true
    }

    /// The answer tokens the views use: the selection, or the cursor token.
    pub fn selected_tokens(&self) -> Vec<usize> {
        self.doc.answer.tokens()
    }

    /// Number of answer tokens (0 without a session).
    pub fn num_tokens(&self) -> usize {
        self.doc.session.as_ref().map_or(0, Session::num_output)
    }

    /// Decoder layers and heads of the session (0, 0 without one).
    pub fn layers_heads(&self) -> (usize, usize) {
        self.ctx().layers_heads()
    }

    /// The patch grid `[rows, cols]` of the image region shown (`[0, 0]` without a session).
    pub fn grid(&self) -> [usize; 2] {
        self.ctx().grid()
    }

    /// The catalogue id of the map the image pane shows.
    pub fn map_id(&self) -> MapId {
        self.doc.sel.map_id(self.layers_heads().0)
    }

    /// Sets the method, layer, heads and relevancy source so that the image pane shows `id`,
    /// and recomputes the view; `false` (nothing changed) for a map the app does not show as
    /// its image map (the mean over layers).
    pub fn show(&mut self, id: MapId) -> bool {
        let (layers, _) = self.layers_heads();
        let sel = &mut self.doc.sel;
        let heads = match id {
            MapId::Attention {
                layers: Layers::Mean,
                ..
            }
            | MapId::Vision {
                layers: Layers::Mean,
                ..
            } => return false,
            MapId::Attention { heads, .. } | MapId::Vision { heads, .. } => Some(heads),
            MapId::Causal(CausalHeads::Sum) => Some(HeadAgg::Mean),
            MapId::Causal(CausalHeads::Max) => Some(HeadAgg::Max),
            MapId::Causal(CausalHeads::Head(h)) => Some(HeadAgg::Head(h)),
            _ => None,
        };
        match heads {
            Some(HeadAgg::Mean) => sel.agg = Agg::Mean,
            Some(HeadAgg::Max) => sel.agg = Agg::Max,
            Some(HeadAgg::Head(h)) => {
                sel.agg = Agg::Head;
                sel.head = h;
            }
            None => {}
        }
        sel.method = id.family();
        sel.vision = matches!(id, MapId::Vision { .. });
        match id {
            MapId::Attention {
                layers: Layers::At(l),
                ..
            } => sel.layer = l,
            MapId::Attention { .. } => sel.layer = layers.saturating_sub(1),
            MapId::Relevancy { source, norm } => {
                sel.rel_source = source;
                sel.rel_norm = norm;
            }
            MapId::Lens(l) => self.doc.sel.layer = l,
            MapId::Vision {
                layers: Layers::At(l),
                ..
            } => sel.vision_layer = Some(l),
            MapId::Vision { .. } => sel.vision_layer = None,
            MapId::Heads(_) | MapId::Causal(_) | MapId::Random => {}
        }
        self.refresh();
        true
    }

    /// Shows a notice in the status bar.
    pub fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.status.notify(text, error);
    }

    /// Recomputes the derived numbers for the current selection (the split view's other side
    /// and comparison too).
    pub fn refresh(&mut self) {
        self.doc.refresh_view();
        super::compare::refresh(self);
    }
}
