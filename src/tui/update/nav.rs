//! Mouse clicks through the layout's hit areas.

use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};

use super::super::app::draw::hits;
use super::super::app::App;

/// A click: focuses the pane under it and moves that pane's cursor there.
pub(super) fn mouse(app: &mut App, m: MouseEvent) {
    if m.kind != MouseEventKind::Down(MouseButton::Left)
        || app.form.is_open()
        || app.open_b.is_open()
    {
        return;
    }
    super::split::click(app, m.column, m.row);
    let hits = hits(app, app.screen);
    let (x, y) = (m.column, m.row);
    if let Some(p) = hits.pane_at(x, y) {
        app.focus = p;
    }
    if let Some(t) = hits.answer_at(x, y) {
        app.doc.answer.set_cursor(t);
    } else if let Some(p) = hits.prompt_at(x, y) {
        app.doc.prompt.set_cursor(p);
    } else if let Some(p) = hits.image.and_then(|g| g.patch_at(x, y)) {
        app.doc.image.click(p);
    } else if let Some((l, h, _)) = hits.grid_at(x, y) {
        app.doc.sel = app.doc.sel.with_head(h);
        app.doc.sel.layer = l;
    }
}
