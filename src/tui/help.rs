//! The help overlay: every key, generated from the app's keymap ([`super::keymap::HELP`]).

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::app::App;

/// Draws the help overlay over the whole frame.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let look = &app.look;
    let w = area.width.saturating_sub(4).min(96);
    let rows = super::keymap::help_rows(&app.keymap);
    let h = (rows.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let accent = Style::default().fg(look.color(look.theme.accent));
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let lines: Vec<Line> = rows
        .into_iter()
        .map(|(k, a)| {
            Line::from(vec![
                Span::styled(format!("{k:>15}  "), accent),
                Span::styled(a, fg),
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
