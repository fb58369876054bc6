//! The help overlay: every key, generated from the app's keymap ([`super::keymap::HELP`]); a
//! [`Component`] owning whether it is open.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::component::{Component, Ctx, Handled};
use super::keymap::{help_rows, Action};
use super::msg::Effect;

/// The help overlay: closed, or open over the whole frame until the next key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HelpOverlay {
    /// The overlay is shown.
    pub open: bool,
}

impl Component for HelpOverlay {
    /// Draws the overlay centred in `area` when open.
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        if self.open {
            draw(f, area, ctx);
        }
    }

    /// While open, any action closes it; while closed, [`Action::Help`] opens it.
    fn handle(&mut self, action: Action, _ctx: &Ctx, _out: &mut Vec<Effect>) -> Handled {
        if self.open || action == Action::Help {
            self.open = !self.open;
            Handled::Yes
        } else {
            Handled::No
        }
    }

    fn commands(&self, _ctx: &Ctx) -> Vec<Action> {
        if self.open {
            Vec::new()
        } else {
            vec![Action::Help]
        }
    }
}

fn draw(f: &mut Frame, area: Rect, ctx: &Ctx) {
    let look = ctx.look;
    let w = area.width.saturating_sub(4).min(96);
    let rows = help_rows(ctx.keymap);
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
