//! The status line: the progress of a model job, the latest notice, or the keys that apply now.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::{App, Method, Pane};

/// The keys that apply in the current state, as (key, action) pairs.
pub fn current_keys(app: &App) -> Vec<(&'static str, &'static str)> {
    let mut keys = vec![("Tab", "pane")];
    match app.focus {
        Pane::Answer => keys.extend([("←→", "token"), ("space", "select")]),
        Pane::Prompt => keys.extend([("←→", "prompt token"), ("space", "select")]),
        Pane::Image => keys.extend([("hjkl", "patch"), ("space", "select patch")]),
        Pane::Method => keys.extend([("↑↓", "head"), ("v", "view")]),
        Pane::Grid => keys.extend([("←→", "layer"), ("↑↓", "head")]),
    }
    keys.extend([("[ ]", "layer"), ("{ }", "head"), ("m", "heads")]);
    match app.method {
        Method::Attention => keys.extend([("p", "patches"), ("v", "view")]),
        Method::Relevancy => {
            keys.extend([("m", "source"), ("r", "compute"), ("N", "normalisation")])
        }
        Method::Causal => keys.extend([
            ("c", "compute"),
            ("- +", "radius"),
            ("a A", "α"),
            ("t T", "att_th"),
            ("r R", "search radius"),
        ]),
    }
    keys.push(("f", "faithfulness"));
    if app.run.active {
        keys.push(("Esc", "cancel run"));
    } else if app.job.is_some() {
        keys.push(("Esc", "cancel"));
    }
    keys.extend([("1-3", "method"), ("?", "help"), ("q", "quit")]);
    keys
}

/// Draws the status line into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let accent = Style::default().fg(look.color(look.theme.accent));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let line = match (&app.notice, &app.view.error, super::jobs::status(app)) {
        (_, _, Some(job)) => Line::from(Span::styled(
            job,
            Style::default().fg(look.color(look.theme.foreground)),
        )),
        (Some(n), _, None) => {
            let color = if n.error {
                look.theme.warning
            } else {
                look.theme.foreground
            };
            Line::from(Span::styled(
                n.text.clone(),
                Style::default().fg(look.color(color)),
            ))
        }
        (None, Some(e), None) => Line::from(Span::styled(
            e.clone(),
            Style::default().fg(look.color(look.theme.warning)),
        )),
        (None, None, None) => Line::from(
            current_keys(app)
                .into_iter()
                .flat_map(|(k, a)| {
                    [
                        Span::styled(k, accent),
                        Span::styled(format!(" {a}  "), dim),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    };
    f.render_widget(Paragraph::new(line), area);
}
