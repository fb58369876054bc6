//! The one keymap: keys → [`Action`]s, per scope (every method, or one method). Dispatch
//! ([`super::update`]), the `?` help ([`super::help`]) and the one-line footer of the keys that
//! work now ([`super::status`]) are all generated from it, so help never drifts from behaviour.
//! A theme's `[keys]` table remaps actions: `layer_next = "n"`, `quit = ["q", "Ctrl-q"]`
//! (docs/design.md, "The app").

mod help;
mod key;

use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent};

use crate::explain::catalogue::Family;
use crate::explain::causal::ParamStep;

pub use help::{footer, help_rows, region_footer, HelpRow, HELP};
pub use key::{Key, KeymapError};

/// Everything a key can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Leave the app.
    Quit,
    /// Open the help overlay.
    Help,
    /// Next pane.
    NextPane,
    /// Previous pane.
    PrevPane,
    /// Move left in the focused pane.
    Left,
    /// Move right in the focused pane.
    Right,
    /// Move up in the focused pane.
    Up,
    /// Move down in the focused pane.
    Down,
    /// First answer token.
    First,
    /// Last answer token.
    Last,
    /// Select the item under the cursor.
    Select,
    /// Clear every selection.
    ClearSelection,
    /// Show raw attention.
    ShowAttention,
    /// Show relevancy.
    ShowRelevancy,
    /// Show the causal explanation.
    ShowCausal,
    /// Previous layer.
    LayerPrev,
    /// Next layer.
    LayerNext,
    /// Previous head.
    HeadPrev,
    /// Next head.
    HeadNext,
    /// One head, mean, max.
    Heads,
    /// Next relevancy source.
    RelevancySource,
    /// Patch mode.
    PatchMode,
    /// Next attention view.
    AttentionView,
    /// Heads × layers grid over all answer tokens or the selection.
    GridScope,
    /// Next map opacity.
    Opacity,
    /// Next colour map.
    ColorMap,
    /// Compute the causal explanation.
    ComputeCausal,
    /// Smaller shown causal radius.
    RadiusDown,
    /// Larger shown causal radius.
    RadiusUp,
    /// One step of a CLEANN parameter, then recompute.
    Causal(ParamStep),
    /// Compute relevancy with the session's model.
    ComputeRelevancy,
    /// Toggle the relevancy normalisation.
    Normalisation,
    /// Show or hide the faithfulness block.
    Faithfulness,
    /// Open the new-run form.
    NewRun,
    /// Cancel a run or job, leave patch mode, clear the notice.
    Cancel,
    /// Save the session.
    Save,
    /// Export the current map as PNG.
    Export,
    /// Show the next image region (base view / stitched high-res).
    Region,
    /// Ask a follow-up question about the same image (a new turn).
    FollowUp,
    /// Show the conversation's previous turn.
    TurnPrev,
    /// Show the conversation's next turn.
    TurnNext,
    /// Knock out the attention from the token to the selected patches or the map's top ones.
    Knockout,
    /// Next share of the map's patches a knockout blocks.
    KnockoutPercent,
    /// Next layer range a knockout blocks.
    KnockoutLayers,
    /// Show the logit lens.
    ShowLens,
    /// Compute the logit lens with the session's model.
    ComputeLens,
    /// Colour the heads × layers grid by attention or by a head score.
    GridColouring,
    /// Compare view: give the keys to the other side.
    CompareFocus,
    /// Compare view: link or unlink the sides' cursors, method, layer and region.
    CompareLink,
    /// Open a session beside this one (the compare view).
    CompareOpen,
    /// Close the compare view.
    CompareClose,
    /// Show the vision tower's own attention instead of the decoder's (and back).
    VisionAttention,
}

impl Action {
    /// Every action, in the order of the help.
    pub const ALL: [Action; 57] = [
        Action::Quit,
        Action::Help,
        Action::NextPane,
        Action::PrevPane,
        Action::Left,
        Action::Right,
        Action::Up,
        Action::Down,
        Action::First,
        Action::Last,
        Action::Select,
        Action::ClearSelection,
        Action::ShowAttention,
        Action::ShowRelevancy,
        Action::ShowCausal,
        Action::LayerPrev,
        Action::LayerNext,
        Action::HeadPrev,
        Action::HeadNext,
        Action::Heads,
        Action::RelevancySource,
        Action::PatchMode,
        Action::AttentionView,
        Action::GridScope,
        Action::Opacity,
        Action::ColorMap,
        Action::ComputeCausal,
        Action::RadiusDown,
        Action::RadiusUp,
        Action::Causal(ParamStep::AlphaDown),
        Action::Causal(ParamStep::AlphaUp),
        Action::Causal(ParamStep::ThresholdDown),
        Action::Causal(ParamStep::ThresholdUp),
        Action::Causal(ParamStep::RadiusDown),
        Action::Causal(ParamStep::RadiusUp),
        Action::ComputeRelevancy,
        Action::Normalisation,
        Action::Faithfulness,
        Action::NewRun,
        Action::Cancel,
        Action::Save,
        Action::Export,
        Action::Region,
        Action::FollowUp,
        Action::TurnPrev,
        Action::TurnNext,
        Action::Knockout,
        Action::KnockoutPercent,
        Action::KnockoutLayers,
        Action::ShowLens,
        Action::ComputeLens,
        Action::GridColouring,
        Action::CompareFocus,
        Action::CompareLink,
        Action::CompareOpen,
        Action::CompareClose,
        Action::VisionAttention,
    ];

