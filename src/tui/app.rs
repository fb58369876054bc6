//! The app's one model: what is loaded, what is selected, and the numbers the panes draw.
//!
//! Derived numbers (the current map, the small multiples, the grids, ...) live in [`View`] and
//! are recomputed by [`App::refresh`] after every change, never while drawing; per-token
//! aggregates over the whole of `attn.gen` are computed once per session ([`TokenAggregates`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ratatui::layout::Rect;

use crate::explain::attention::{HeadAgg, TokenAggregates};
use crate::explain::catalogue::{CausalHeads, Layers, MapId};
use crate::explain::relevancy::views::Normalization;
use crate::job::ModelJob;
use crate::session::{CausalParams, Session};
use crate::style::overlay::{denormalize, Raster};

/// The explanation method shown (keys 1–3): the catalogue's family of maps.
pub use crate::explain::catalogue::Family as Method;
/// Which relevancy map the image pane shows (key `m` under the relevancy method).
pub use crate::explain::catalogue::RelevancySource as RelSource;
use crate::style::Look;

use super::causal::CausalTree;
use super::component::Ctx;
use super::faithfulness::FaithState;
use super::help::HelpOverlay;
use super::keymap::Keymap;
use super::run_form::{RunForm, RunState};
use super::view::View;

/// The panes that take the keyboard, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// The answer tokens.
    Answer,
    /// The prompt tokens.
    Prompt,
    /// The image and its map.
    Image,
    /// The method pane (small multiples, bars, causal heads).
    Method,
    /// The heads × layers grid.
    Grid,
}

impl Pane {
    /// Tab order.
    pub const ORDER: [Pane; 5] = [
        Pane::Answer,
        Pane::Prompt,
        Pane::Image,
        Pane::Method,
        Pane::Grid,
    ];

    /// The pane after (`step` = 1) or before (`step` = −1) this one.
    pub fn cycle(self, step: isize) -> Pane {
        let i = Self::ORDER.iter().position(|&p| p == self).unwrap_or(0) as isize;
        let n = Self::ORDER.len() as isize;
        Self::ORDER[((i + step).rem_euclid(n)) as usize]
    }

    /// The pane's title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Answer => "Answer",
            Pane::Prompt => "Prompt",
            Pane::Image => "Image",
            Pane::Method => "Method",
            Pane::Grid => "Heads × layers",
        }
    }
}

/// How heads are combined (key `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// The current head only.
    Head,
    /// Mean over heads.
    Mean,
    /// Maximum over heads.
    Max,
}

impl Agg {
    /// The next mode.
    pub fn next(self) -> Agg {
        match self {
            Agg::Head => Agg::Mean,
            Agg::Mean => Agg::Max,
            Agg::Max => Agg::Head,
        }
    }
}

/// What the method pane shows under the attention method (key `v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnView {
    /// All heads of the layer as small multiples, sorted by mean image attention.
    Heads,
    /// The share of attention each answer token gives to the image.
    Share,
    /// Answer → prompt-word attention.
    Words,
}

impl AttnView {
    /// The next view.
    pub fn next(self) -> AttnView {
        match self {
            AttnView::Heads => AttnView::Share,
            AttnView::Share => AttnView::Words,
            AttnView::Words => AttnView::Heads,
        }
    }
}

/// A line for the status bar: information or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// Whether it reports a failure.
    pub error: bool,
}

/// A model job (relevancy, faithfulness) running on the job worker.
#[derive(Debug, Clone)]
pub struct PendingJob {
    /// Its id, echoed by the worker's messages.
    pub id: u64,
    /// What it computes.
    pub job: ModelJob,
    /// The current stage ("loading model …", "relevancy of token 3", "faithfulness of token 3").
    pub stage: String,
    /// Fraction of the stage done.
    pub fraction: f64,
    /// Set to cancel it.
    pub cancel: Arc<AtomicBool>,
}

