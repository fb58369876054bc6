//! The prompt pane: prompt tokens (the image span folded into one chip), coloured by the
//! attention the selected answer tokens give them; selectable for the reverse view.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::style::normalize;

use super::app::{App, Pane};
use super::blocks::{display_token, flow, pane_block, put};
use super::view::text_range;

/// Draws the prompt pane into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let sel = if app.prompt_selected.is_empty() {
        String::new()
    } else {
        format!(" · {} selected", app.prompt_selected.len())
    };
    let block = pane_block(
        app,
        Pane::Prompt,
        format!("Prompt · attention from answer{sel}"),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(s) = &app.session else { return };
    let image = s.image_range();
    // Chips: (input position or None for the image, text).
    let mut chips: Vec<(Option<usize>, String)> = Vec::new();
    for (p, tok) in s.manifest.tokens.input.iter().enumerate() {
        if image.contains(&p) {
            if p == image.start {
                chips.push((None, format!("[image ×{}]", image.len())));
            }
            continue;
        }
        chips.push((Some(p), display_token(tok)));
    }
    let widths: Vec<usize> = chips.iter().map(|c| c.1.chars().count()).collect();
    let places = flow(&widths, inner.width as usize);
    let cursor_i = chips
        .iter()
        .position(|c| c.0 == Some(app.prompt_cursor))
        .unwrap_or(0);
    let height = inner.height.max(1) as usize;
    let scroll = places
        .get(cursor_i)
        .map_or(0, |p| p.1)
        .saturating_sub(height - 1);
    let values = &app.view.position_values;
    let range = text_range(values, s);
    let theme = &look.theme;
    let mut hits = Vec::new();
    let buf = f.buffer_mut();
    for ((pos, text), &(x, line)) in chips.iter().zip(&places) {
        if line < scroll || line >= scroll + height {
            continue;
        }
        let (cx, cy) = (inner.x + x as u16, inner.y + (line - scroll) as u16);
        let mut style = Style::default().fg(look.color(theme.dim));
        if let Some(p) = pos {
            if let Some(v) = values.get(*p) {
                style = style.fg(look.map_color(normalize(*v, range)));
            }
            if app.prompt_selected.contains(p) {
                style = style.bg(look.color(theme.selected));
            }
            if *p == app.prompt_cursor && app.focus == Pane::Prompt {
                style = style.add_modifier(Modifier::REVERSED);
            }
        }
        let used = put(buf, inner, cx, cy, text, style);
        if let Some(p) = pos {
            hits.push((Rect::new(cx, cy, used, 1), *p));
        }
    }
    app.hits.borrow_mut().prompt = hits;
}