    /// The action's name in a theme's `[keys]` table.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Help => "help",
            Action::NextPane => "next_pane",
            Action::PrevPane => "prev_pane",
            Action::Left => "left",
            Action::Right => "right",
            Action::Up => "up",
            Action::Down => "down",
            Action::First => "first",
            Action::Last => "last",
            Action::Select => "select",
            Action::ClearSelection => "clear_selection",
            Action::ShowAttention => "show_attention",
            Action::ShowRelevancy => "show_relevancy",
            Action::ShowCausal => "show_causal",
            Action::LayerPrev => "layer_prev",
            Action::LayerNext => "layer_next",
            Action::HeadPrev => "head_prev",
            Action::HeadNext => "head_next",
            Action::Heads => "heads",
            Action::RelevancySource => "relevancy_source",
            Action::PatchMode => "patch_mode",
            Action::AttentionView => "attention_view",
            Action::GridScope => "grid_scope",
            Action::Opacity => "opacity",
            Action::ColorMap => "colormap",
            Action::ComputeCausal => "compute_causal",
            Action::RadiusDown => "radius_down",
            Action::RadiusUp => "radius_up",
            Action::Causal(ParamStep::AlphaDown) => "alpha_down",
            Action::Causal(ParamStep::AlphaUp) => "alpha_up",
            Action::Causal(ParamStep::ThresholdDown) => "threshold_down",
            Action::Causal(ParamStep::ThresholdUp) => "threshold_up",
            Action::Causal(ParamStep::RadiusDown) => "search_radius_down",
            Action::Causal(ParamStep::RadiusUp) => "search_radius_up",
            Action::ComputeRelevancy => "compute_relevancy",
            Action::Normalisation => "normalisation",
            Action::Faithfulness => "faithfulness",
            Action::NewRun => "new_run",
            Action::Cancel => "cancel",
            Action::Save => "save",
            Action::Export => "export",
            Action::Region => "region",
            Action::FollowUp => "follow_up",
            Action::TurnPrev => "turn_prev",
            Action::TurnNext => "turn_next",
            Action::Knockout => "knockout",
            Action::KnockoutPercent => "knockout_percent",
            Action::KnockoutLayers => "knockout_layers",
            Action::ShowLens => "show_lens",
            Action::ComputeLens => "compute_lens",
            Action::GridColouring => "grid_colouring",
            Action::CompareFocus => "compare_focus",
            Action::CompareLink => "compare_link",
            Action::CompareOpen => "compare_open",
            Action::CompareClose => "compare_close",
            Action::VisionAttention => "vision_attention",
        }
    }

    /// Where the action's keys apply: everywhere, or under one method only.
    pub fn scope(self) -> Option<Family> {
        match self {
            Action::RelevancySource | Action::ComputeRelevancy | Action::Normalisation => {
                Some(Family::Relevancy)
            }
            Action::ComputeCausal | Action::RadiusDown | Action::RadiusUp | Action::Causal(_) => {
                Some(Family::Causal)
            }
            Action::ComputeLens => Some(Family::Lens),
            Action::VisionAttention => Some(Family::Attention),
            _ => None,
        }
    }

    fn default_keys(self) -> Vec<Key> {
        let c = |c: char| Key::plain(KeyCode::Char(c));
        let k = Key::plain;
        match self {
            Action::Quit => vec![c('q'), Key::ctrl('c')],
            Action::Help => vec![c('?')],
            Action::NextPane => vec![k(KeyCode::Tab)],
            Action::PrevPane => vec![k(KeyCode::BackTab)],
            Action::Left => vec![k(KeyCode::Left), c('h')],
            Action::Right => vec![k(KeyCode::Right), c('l')],
            Action::Up => vec![k(KeyCode::Up), c('k')],
            Action::Down => vec![k(KeyCode::Down), c('j')],
            Action::First => vec![k(KeyCode::Home)],
            Action::Last => vec![k(KeyCode::End)],
            Action::Select => vec![c(' '), k(KeyCode::Enter)],
            Action::ClearSelection => vec![c('x')],
            Action::ShowAttention => vec![c('1')],
            Action::ShowRelevancy => vec![c('2')],
            Action::ShowCausal => vec![c('3')],
            Action::LayerPrev => vec![c('[')],
            Action::LayerNext => vec![c(']')],
            Action::HeadPrev => vec![c('{')],
            Action::HeadNext => vec![c('}')],
            Action::Heads | Action::RelevancySource => vec![c('m')],
            Action::PatchMode => vec![c('p')],
            Action::AttentionView => vec![c('v')],
            Action::GridScope => vec![c('g')],
            Action::Opacity => vec![c('o')],
            Action::ColorMap => vec![c('C')],
            Action::ComputeCausal => vec![c('c')],
            Action::RadiusDown => vec![c('-'), c('<')],
            Action::RadiusUp => vec![c('+'), c('='), c('>')],
            Action::Causal(ParamStep::AlphaDown) => vec![c('a')],
            Action::Causal(ParamStep::AlphaUp) => vec![c('A')],
            Action::Causal(ParamStep::ThresholdDown) => vec![c('t')],
            Action::Causal(ParamStep::ThresholdUp) => vec![c('T')],
            Action::Causal(ParamStep::RadiusDown) => vec![c('r')],
            Action::Causal(ParamStep::RadiusUp) => vec![c('R')],
            Action::ComputeRelevancy => vec![c('r')],
            Action::Normalisation => vec![c('N')],
            Action::Faithfulness => vec![c('f')],
            Action::NewRun => vec![c('n')],
            Action::Cancel => vec![k(KeyCode::Esc)],
            Action::Save => vec![c('s')],
            Action::Export => vec![c('e')],
            Action::Region => vec![c('b')],
            Action::FollowUp => vec![c('F')],
            Action::TurnPrev => vec![c('(')],
            Action::TurnNext => vec![c(')')],
            Action::Knockout => vec![c('K')],
            Action::KnockoutPercent => vec![c('%')],
            Action::KnockoutLayers => vec![c('L')],
            Action::ShowLens => vec![c('4')],
            Action::ComputeLens => vec![c('r')],
            Action::GridColouring => vec![c('G')],
            Action::CompareFocus => vec![c('w')],
            Action::CompareLink => vec![c('u')],
            Action::CompareOpen => vec![c('B')],
            Action::CompareClose => vec![c('X')],
            Action::VisionAttention => vec![c('V')],
        }
    }
}

