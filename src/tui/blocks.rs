//! Drawing helpers shared by the panes: half-block pixels, bars, pane frames, token chips.

pub use crate::style::display_token;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

use crate::style::{shade, Look, Rgb};

/// One pixel to draw: its colour, and its map level in [0, 1] for drawing without colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Px {
    /// Colour.
    pub rgb: Rgb,
    /// Map level (shade characters without colour).
    pub level: f32,
}

/// Draws a `width × height_px` picture at (`x0`, `y0`) with half blocks: each cell shows two
/// pixels, the upper as foreground of `▀`, the lower as background. Without colour, each cell is
/// the shade character of the higher level of its two pixels.
pub fn half_blocks(
    buf: &mut Buffer,
    look: &Look,
    (x0, y0): (u16, u16),
    (width, height_px): (u16, u16),
    pixel: impl Fn(usize, usize) -> Px,
) {
    let area = buf.area;
    for cy in 0..height_px.div_ceil(2) {
        for x in 0..width {
            let (cx, cyy) = (x0 + x, y0 + cy);
            if cx >= area.right() || cyy >= area.bottom() {
                continue;
            }
            let top = pixel(x as usize, 2 * cy as usize);
            let bottom = if 2 * cy + 1 < height_px {
                Some(pixel(x as usize, 2 * cy as usize + 1))
            } else {
                None
            };
            let cell = &mut buf[(cx, cyy)];
            if look.no_color() {
                let level = bottom.map_or(top.level, |b| b.level.max(top.level));
                cell.set_char(shade(level));
            } else {
                cell.set_char('▀').set_fg(look.color(top.rgb));
                match bottom {
                    Some(b) => cell.set_bg(look.color(b.rgb)),
                    None => cell.set_bg(look.color(look.theme.background)),
                };
            }
        }
    }
}

/// A horizontal bar of `width` cells filled to `frac` in eighths.
pub fn bar(frac: f32, width: usize) -> String {
    let frac = if frac.is_finite() {
        frac.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let eighths = (frac * width as f32 * 8.0).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    const PART: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    s.push_str(PART[eighths % 8]);
    let used = s.chars().count();
    s.push_str(&" ".repeat(width.saturating_sub(used)));
    s
}

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

/// The inside of a pane's frame in `area` (what `pane_block(..).inner(area)` gives).
pub fn pane_inner(area: Rect) -> Rect {
    Block::default().borders(Borders::ALL).inner(area)
}

/// The cells `put` fills with `text` when at most `max` are free: the display widths of its
/// characters, control characters skipped, up to the first that does not fit.
pub fn text_cells(text: &str, max: u16) -> u16 {
    let mut left = max;
    let mut buf = [0u8; 4];
    for c in text.chars().filter(|c| !c.is_control()) {
        let w = Span::raw(&*c.encode_utf8(&mut buf)).width() as u16;
        match left.checked_sub(w) {
            Some(l) => left = l,
            None => break,
        }
    }
    max - left
}

/// Lays chips (their widths) out in lines of `width` cells with one space between them:
/// returns each chip's `(x, line)` offset.
pub fn flow(widths: &[usize], width: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(widths.len());
    let (mut x, mut line) = (0usize, 0usize);
    for &w in widths {
        let w = w.min(width.max(1));
        if x > 0 && x + w > width {
            x = 0;
            line += 1;
        }
        out.push((x, line));
        x += w + 1;
    }
    out
}

/// Writes `text` into `buf` at (x, y), clipped to `area`, with `style`; returns the cells used.
pub fn put(buf: &mut Buffer, area: Rect, x: u16, y: u16, text: &str, style: Style) -> u16 {
    if y < area.y || y >= area.bottom() || x >= area.right() {
        return 0;
    }
    let max = (area.right() - x) as usize;
    let (end, _) = buf.set_stringn(x, y, text, max, style);
    end - x
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
