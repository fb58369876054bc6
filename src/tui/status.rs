//! The status line: the progress of a model job, the latest notice, or the keys that apply now
//! (generated from the keymap).

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::App;

/// The keys that apply in the current state, as (keys, action) pairs, from the keymap.
pub fn current_keys(app: &App) -> Vec<(String, &'static str)> {
    super::keymap::footer(
        &app.keymap,
        app.focus,
        app.method,
        app.run.active,
        app.job.is_some(),
    )
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
