//! The app: the session, the focus, the selection of the map shown, the components that own
//! the rest of the state, and the channels of work in progress (a live run, a model job).
//!
//! Derived numbers (the current map, the small multiples, the grids, ...) live in [`View`] and
//! are recomputed by [`App::refresh`] after every change, never while drawing; per-token
//! aggregates over the whole of `attn.gen` are computed once per session ([`TokenAggregates`]).

pub mod draw;
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
use super::grid::GridPane;
use super::help::HelpOverlay;
use super::image::ImagePane;
use super::keymap::Keymap;
use super::method::{MethodPane, TurnMeasures};
use super::prompt::PromptPane;
use super::run_form::RunFormPane;
use super::status::StatusBar;
use super::tokens::AnswerPane;
use super::view::{View, ViewInput};

/// The [`Ctx`] of an app, borrowing only the fields that are not components, so that a
/// component can be borrowed mutably beside it; the image pane's selected patches are given
/// as the second argument when the image pane is to be borrowed mutably too.
macro_rules! ctx {
    ($app:expr) => {
        $crate::tui::app::ctx!($app, $app.image.patches())
    };
    ($app:expr, $patches:expr) => {
        $crate::tui::component::Ctx {
            look: &$app.look,
            keymap: &$app.keymap,
            session: $app.session.as_ref(),
            view: &$app.view,
            sel: &$app.sel,
            focus: $app.focus,
            run: &$app.run,
            job: $app.job.as_ref(),
            patch_mode: $app.image.patch_mode(),
            patches: $patches,
            opacity: $app.image.opacity(),
            region: $app.image.region(),
            modified: $app.modified,
            turn: $app.turn_position(),
        }
    };
}
pub(crate) use ctx;

