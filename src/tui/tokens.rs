//! The answer pane: generated tokens as a selectable list (streamed tokens during a live run).

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::explain::attention::min_max;
use crate::style::normalize;

use super::app::{App, Pane};
use super::blocks::{display_token, flow, pane_block, put};
use super::run_form::draw_progress;

/// Draws the answer pane into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let streaming = app.run.active;
    let texts: Vec<String> = if streaming {
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
    };
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
    let block = pane_block(app, Pane::Answer, title);
    let mut inner = block.inner(area);
    f.render_widget(block, area);
    if streaming && inner.height > 1 {
        draw_progress(
            f,
            app,
            Rect::new(inner.x, inner.bottom() - 1, inner.width, 1),
        );
        inner.height -= 1;
    }
    let widths: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
    let places = flow(&widths, inner.width as usize);
    let cursor_line = places.get(app.token).map_or(0, |p| p.1);
    let height = inner.height.max(1) as usize;
    let scroll = cursor_line.saturating_sub(height - 1);
    let values = app.view.token_values.as_ref();
    let range = values.map(|v| min_max(v)).unwrap_or((0.0, 0.0));
    let theme = &look.theme;
    let mut hits = Vec::new();
    let buf = f.buffer_mut();
    for (t, (text, &(x, line))) in texts.iter().zip(&places).enumerate() {
        if line < scroll || line >= scroll + height {
            continue;
        }
        let (cx, cy) = (inner.x + x as u16, inner.y + (line - scroll) as u16);
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
        let used = put(buf, inner, cx, cy, text, style);
        hits.push((Rect::new(cx, cy, used, 1), t));
    }
    app.hits.borrow_mut().answer = hits;
}
