//! The help rows and the footer, built from the keymap: a row's label is the written-out
//! default when its actions keep their default keys, else the keys they are bound to.

use crate::explain::catalogue::Family;
use crate::explain::causal::ParamStep;

use super::super::state::Pane;
use super::{Action, Keymap};

/// One row of the help: the actions it describes (none: a note), the label of their default
/// keys, and what they do.
pub struct HelpRow {
    /// The actions.
    pub actions: &'static [Action],
    /// The label while every action has its default keys.
    pub label: &'static str,
    /// What the keys do.
    pub text: &'static str,
}

const fn row(actions: &'static [Action], label: &'static str, text: &'static str) -> HelpRow {
    HelpRow {
        actions,
        label,
        text,
    }
}

/// Every row of the help, in order; a row with no actions is a note.
pub const HELP: [HelpRow; 46] = [
    row(&[Action::Quit], "q, Ctrl-C", "quit"),
    row(&[Action::Help], "?", "this help (any key closes it)"),
    row(
        &[Action::NextPane, Action::PrevPane],
        "Tab, Shift-Tab",
        "next / previous pane",
    ),
    row(
        &[Action::Left, Action::Right, Action::Up, Action::Down],
        "←→↑↓, hjkl",
        "move in the focused pane (token, prompt token, patch, head, layer)",
    ),
    row(
        &[Action::First, Action::Last],
        "Home, End",
        "first / last answer token",
    ),
    row(
        &[Action::Select],
        "space, Enter",
        "select the item under the cursor (tokens average; patches: reverse view)",
    ),
    row(&[Action::ClearSelection], "x", "clear every selection"),
    row(
        &[
            Action::ShowAttention,
            Action::ShowRelevancy,
            Action::ShowCausal,
        ],
        "1 2 3",
        "method: attention, relevancy, causal",
    ),
    row(
        &[Action::LayerPrev, Action::LayerNext],
        "[ ]",
        "previous / next layer",
    ),
    row(
        &[Action::HeadPrev, Action::HeadNext],
        "{ }",
        "previous / next head (shows one head)",
    ),
    row(
        &[Action::Heads, Action::RelevancySource],
        "m",
        "heads: one, mean, max (relevancy: next source)",
    ),
    row(
        &[Action::PatchMode],
        "p",
        "patch mode: select patches, answer tokens show their attention to them",
    ),
    row(
        &[Action::AttentionView],
        "v",
        "attention view: small multiples, image share, prompt words",
    ),
    row(
        &[Action::VisionAttention],
        "V",
        "attention: the vision tower's own, by layer / the decoder's",
    ),
    row(
        &[Action::GridScope],
        "g",
        "heads × layers grid over all answer tokens / the selection",
    ),
    row(&[Action::Opacity], "o", "map opacity 0.6, 1.0, 0.0"),
    row(
        &[Action::ColorMap],
        "C",
        "next colour map (viridis, magma, turbo, jet)",
    ),
    row(
        &[Action::ComputeCausal],
        "c",
        "causal: compute the selected token's explanation from attn.full",
    ),
    row(
        &[Action::RadiusDown, Action::RadiusUp],
        "- +  (< >)",
        "causal: shown radius (explaining set, marked patches)",
    ),
    row(
        &[
            Action::Causal(ParamStep::AlphaDown),
            Action::Causal(ParamStep::AlphaUp),
        ],
        "a A",
        "causal: halve / double α and recompute",
    ),
    row(
        &[
            Action::Causal(ParamStep::ThresholdDown),
            Action::Causal(ParamStep::ThresholdUp),
        ],
        "t T",
        "causal: halve / double the attention threshold and recompute",
    ),
    row(
        &[
            Action::Causal(ParamStep::RadiusDown),
            Action::Causal(ParamStep::RadiusUp),
        ],
        "r R",
        "causal: search radius −1 / +1 and recompute",
    ),
    row(
        &[Action::ComputeRelevancy],
        "r",
        "relevancy: compute the selected tokens with the session's model (worker)",
    ),
    row(
        &[Action::Normalisation],
        "N",
        "relevancy: normalisation, self-removed / residual (LVLM-Interpret)",
    ),
    row(
        &[Action::Faithfulness],
        "f",
        "faithfulness: Δp of each map of the token, top 20% patches removed (worker)",
    ),
    row(
        &[Action::NewRun],
        "n",
        "new live run (model, image, prompt)",
    ),
    row(&[], "  ↑↓ Tab", "  in the form: field, complete a path"),
    row(&[], "  Enter", "  in the form: run"),
    row(
        &[Action::Cancel],
        "Esc",
        "cancel a run or a model job, leave patch mode, close the form",
    ),
    row(&[Action::Save], "s", "save the session"),
    row(
        &[Action::Export],
        "e",
        "export the current map over the image as PNG",
    ),
    row(
        &[],
        "mouse",
        "click tokens, prompt tokens, patches, grid cells",
    ),
    row(
        &[],
        "Image pane",
        "map blended over the image; colour bar with min and max",
    ),
    row(
        &[],
        "Method pane",
        "heads, shares, words; relevancy words, reliance; causal heads",
    ),
    row(
        &[],
        "Grid pane",
        "mean attention answer→image and answer→question per layer, head",
    ),
    row(
        &[],
        "Prompt pane",
        "prompt tokens coloured by attention from the answer",
    ),
    row(
        &[],
        "Answer pane",
        "coloured by attention to selected patches or prompt tokens",
    ),
    row(
        &[Action::Region],
        "b",
        "image region: base view / stitched high-res (LLaVA-NeXT, OneVision)",
    ),
    row(
        &[Action::FollowUp],
        "F",
        "follow-up question on the same image (Enter: ask, Esc: cancel)",
    ),
    row(
        &[Action::TurnPrev, Action::TurnNext],
        "( )",
        "previous / next turn of the conversation",
    ),
    row(
        &[Action::Knockout],
        "K",
        "knockout: block token → selected patches (else the map's top k%), re-run (worker)",
    ),
    row(
        &[Action::KnockoutPercent, Action::KnockoutLayers],
        "% L",
        "knockout: k of the map's top k% (5–50; later turns: earlier turns, answers), layers (all, shown, up to shown)",
    ),
    row(
        &[Action::ShowLens],
        "4",
        "method: logit lens (patch p(token) after the layer; curve over layers)",
    ),
    row(
        &[Action::ComputeLens],
        "r",
        "lens: read the token out at the shown layer with the session's model (worker)",
    ),
    row(
        &[Action::GridColouring],
        "G",
        "heads × layers grid: attention, or a head score file's scores (--heads)",
    ),
    row(
        &[
            Action::CompareOpen,
            Action::CompareClose,
            Action::CompareFocus,
            Action::CompareLink,
        ],
        "B X w u",
        "split view: open B, close; keys to other side; link",
    ),
];