/// Keys → actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Keymap {
    bindings: Vec<(Action, Vec<Key>)>,
}

impl Default for Keymap {
    fn default() -> Self {
        Keymap {
            bindings: Action::ALL.iter().map(|&a| (a, a.default_keys())).collect(),
        }
    }
}

impl Keymap {
    /// The default keymap with the actions of `overrides` (action name → keys) rebound.
    pub fn with_overrides(
        overrides: &BTreeMap<String, Vec<String>>,
    ) -> Result<Keymap, KeymapError> {
        let mut map = Keymap::default();
        for (name, spec) in overrides {
            let action = Action::ALL
                .into_iter()
                .find(|a| a.name() == name)
                .ok_or_else(|| KeymapError::Action(name.clone()))?;
            let keys = spec
                .iter()
                .map(|k| k.parse())
                .collect::<Result<Vec<Key>, _>>()?;
            if let Some(b) = map.bindings.iter_mut().find(|b| b.0 == action) {
                b.1 = keys;
            }
        }
        Ok(map)
    }

    /// The action `key` does under `method`: a binding of that method first, then a global one.
    pub fn action(&self, method: Family, key: &KeyEvent) -> Option<Action> {
        let key = Key::of(key);
        let find = |scoped: bool| {
            self.bindings
                .iter()
                .filter(|(a, _)| match a.scope() {
                    Some(m) => scoped && m == method,
                    None => !scoped,
                })
                .find(|(_, keys)| keys.contains(&key))
                .map(|(a, _)| *a)
        };
        find(true).or_else(|| find(false))
    }

    /// The keys bound to `action`.
    pub fn keys(&self, action: Action) -> &[Key] {
        self.bindings
            .iter()
            .find(|b| b.0 == action)
            .map_or(&[], |b| b.1.as_slice())
    }

    /// Whether `action` has its default keys.
    pub fn is_default(&self, action: Action) -> bool {
        self.keys(action) == action.default_keys().as_slice()
    }

    /// The label of a group of actions: `default` when every one has its default keys, else
    /// their keys, joined.
    pub fn label(&self, actions: &[Action], default: &str) -> String {
        if actions.iter().all(|&a| self.is_default(a)) {
            return default.to_string();
        }
        actions
            .iter()
            .map(|&a| {
                self.keys(a)
                    .iter()
                    .map(Key::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests;
