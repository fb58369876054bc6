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

/// The widest a help column grows.
const COLUMN_WIDTH: u16 = 96;

/// `text` broken at spaces into lines of at most `width` characters (a longer word is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let current = lines.last_mut().expect("one line at least");
        let needed =
            current.chars().count() + usize::from(!current.is_empty()) + word.chars().count();
        if !current.is_empty() && needed > width {
            lines.push(String::new());
        }
        let current = lines.last_mut().expect("one line at least");
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines
        .into_iter()
        .map(|l| l.chars().take(width).collect())
        .collect()
}

/// The help laid out in as few columns as fit `area`: per column, its lines as (key label or
/// blank, text); the column width. Long texts wrap under their own column.
fn layout(rows: &[(String, &str)], area: Rect) -> (Vec<Vec<(String, String)>>, u16) {
    let label = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let inner_height = usize::from(area.height.saturating_sub(2)).max(1);
    let mut best = None;
    for columns in 1..=3u16 {
        let width = (area.width.saturating_sub(4) / columns).min(COLUMN_WIDTH);
        let text_width = usize::from(width).saturating_sub(label + 4);
        let mut cols: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, text) in rows {
            let wrapped = wrap(text, text_width);
            if cols
                .last()
                .is_some_and(|c| c.len() + wrapped.len() > inner_height)
                && !cols.last().is_some_and(Vec::is_empty)
            {
                cols.push(Vec::new());
            }
            let col = cols.last_mut().expect("one column at least");
            for (n, line) in wrapped.into_iter().enumerate() {
                let key = if n == 0 { k.clone() } else { String::new() };
                col.push((format!("{key:>label$}  "), line));
            }
        }
        let fits = cols.len() <= usize::from(columns);
        best = Some((cols, width));
        if fits {
            break;
        }
    }
    best.expect("three layouts tried")
}

fn draw(f: &mut Frame, area: Rect, ctx: &Ctx) {
    let look = ctx.look;
    let rows = help_rows(ctx.keymap);
    let (columns, width) = layout(&rows, area);
    let tallest = columns.iter().map(Vec::len).max().unwrap_or(0);
    let w = (width * columns.len() as u16).min(area.width);
    let h = (tallest as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let accent = Style::default().fg(look.color(look.theme.accent));
    let fg = Style::default().fg(look.color(look.theme.foreground));
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(accent)
        .title(" Keys (any key closes) ");
    let inner = block.inner(r);
    f.render_widget(block, r);
    let column_width = inner.width / columns.len().max(1) as u16;
    for (i, column) in columns.into_iter().enumerate() {
        let x = inner.x + column_width * i as u16;
        let lines: Vec<Line> = column
            .into_iter()
            .map(|(k, a)| Line::from(vec![Span::styled(k, accent), Span::styled(a, fg)]))
            .collect();
        f.render_widget(
            Paragraph::new(lines),
            Rect::new(x, inner.y, column_width, inner.height),
        );
    }
}
