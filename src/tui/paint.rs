//! Drawing helpers that take the look rather than the app: a pane's frame and rows of bars,
//! for the components (the image pane still uses `blocks::pane_block` and `blocks::bars`,
//! which take `&App`, until it becomes a component too; docs/design.md, "The app").

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

use crate::style::Look;

use super::blocks::{bar, put};

/// The frame of a pane, highlighted when `focused`.
pub fn pane_frame<'a>(look: &Look, focused: bool, title: String) -> Block<'a> {
    let color = if focused {
        look.theme.border_focus
    } else {
        look.theme.border
    };
    let mut style = Style::default().fg(look.color(color));
    if focused {
        style = style.add_modifier(Modifier::BOLD);
    }
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(format!(" {title} "))
}

/// Rows of `label ████ value`, scaled to the largest value; `true` highlights a row.
pub fn bars(f: &mut Frame, look: &Look, area: Rect, rows: &[(String, f32, bool)]) {
    let max = rows.iter().map(|r| r.1).fold(0.0f32, f32::max);
    let label_w = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .min(16);
    let bar_w = (area.width as usize).saturating_sub(label_w + 10).max(1);
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let accent = Style::default().fg(look.color(look.theme.accent));
    let buf = f.buffer_mut();
    let per_col = area.height as usize;
    for (i, (label, v, hl)) in rows.iter().enumerate().take(per_col) {
        let y = area.y + i as u16;
        let style = if *hl {
            fg.add_modifier(Modifier::REVERSED)
        } else {
            fg
        };
        let l: String = label.chars().take(label_w).collect();
        put(buf, area, area.x, y, &format!("{l:<label_w$} "), style);
        let frac = if max > 0.0 { v / max } else { 0.0 };
        let x = area.x + label_w as u16 + 1;
        put(buf, area, x, y, &bar(frac, bar_w), accent);
        put(buf, area, x + bar_w as u16 + 1, y, &format!("{v:.4}"), fg);
    }
    if rows.len() > per_col {
        let more = format!("+{} more", rows.len() - per_col);
        let y = area.bottom() - 1;
        put(
            buf,
            area,
            area.right().saturating_sub(more.len() as u16),
            y,
            &more,
            accent,
        );
    }
}
