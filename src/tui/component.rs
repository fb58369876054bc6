//! Components: parts of the app that own their state, draw from `&self` and answer the actions
//! the keymap makes of keys (the manner of gitui's `components/`; docs/design.md, "The app").
//! A component reads the rest of the app through a [`Ctx`] and asks for changes outside itself
//! with [`Effect`]s; it never imports the app.

use std::collections::BTreeSet;

use ratatui::layout::Rect;
use ratatui::widgets::Block;
use ratatui::Frame;

use crate::explain::catalogue::MapId;
use crate::session::Session;
use crate::style::Look;

use super::blocks;
use super::keymap::{Action, Keymap};
use super::msg::Effect;
use super::state::{Method, Pane, PendingJob, RunState, Selection, ShownRegion};
use super::view::View;

/// Whether a component used an action (then nobody else sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The component did what the action says.
    Yes,
    /// Not this component's action; pass it on.
    No,
}

/// What components read from the rest of the app.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Colours.
    pub look: &'a Look,
    /// Keys → actions.
    pub keymap: &'a Keymap,
    /// The loaded session, if any.
    pub session: Option<&'a Session>,
    /// The numbers derived from the selection.
    pub view: &'a View,
    /// Which map is shown.
    pub sel: &'a Selection,
    /// The focused pane.
    pub focus: Pane,
    /// A live run in progress.
    pub run: &'a RunState,
    /// The model job in progress, if any.
    pub job: Option<&'a PendingJob>,
    /// Patch mode is on (the image pane's).
    pub patch_mode: bool,
    /// Selected patches (the image pane's).
    pub patches: &'a BTreeSet<usize>,
    /// Map opacity over the image (the image pane's).
    pub opacity: f32,
    /// Which of the session's image regions the image pane shows (an index).
    pub region: usize,
    /// The session holds results not yet saved.
    pub modified: bool,
    /// `(shown, total)`: the conversation turn shown (1-based) and the number of turns.
    pub turn: (usize, usize),
}

impl Ctx<'_> {
    /// While the image pane shows the vision tower's attention of a session that holds it:
    /// the vision layer shown, and the vision layers and heads held.
    pub fn vision_shown(&self) -> Option<(usize, usize, usize)> {
        if self.sel.method != Method::Attention || !self.sel.vision {
            return None;
        }
        let (layers, heads) = self.session?.attn_vit.as_ref()?.layers_heads();
        let last = layers.checked_sub(1)?;
        Some((
            self.sel.vision_layer.unwrap_or(last).min(last),
            layers,
            heads,
        ))
    }

    /// Decoder layers and heads of the session (0, 0 without one).
    pub fn layers_heads(&self) -> (usize, usize) {
        self.session.map_or((0, 0), |s| {
            (s.manifest.model.text_layers, s.manifest.model.text_heads)
        })
    }

    /// The patch grid `[rows, cols]` of the image region the image pane shows (`[0, 0]`
    /// without a session; the manifest's grid for a session without regions).
    pub fn grid(&self) -> [usize; 2] {
        match (self.session, self.shown_region()) {
            (_, Some(r)) => r.region.grid,
            (Some(s), None) => s.manifest.model.image_grid,
            (None, None) => [0, 0],
        }
    }

    /// The image region the image pane shows (the first when its index is past the session's
    /// regions); `None` without a session or a region.
    pub fn shown_region(&self) -> Option<ShownRegion> {
        ShownRegion::of(self.session?, self.region)
    }

    /// How many image regions the session has (0 without one).
    pub fn region_count(&self) -> usize {
        self.session.map_or(0, |s| s.regions().len())
    }

    /// Number of answer tokens (0 without a session).
    pub fn num_tokens(&self) -> usize {
        self.session.map_or(0, Session::num_output)
    }

    /// The first answer token the views use.
    pub fn token(&self) -> usize {
        self.view.tokens.first().copied().unwrap_or(0)
    }

    /// Width / height of the image region the image pane shows (the first region when the
    /// index is past the session's regions); `None` without a session or a region.
    pub fn aspect(&self) -> Option<f64> {
        let regions = self.session?.regions();
        regions
            .get(self.region)
            .or_else(|| regions.first())
            .map(|r| r.aspect())
    }

    /// The catalogue id of the map the image pane shows.
    pub fn map_id(&self) -> MapId {
        self.sel.map_id(self.layers_heads().0)
    }

    /// The frame of `pane`, highlighted when focused.
    pub fn frame<'b>(&self, pane: Pane, title: String) -> Block<'b> {
        blocks::pane_frame(self.look, self.focus == pane, title)
    }
}

/// A part of the app with its own state.
pub trait Component {
    /// Draws the component into `area`; changes nothing.
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx);

    /// Does what `action` says if it is this component's, pushing what it needs of the app
    /// onto `out`.
    fn handle(&mut self, action: Action, ctx: &Ctx, out: &mut Vec<Effect>) -> Handled;

    /// The actions the component answers now (for the footer and the help).
    fn commands(&self, ctx: &Ctx) -> Vec<Action>;
}
