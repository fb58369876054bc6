//! The image pane's keys (its state stays in the app while `image.rs` draws from `&App`:
//! patch mode, the patch cursor and selection, the opacity) and mouse clicks through the
//! layout's hit areas.

use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};

use super::super::app::{App, Pane};
use super::super::draw::hits;
use super::super::keymap::Action;
use super::super::state::clamp_step;

/// Does `action` if it is the image pane's (`p`, `o`, and arrows and space while the pane is
/// focused); `false` if it is not.
pub(super) fn image_action(app: &mut App, action: Action) -> bool {
    let focused = app.focus == Pane::Image;
    match action {
        Action::PatchMode => {
            app.patch_mode = !app.patch_mode;
            if app.patch_mode {
                app.focus = Pane::Image;
            }
        }
        Action::Opacity => {
            app.opacity = match app.opacity {
                o if o < 0.5 => 0.6,
                o if o < 0.9 => 1.0,
                _ => 0.0,
            }
        }
        Action::Select if focused => {
            if app.session.is_some() {
                app.patch_mode = true;
                if !app.patches.remove(&app.patch) {
                    app.patches.insert(app.patch);
                }
            }
        }
        Action::Left if focused => move_patch(app, -1, 0),
        Action::Right if focused => move_patch(app, 1, 0),
        Action::Up if focused => move_patch(app, 0, -1),
        Action::Down if focused => move_patch(app, 0, 1),
        _ => return false,
    }
    true
}

fn move_patch(app: &mut App, dx: isize, dy: isize) {
    let [rows, cols] = app.grid();
    if rows * cols > 0 {
        let r = clamp_step(app.patch / cols, dy, rows);
        let c = clamp_step(app.patch % cols, dx, cols);
        app.patch = r * cols + c;
    }
}

/// A click: focuses the pane under it and moves that pane's cursor there.
pub(super) fn mouse(app: &mut App, m: MouseEvent) {
    if m.kind != MouseEventKind::Down(MouseButton::Left) || app.form.is_open() {
        return;
    }
    let hits = hits(app, app.screen);
    let (x, y) = (m.column, m.row);
    if let Some(p) = hits.pane_at(x, y) {
        app.focus = p;
    }
    if let Some(t) = hits.answer_at(x, y) {
        app.answer.set_cursor(t);
    } else if let Some(p) = hits.prompt_at(x, y) {
        app.prompt.set_cursor(p);
    } else if let Some(p) = hits.image.and_then(|g| g.patch_at(x, y)) {
        app.patch = p;
        if app.patch_mode && !app.patches.remove(&p) {
            app.patches.insert(p);
        }
    } else if let Some((l, h, _)) = hits.grid_at(x, y) {
        app.sel = app.sel.with_head(h);
        app.sel.layer = l;
    }
}