/// The app's state.
#[derive(Debug)]
pub struct App {
    /// The loaded session, if any.
    pub session: Option<Session>,
    /// Per-token aggregates of the loaded session.
    pub aggregates: Option<TokenAggregates>,
    /// Where the session came from or was last saved.
    pub session_path: Option<PathBuf>,
    /// Colours.
    pub look: Look,
    /// The focused pane.
    pub focus: Pane,
    /// The method shown.
    pub method: Method,
    /// Cursor over answer tokens.
    pub token: usize,
    /// Answer tokens selected with space (empty: the cursor token alone).
    pub tokens: BTreeSet<usize>,
    /// Cursor over prompt positions (an input position outside the image).
    pub prompt_cursor: usize,
    /// Prompt positions selected with space.
    pub prompt_selected: BTreeSet<usize>,
    /// Decoder layer.
    pub layer: usize,
    /// Head (used when `agg` is [`Agg::Head`]).
    pub head: usize,
    /// Head aggregation.
    pub agg: Agg,
    /// Patch mode: the image pane's cursor selects patches and answer tokens show their
    /// attention to the selection.
    pub patch_mode: bool,
    /// Patch cursor (row-major grid index).
    pub patch: usize,
    /// Selected patches.
    pub patches: BTreeSet<usize>,
    /// Method-pane view under the attention method.
    pub attn_view: AttnView,
    /// Relevancy source.
    pub rel_source: RelSource,
    /// Heads × layers grid over every answer token (true) or the selection (false).
    pub grid_all_tokens: bool,
    /// Map opacity over the image.
    pub opacity: f32,
    /// The help overlay.
    pub help: HelpOverlay,
    /// The status-bar notice.
    pub notice: Option<Notice>,
    /// A live run in progress or its form.
    pub run: RunState,
    /// The new-run form, while open.
    pub form: Option<RunForm>,
    /// Set when the app should exit.
    pub quit: bool,
    /// Numbers derived from the selection, recomputed by [`App::refresh`].
    pub view: View,
    /// The terminal's size (updated on resize): mouse clicks are mapped through the layout of
    /// a frame this big.
    pub screen: Rect,
    /// The session's image as RGB.
    pub image: Option<Raster>,
    /// CLEANN parameters for the next causal computation (keys `a A t T r R`).
    pub causal_params: CausalParams,
    /// The radius of the causal explanation shown (keys `- +`; clamped to the search radius).
    pub causal_radius: usize,
    /// The possible-d-separation tree of the shown head, recomputed on demand.
    pub causal_tree: Option<CausalTree>,
    /// How relevancy rows are normalised for the text bars and the decoder map (key `N`).
    pub rel_norm: Normalization,
    /// The model job in progress, if any (one at a time).
    pub job: Option<PendingJob>,
    /// The id of the last model job asked for.
    pub last_job_id: u64,
    /// Counts the sessions shown; a job's result is stored only in the session it was asked
    /// for.
    pub epoch: u64,
    /// The session holds results not yet saved (relevancy or causal computed in the app).
    pub modified: bool,
    /// Faithfulness of the maps (key `f`), measured for this session.
    pub faith: FaithState,
    /// Keys → actions (the theme's `[keys]` table over the defaults).
    pub keymap: Keymap,
}

impl App {
    /// An app with nothing loaded; a theme whose `[keys]` table cannot be read leaves the
    /// default keys and says why in the status line.
    pub fn new(look: Look) -> Self {
        let (keymap, notice) = match Keymap::with_overrides(&look.theme.keys) {
            Ok(k) => (k, None),
            Err(e) => (
                Keymap::default(),
                Some(Notice {
                    text: format!("theme keys: {e}; the default keys apply"),
                    error: true,
                }),
            ),
        };
        Self {
            session: None,
            aggregates: None,
            session_path: None,
            look,
            focus: Pane::Answer,
            method: Method::Attention,
            token: 0,
            tokens: BTreeSet::new(),
            prompt_cursor: 0,
            prompt_selected: BTreeSet::new(),
            layer: 0,
            head: 0,
            agg: Agg::Mean,
            patch_mode: false,
            patch: 0,
            patches: BTreeSet::new(),
            attn_view: AttnView::Heads,
            rel_source: RelSource::Combined,
            grid_all_tokens: true,
            opacity: 0.6,
            help: HelpOverlay::default(),
            notice,
            run: RunState::default(),
            form: None,
            quit: false,
            view: View::default(),
            screen: Rect::default(),
            image: None,
            causal_params: CausalParams::default(),
            causal_radius: usize::MAX,
            causal_tree: None,
            rel_norm: Normalization::default(),
            job: None,
            last_job_id: 0,
            epoch: 0,
            modified: false,
            faith: FaithState::default(),
            keymap,
        }
    }

