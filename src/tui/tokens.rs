//! The answer pane: generated tokens as a selectable list (streamed tokens during a live run).

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::explain::attention::min_max;
use crate::style::normalize;

use super::app::{App, Pane};
use super::blocks::{display_token, flow, pane_block, pane_inner, put, text_cells};
use super::run_form::draw_progress;

/// The answer tokens' texts (streamed ones during a live run).
fn texts(app: &App) -> Vec<String> {
    if app.run.active {
        app.run.tokens.iter().map(|t| display_token(t)).collect()
    } else {
        app.session.as_ref().map_or(Vec::new(), |s| {
            s.manifest
                .tokens
                .output
                .iter()
                .map(|t| display_token(t))
                .collect()
        })
    }
}

/// Where the answer pane in `area` puts things: the progress line of a live run, and each
/// visible token's cells with its index.
struct Placed {
    progress: Option<Rect>,
    inner: Rect,
    tokens: Vec<(Rect, usize)>,
}

fn place(app: &App, area: Rect, texts: &[String]) -> Placed {
    let mut inner = pane_inner(area);
    let mut progress = None;
    if app.run.active && inner.height > 1 {
        progress = Some(Rect::new(inner.x, inner.bottom() - 1, inner.width, 1));
        inner.height -= 1;
    }
    let widths: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
    let places = flow(&widths, inner.width as usize);
    let cursor_line = places.get(app.token).map_or(0, |p| p.1);
    let height = inner.height.max(1) as usize;
    let scroll = cursor_line.saturating_sub(height - 1);
    let mut tokens = Vec::new();
    for (t, (text, &(x, line))) in texts.iter().zip(&places).enumerate() {
        if line < scroll || line >= scroll + height || inner.height == 0 {
            continue;
        }
        let (cx, cy) = (inner.x + x as u16, inner.y + (line - scroll) as u16);
        if cx >= inner.right() {
            continue;
        }
        let used = text_cells(text, inner.right() - cx);
        tokens.push((Rect::new(cx, cy, used, 1), t));
    }
    Placed {
        progress,
        inner,
        tokens,
    }
}

/// The cells of each answer token the pane in `area` shows, with the token's index.
pub fn hits(app: &App, area: Rect) -> Vec<(Rect, usize)> {
    place(app, area, &texts(app)).tokens
}

/// Draws the answer pane into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let streaming = app.run.active;
    let texts = texts(app);
    let title = if streaming {
        format!("Answer · streaming · {} tokens", texts.len())
    } else if let Some(label) = app
        .view
        .token_values
        .as_ref()
        .map(|_| &app.view.token_values_label)
    {
        format!("Answer · coloured by {label}")
    } else {
        let sel = if app.tokens.is_empty() {
            String::new()
        } else {
            format!(" · {} selected", app.tokens.len())
        };
        format!("Answer · token {}/{}{sel}", app.token, texts.len())
    };
    f.render_widget(pane_block(app, Pane::Answer, title), area);
    let placed = place(app, area, &texts);
    if let Some(r) = placed.progress {
        draw_progress(f, app, r);
    }
    let values = app.view.token_values.as_ref();
    let range = values.map(|v| min_max(v)).unwrap_or((0.0, 0.0));
    let theme = &look.theme;
    let buf = f.buffer_mut();
    for (r, t) in placed.tokens {
        let mut style = Style::default().fg(look.color(theme.foreground));
        if let Some(v) = values.and_then(|v| v.get(t)) {
            style = style
                .fg(look.map_color(normalize(*v, range)))
                .add_modifier(Modifier::BOLD);
        }
        if !streaming && app.tokens.contains(&t) {
            style = style.bg(look.color(theme.selected));
        }
        if !streaming && t == app.token {
            style = style.add_modifier(Modifier::REVERSED);
        }
        put(buf, placed.inner, r.x, r.y, &texts[t], style);
    }
}