/// The app's state.
#[derive(Debug)]
pub struct App {
    /// The loaded session, if any (the turn shown, when an earlier turn of a conversation is).
    pub session: Option<Session>,
    /// The whole conversation while an earlier turn of it is shown (`session` is that turn).
    pub talk: Option<Session>,
    /// Per-token aggregates of the loaded session.
    pub aggregates: Option<TokenAggregates>,
    /// Where the session came from or was last saved.
    pub session_path: Option<PathBuf>,
    /// Counts the sessions shown; a job's result is stored only in the session it was asked
    /// for.
    pub epoch: u64,
    /// The session holds results not yet saved (relevancy or causal computed in the app).
    pub modified: bool,
    /// Colours.
    pub look: Look,
    /// Keys → actions (the theme's `[keys]` table over the defaults).
    pub keymap: Keymap,
    /// The focused pane.
    pub focus: Pane,
    /// Which map is shown: method, layer, heads, relevancy source and normalisation.
    pub sel: Selection,
    /// The answer pane (token cursor and selection).
    pub answer: AnswerPane,
    /// The prompt pane (prompt cursor and selection).
    pub prompt: PromptPane,
    /// The method pane (attention view, causal parameters, faithfulness).
    pub method: MethodPane,
    /// The heads × layers pane (its scope).
    pub grid: GridPane,
    /// The status line (the notice).
    pub status: StatusBar,
    /// The new-run form.
    pub form: RunFormPane,
    /// The help overlay.
    pub help: HelpOverlay,
    /// The image pane (patch mode, cursor and selection, opacity, the image, its region).
    pub image: ImagePane,
    /// Numbers derived from the selection, recomputed by [`App::refresh`].
    pub view: View,
    /// The terminal's size (updated on resize): mouse clicks are mapped through the layout of
    /// a frame this big.
    pub screen: Rect,
    /// A live run in progress (its worker reports through messages).
    pub run: RunState,
    /// The model job in progress on the session shown, if any (one at a time; the split view's
    /// other side keeps its own).
    pub job: Option<PendingJob>,
    /// The id of the last model job asked for.
    pub last_job_id: u64,
    /// Set when the app should exit.
    pub quit: bool,
    /// The split view's other side and comparison (`tui --compare`, `B`), when it is open.
    pub compare: Option<super::compare::ComparePane>,
    /// The one-line prompt that opens session B (`B`).
    pub open_b: super::compare::open::OpenPrompt,
    /// What was computed on the conversation's other turns, by 0-based turn, shown again when
    /// `(` `)` come back to them.
    pub kept: turns::KeptTurns,
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
            session: None,
            talk: None,
            aggregates: None,
            session_path: None,
            epoch: 0,
            modified: false,
            look,
            keymap,
            focus: Pane::Answer,
            sel: Selection::default(),
            answer: AnswerPane::default(),
            prompt: PromptPane::default(),
            method: MethodPane::default(),
            grid: GridPane::default(),
            status,
            form: RunFormPane::default(),
            help: HelpOverlay::default(),
            image: ImagePane::default(),
            view: View::default(),
            screen: Rect::default(),
            run: RunState::default(),
            job: None,
            last_job_id: 0,
            quit: false,
            compare: None,
            open_b: Default::default(),
            kept: turns::KeptTurns::new(),
            orphans: Default::default(),
        }
    }

    /// What components read from the app.
    pub fn ctx(&self) -> Ctx<'_> {
        ctx!(self)
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
        self.kept = turns::carry(std::mem::take(&mut self.kept), old, &session);
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
        self.talk = None;
        self.aggregates = TokenAggregates::compute(&session).ok();
        self.image.open_session(&session);
        self.answer = AnswerPane::default();
        self.prompt = PromptPane::for_session(&session);
        self.sel.layer = session.manifest.model.text_layers.saturating_sub(1) / 2;
        self.sel.head = 0;
        self.sel.vision_layer = None;
        self.method.open_session(&session);
        if let Some(m) = measures {
            self.method.restore(m);
        }
        if let Some(why) = self.grid.open_session(&session) {
            self.notify(why, true);
        }
        if let Some(job) = self.job.take() {
            job.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.epoch += 1;
        self.modified = false;
        self.session = Some(session);
        self.session_path = path;
        self.refresh();
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

    /// Shows turn `k` (0-based) of the conversation as the session (the views work on it as
    /// on one question), with what was computed on it when it was last shown (relevancy,
    /// causal and lens results, faithfulness, the last knockout). `false` when there is no
    /// such turn.
    pub fn show_turn(&mut self, k: usize) -> bool {
        if self.conversation().is_none_or(|c| k >= c.num_turns()) {
            return false;
        }
        let Some((full, shown, kept)) = self.take_turns() else {
            return false;
        };
        self.kept.insert(shown, kept);
        let (path, modified) = (self.session_path.clone(), self.modified);
        let again = self.kept.remove(&k);
        let measures = again.as_ref().map(|t| t.measures.clone());
        if k + 1 == full.num_turns() {
            self.open_session(full, path, measures);
        } else {
            let turn = again.and_then(|t| t.session);
            let Some(turn) = turn.or_else(|| full.turn(k).map(|t| t.into_owned())) else {
                self.session = Some(full);
                return false;
            };
            self.open_session(turn, path, measures);
            self.talk = Some(full);
        }
        self.modified = modified;
        true
    }

    /// The answer tokens the views use: the selection, or the cursor token.
    pub fn selected_tokens(&self) -> Vec<usize> {
        self.answer.tokens()
    }

    /// Number of answer tokens (0 without a session).
    pub fn num_tokens(&self) -> usize {
        self.session.as_ref().map_or(0, Session::num_output)
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
        self.sel.map_id(self.layers_heads().0)
    }

    /// Sets the method, layer, heads and relevancy source so that the image pane shows `id`,
    /// and recomputes the view; `false` (nothing changed) for a map the app does not show as
    /// its image map (the mean over layers).
    pub fn show(&mut self, id: MapId) -> bool {
        let (layers, _) = self.layers_heads();
        let sel = &mut self.sel;
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
            MapId::Lens(l) => self.sel.layer = l,
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
        self.refresh_view();
        super::compare::refresh(self);
    }

    /// Recomputes the derived numbers of the app's own session for its selection.
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
