//! The help overlay: every key.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::app::App;

/// Every key and what it does.
pub const KEYS: [(&str, &str); 36] = [
    ("q, Ctrl-C", "quit"),
    ("?", "this help (any key closes it)"),
    ("Tab, Shift-Tab", "next / previous pane"),
    (
        "←→↑↓, hjkl",
        "move in the focused pane (token, prompt token, patch, head, layer)",
    ),
    ("Home, End", "first / last answer token"),
    (
        "space, Enter",
        "select the item under the cursor (tokens average; patches: reverse view)",
    ),
    ("x", "clear every selection"),
    ("1 2 3", "method: attention, relevancy, causal"),
    ("[ ]", "previous / next layer"),
    ("{ }", "previous / next head (shows one head)"),
    ("m", "heads: one, mean, max (relevancy: next source)"),
    (
        "p",
        "patch mode: select patches, answer tokens show their attention to them",
    ),
    (
        "v",
        "attention view: small multiples, image share, prompt words",
    ),
    (
        "g",
        "heads × layers grid over all answer tokens / the selection",
    ),
    ("o", "map opacity 0.6, 1.0, 0.0"),
    ("C", "next colour map (viridis, magma, turbo, jet)"),
    (
        "c",
        "causal: compute the selected token's explanation from attn.full",
    ),
    (
        "- +  (< >)",
        "causal: shown radius (explaining set, marked patches)",
    ),
    ("a A", "causal: halve / double α and recompute"),
    (
        "t T",
        "causal: halve / double the attention threshold and recompute",
    ),
    ("r R", "causal: search radius −1 / +1 and recompute"),
    (
        "r",
        "relevancy: compute the selected tokens with the session's model (worker)",
    ),
    (
        "N",
        "relevancy: normalisation, self-removed / residual (LVLM-Interpret)",
    ),
    (
        "f",
        "faithfulness: Δp of each map of the token, top 20% patches removed (worker)",
    ),
    ("n", "new live run (model, image, prompt)"),
    ("  ↑↓ Tab", "  in the form: field, complete a path"),
    ("  Enter", "  in the form: run"),
    (
        "Esc",
        "cancel a run or a model job, leave patch mode, close the form",
    ),
    ("s", "save the session"),
    ("e", "export the current map over the image as PNG"),
    ("mouse", "click tokens, prompt tokens, patches, grid cells"),
    (
        "Image pane",
        "map blended over the image; colour bar with min and max",
    ),
    (
        "Method pane",
        "heads, shares, words; relevancy words, reliance; causal heads",
    ),
    (
        "Grid pane",
        "mean attention answer→image and answer→question per layer, head",
    ),
    (
        "Prompt pane",
        "prompt tokens coloured by attention from the answer",
    ),
    (
        "Answer pane",
        "coloured by attention to selected patches or prompt tokens",
    ),
];

/// Draws the help overlay over the whole frame.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let look = &app.look;
    let w = area.width.saturating_sub(4).min(96);
    let h = (KEYS.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let accent = Style::default().fg(look.color(look.theme.accent));
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, a)| {
            Line::from(vec![
                Span::styled(format!("{k:>15}  "), accent),
                Span::styled(*a, fg),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(accent)
                .title(" Keys (any key closes) "),
        ),
        r,
    );
}
