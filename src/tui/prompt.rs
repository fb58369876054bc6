//! The prompt pane: prompt tokens (the image span folded into one chip), coloured by the
//! attention the selected answer tokens give them; selectable for the reverse view.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::style::normalize;

use super::app::{App, Pane};
use super::blocks::{display_token, flow, pane_block, pane_inner, put, text_cells};
use super::view::text_range;

/// The prompt's chips: input position (None for the folded image span) and text.
fn chips(app: &App) -> Vec<(Option<usize>, String)> {
    let Some(s) = &app.session else {
        return Vec::new();
    };
    let image = s.image_range();
    let mut chips = Vec::new();
    for (p, tok) in s.manifest.tokens.input.iter().enumerate() {
        if image.contains(&p) {
            if p == image.start {
                chips.push((None, format!("[image ×{}]", image.len())));
            }
            continue;
        }
        chips.push((Some(p), display_token(tok)));
    }
    chips
}

/// The cells of each visible chip in the pane's `inner` area, with the chip's index.
fn place(app: &App, inner: Rect, chips: &[(Option<usize>, String)]) -> Vec<(Rect, usize)> {
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
    let mut out = Vec::new();
    for (i, (chip, &(x, line))) in chips.iter().zip(&places).enumerate() {
        if line < scroll || line >= scroll + height || inner.height == 0 {
            continue;
        }
        let (cx, cy) = (inner.x + x as u16, inner.y + (line - scroll) as u16);
        if cx >= inner.right() {
            continue;
        }
        out.push((
            Rect::new(cx, cy, text_cells(&chip.1, inner.right() - cx), 1),
            i,
        ));
    }
    out
}

/// The cells of each prompt token the pane in `area` shows, with its input position.
pub fn hits(app: &App, area: Rect) -> Vec<(Rect, usize)> {
    let chips = chips(app);
    place(app, pane_inner(area), &chips)
        .into_iter()
        .filter_map(|(r, i)| chips[i].0.map(|p| (r, p)))
        .collect()
}

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
    let chips = chips(app);
    let values = &app.view.position_values;
    let range = text_range(values, s);
    let theme = &look.theme;
    let buf = f.buffer_mut();
    for (r, i) in place(app, inner, &chips) {
        let (pos, text) = &chips[i];
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
        put(buf, inner, r.x, r.y, text, style);
    }
}
