//! Components: parts of the app that own their state, draw from `&self` and answer the actions
//! the keymap makes of keys (the manner of gitui's `components/`; docs/design.md, "The app").

use ratatui::layout::Rect;
use ratatui::Frame;

use crate::style::Look;

use super::keymap::{Action, Keymap};

/// Whether a component used an action (then nobody else sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The component did what the action says.
    Yes,
    /// Not this component's action; pass it on.
    No,
}

/// What components read from the rest of the app: colours and the keys.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Colours.
    pub look: &'a Look,
    /// Keys → actions.
    pub keymap: &'a Keymap,
}

/// A part of the app with its own state.
pub trait Component {
    /// Draws the component into `area`; changes nothing.
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx);

    /// Does what `action` says if it is this component's.
    fn handle(&mut self, action: Action) -> Handled;

    /// The actions the component answers now (for the footer and the help).
    fn commands(&self) -> Vec<Action>;
}