/// The help as `(keys, text)` rows under `keymap`.
pub fn help_rows(keymap: &Keymap) -> Vec<(String, &'static str)> {
    HELP.iter()
        .map(|r| (keymap.label(r.actions, r.label), r.text))
        .collect()
}

/// One entry of the footer: its actions, the label of their default keys, and a word.
type FooterEntry = (&'static [Action], &'static str, &'static str);

/// The keys that move and select in `pane`.
fn pane_entries(pane: Pane) -> [FooterEntry; 2] {
    let lr: &'static [Action] = &[Action::Left, Action::Right];
    let ud: &'static [Action] = &[Action::Up, Action::Down];
    match pane {
        Pane::Answer => [(lr, "←→", "token"), (&[Action::Select], "space", "select")],
        Pane::Prompt => [
            (lr, "←→", "prompt token"),
            (&[Action::Select], "space", "select"),
        ],
        Pane::Image => [
            (
                &[Action::Left, Action::Down, Action::Up, Action::Right],
                "hjkl",
                "patch",
            ),
            (&[Action::Select], "space", "select patch"),
        ],
        Pane::Method => [(ud, "↑↓", "head"), (&[Action::AttentionView], "v", "view")],
        Pane::Grid => [(lr, "←→", "layer"), (ud, "↑↓", "head")],
    }
}

/// The footer entry of the region key, for sessions with more than one image region.
pub fn region_footer(keymap: &Keymap) -> (String, &'static str) {
    (keymap.label(&[Action::Region], "b"), "base/high-res")
}

/// The footer under the focused `pane` and `method`, as `(keys, word)` pairs: the keys that
/// work there, from the keymap.
pub fn footer(
    keymap: &Keymap,
    pane: Pane,
    method: Family,
    running: bool,
    job: bool,
) -> Vec<(String, &'static str)> {
    let mut entries: Vec<FooterEntry> = vec![(&[Action::NextPane], "Tab", "pane")];
    entries.extend(pane_entries(pane));
    entries.extend([
        (&[Action::LayerPrev, Action::LayerNext][..], "[ ]", "layer"),
        (&[Action::HeadPrev, Action::HeadNext], "{ }", "head"),
        (&[Action::Heads], "m", "heads"),
    ]);
    match method {
        Family::Attention => entries.extend([
            (&[Action::PatchMode][..], "p", "patches"),
            (&[Action::AttentionView], "v", "view"),
        ]),
        Family::Relevancy => entries.extend([
            (&[Action::RelevancySource][..], "m", "source"),
            (&[Action::ComputeRelevancy], "r", "compute"),
            (&[Action::Normalisation], "N", "normalisation"),
        ]),
        Family::Causal => entries.extend([
            (&[Action::ComputeCausal][..], "c", "compute"),
            (&[Action::RadiusDown, Action::RadiusUp], "- +", "radius"),
            (
                &[
                    Action::Causal(ParamStep::AlphaDown),
                    Action::Causal(ParamStep::AlphaUp),
                ],
                "a A",
                "α",
            ),
            (
                &[
                    Action::Causal(ParamStep::ThresholdDown),
                    Action::Causal(ParamStep::ThresholdUp),
                ],
                "t T",
                "att_th",
            ),
            (
                &[
                    Action::Causal(ParamStep::RadiusDown),
                    Action::Causal(ParamStep::RadiusUp),
                ],
                "r R",
                "search radius",
            ),
        ]),
        Family::Lens => entries.push((&[Action::ComputeLens][..], "r", "compute")),
        Family::Random => {}
    }
    entries.push((&[Action::Faithfulness], "f", "faithfulness"));
    if running {
        entries.push((&[Action::Cancel], "Esc", "cancel run"));
    } else if job {
        entries.push((&[Action::Cancel], "Esc", "cancel"));
    }
    entries.extend([
        (
            &[
                Action::ShowAttention,
                Action::ShowRelevancy,
                Action::ShowCausal,
                Action::ShowLens,
            ][..],
            "1-4",
            "method",
        ),
        (&[Action::Help], "?", "help"),
        (&[Action::Quit], "q", "quit"),
    ]);
    entries
        .into_iter()
        .map(|(actions, label, word)| (keymap.label(actions, label), word))
        .collect()
}
