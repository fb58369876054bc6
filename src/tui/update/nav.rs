//! Moving around: arrows and space in the focused pane, and mouse clicks through the layout's
//! hit areas.

use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};

use super::super::app::{prompt_positions, Agg, App, AttnView, Pane};
use super::super::draw::hits;

pub(super) fn clamp_step(v: usize, step: isize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (v as isize + step).clamp(0, n as isize - 1) as usize
    }
}

pub(super) fn toggle(app: &mut App) {
    fn flip(set: &mut std::collections::BTreeSet<usize>, v: usize) {
        if !set.remove(&v) {
            set.insert(v);
        }
    }
    match app.focus {
        Pane::Answer if app.num_tokens() > 0 => flip(&mut app.tokens, app.token),
        Pane::Prompt if app.session.is_some() => flip(&mut app.prompt_selected, app.prompt_cursor),
        Pane::Image if app.session.is_some() => {
            app.patch_mode = true;
            flip(&mut app.patches, app.patch);
        }
        Pane::Method if app.attn_view == AttnView::Heads && !app.view.heads.is_empty() => {
            app.agg = if app.agg == Agg::Head {
                Agg::Mean
            } else {
                Agg::Head
            };
        }
        _ => {}
    }
}

pub(super) fn arrow(app: &mut App, dx: isize, dy: isize) {
    let (layers, heads) = app.layers_heads();
    match app.focus {
        Pane::Answer => app.token = clamp_step(app.token, dx + dy, app.num_tokens()),
        Pane::Prompt => {
            if let Some(s) = &app.session {
                let pos = prompt_positions(s);
                let i = pos
                    .iter()
                    .position(|&p| p == app.prompt_cursor)
                    .unwrap_or(0);
                app.prompt_cursor = pos[clamp_step(i, dx + dy, pos.len())];
            }
        }
        Pane::Image => {
            let [rows, cols] = app.grid();
            if rows * cols > 0 {
                let r = clamp_step(app.patch / cols, dy, rows);
                let c = clamp_step(app.patch % cols, dx, cols);
                app.patch = r * cols + c;
            }
        }
        Pane::Method => {
            // Walk through the heads in the order the small multiples show them.
            let order: Vec<usize> = app.view.heads.iter().map(|h| h.0).collect();
            if !order.is_empty() {
                let i = order.iter().position(|&h| h == app.head);
                let next = match i {
                    Some(i) => clamp_step(i, dx + dy, order.len()),
                    None => 0,
                };
                app.head = order[next];
                app.agg = Agg::Head;
            }
        }
        Pane::Grid => {
            app.layer = clamp_step(app.layer, dx, layers);
            app.head = clamp_step(app.head, dy, heads);
            app.agg = Agg::Head;
        }
    }
}

pub(super) fn mouse(app: &mut App, m: MouseEvent) {
    if m.kind != MouseEventKind::Down(MouseButton::Left) || app.form.is_some() {
        return;
    }
    let hits = hits(app, app.screen);
    let (x, y) = (m.column, m.row);
    if let Some(p) = hits.pane_at(x, y) {
        app.focus = p;
    }
    if let Some(t) = hits.answer_at(x, y) {
        app.token = t;
    } else if let Some(p) = hits.prompt_at(x, y) {
        app.prompt_cursor = p;
    } else if let Some(p) = hits.image.and_then(|g| g.patch_at(x, y)) {
        app.patch = p;
        if app.patch_mode && !app.patches.remove(&p) {
            app.patches.insert(p);
        }
    } else if let Some((l, h, _)) = hits.grid_at(x, y) {
        app.layer = l;
        app.head = h;
        app.agg = Agg::Head;
    }
}