    /// What components read from the app.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            look: &self.look,
            keymap: &self.keymap,
        }
    }

    /// An app showing `session`.
    pub fn with_session(look: Look, session: Session, path: Option<PathBuf>) -> Self {
        let mut app = Self::new(look);
        app.set_session(session, path);
        app
    }

    /// Replaces the session, resets the selection and recomputes everything.
    pub fn set_session(&mut self, session: Session, path: Option<PathBuf>) {
        self.aggregates = TokenAggregates::compute(&session).ok();
        self.image = Some(denormalize(&session.pixel_values));
        self.token = 0;
        self.tokens.clear();
        self.prompt_selected.clear();
        self.patches.clear();
        self.patch = 0;
        self.layer = session.manifest.model.text_layers.saturating_sub(1) / 2;
        self.head = 0;
        self.prompt_cursor = prompt_positions(&session).first().copied().unwrap_or(0);
        self.causal_params = CausalParams::of_session(&session);
        self.causal_radius = self.causal_params.search_radius;
        self.causal_tree = None;
        if let Some(job) = self.job.take() {
            job.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.epoch += 1;
        self.modified = false;
        self.faith = self.faith.for_new_session();
        self.session = Some(session);
        self.session_path = path;
        self.refresh();
    }

    /// The answer tokens the views use: the selection, or the cursor token.
    pub fn selected_tokens(&self) -> Vec<usize> {
        if self.tokens.is_empty() {
            vec![self.token]
        } else {
            self.tokens.iter().copied().collect()
        }
    }

    /// Number of answer tokens (0 without a session).
    pub fn num_tokens(&self) -> usize {
        self.session.as_ref().map_or(0, Session::num_output)
    }

    /// Decoder layers and heads of the session (0, 0 without one).
    pub fn layers_heads(&self) -> (usize, usize) {
        self.session.as_ref().map_or((0, 0), |s| {
            (s.manifest.model.text_layers, s.manifest.model.text_heads)
        })
    }

    /// The patch grid `[rows, cols]` (`[0, 0]` without a session).
    pub fn grid(&self) -> [usize; 2] {
        self.session
            .as_ref()
            .map_or([0, 0], |s| s.manifest.model.image_grid)
    }

    /// The head aggregation as the explain layer spells it.
    pub fn head_agg(&self) -> HeadAgg {
        match self.agg {
            Agg::Head => HeadAgg::Head(self.head),
            Agg::Mean => HeadAgg::Mean,
            Agg::Max => HeadAgg::Max,
        }
    }

    /// The raw-attention map of the current layer and heads (what the attention method shows).
    pub fn attention_id(&self) -> MapId {
        MapId::attention(self.layer, self.layers_heads().0, self.head_agg())
    }

    /// The catalogue id of the map the image pane shows.
    pub fn map_id(&self) -> MapId {
        match self.method {
            Method::Attention => self.attention_id(),
            Method::Relevancy => MapId::relevancy(self.rel_source, self.rel_norm),
            Method::Causal => MapId::Causal(match self.agg {
                Agg::Mean => CausalHeads::Sum,
                Agg::Max => CausalHeads::Max,
                Agg::Head => CausalHeads::Head(self.head),
            }),
            Method::Random => MapId::Random,
            Method::Lens => MapId::Lens(self.layer),
        }
    }

    /// Sets the method, layer, heads and relevancy source so that the image pane shows `id`,
    /// and recomputes the view; `false` (nothing changed) for a map the app does not show as
    /// its image map (the mean over layers).
    pub fn show(&mut self, id: MapId) -> bool {
        let (layers, _) = self.layers_heads();
        let heads = match id {
            MapId::Attention {
                layers: Layers::Mean,
                ..
            } => return false,
            MapId::Attention { heads, .. } => Some(heads),
            MapId::Causal(CausalHeads::Sum) => Some(HeadAgg::Mean),
            MapId::Causal(CausalHeads::Max) => Some(HeadAgg::Max),
            MapId::Causal(CausalHeads::Head(h)) => Some(HeadAgg::Head(h)),
            _ => None,
        };
        match heads {
            Some(HeadAgg::Mean) => self.agg = Agg::Mean,
            Some(HeadAgg::Max) => self.agg = Agg::Max,
            Some(HeadAgg::Head(h)) => {
                self.agg = Agg::Head;
                self.head = h;
            }
            None => {}
        }
        self.method = id.family();
        match id {
            MapId::Attention {
                layers: Layers::At(l),
                ..
            } => self.layer = l,
            MapId::Attention { .. } => self.layer = layers.saturating_sub(1),
            MapId::Relevancy { source, norm } => {
                self.rel_source = source;
                self.rel_norm = norm;
            }
            MapId::Lens(l) => self.layer = l,
            MapId::Heads(_) | MapId::Causal(_) | MapId::Random => {}
        }
        self.refresh();
        true
    }

    /// Shows a notice in the status bar.
    pub fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            text: text.into(),
            error,
        });
    }

    /// Recomputes the derived numbers for the current selection.
    pub fn refresh(&mut self) {
        self.view = View::compute(self);
        super::causal::refresh_tree(self);
    }
}

/// Input positions of the prompt that are not image features.
pub fn prompt_positions(s: &Session) -> Vec<usize> {
    let image = s.image_range();
    (0..s.num_input()).filter(|p| !image.contains(p)).collect()
}
