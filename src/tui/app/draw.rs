//! The frame: header, panes, status line, overlays; a message when the terminal is too small.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::super::component::Component;
use super::super::hits::Hits;
use super::super::{compare, grid, header};
use super::{App, Pane};

/// The smallest terminal the layout works in.
pub const MIN_SIZE: (u16, u16) = (40, 12);

/// The rectangles of the panes for a frame of `area`.
pub fn layout(area: Rect, app: &App) -> (Rect, [(Pane, Rect); 5], Rect) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(area);
    let left_w = (body.width * 18 / 100).clamp(18, 36);
    let image_w = (body.height * 2 + 2).min(body.width * 45 / 100).max(10);
    let [left, mid, right] = Layout::horizontal([
        Constraint::Length(left_w),
        Constraint::Length(image_w),
        Constraint::Min(10),
    ])
    .areas(body);
    let [answer, prompt] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(left);
    let (_, heads) = app.layers_heads();
    let grid_h = ((heads as u16).div_ceil(2) + 4).min(right.height / 2);
    let [method, grid] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(grid_h)]).areas(right);
    (
        head,
        [
            (Pane::Answer, answer),
            (Pane::Prompt, prompt),
            (Pane::Image, mid),
            (Pane::Method, method),
            (Pane::Grid, grid),
        ],
        foot,
    )
}

/// Whether a frame of `area` is too small for the layout (it then shows a message alone).
fn too_small(area: Rect) -> bool {
    area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1
}

/// The clickable places of a frame of `area`, from the same layout [`draw`] uses: the mouse
/// handler asks this instead of remembering what the last frame drew.
pub fn hits(app: &App, area: Rect) -> Hits {
    if too_small(area) {
        return Hits::default();
    }
    let panes = match &app.compare {
        Some(c) => compare::draw::focused_panes(area, app, c),
        None => layout(area, app).1,
    };
    let ctx = app.ctx();
    let mut hits = Hits {
        panes: panes.to_vec(),
        ..Hits::default()
    };
    for (pane, r) in panes {
        match pane {
            Pane::Answer => hits.answer = app.doc.answer.hits(&ctx, r),
            Pane::Prompt => hits.prompt = app.doc.prompt.hits(&ctx, r),
            Pane::Image => hits.image = app.doc.image.geom(&ctx, r),
            Pane::Grid if r.area() > 0 => hits.grid = grid::geom(&ctx, r),
            Pane::Grid => {}
            Pane::Method => {}
        }
    }
    hits
}

/// Draws the whole app; changes nothing in it.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let look = &app.look;
    if !look.no_color() {
        f.render_widget(
            Block::default().style(
                Style::default()
                    .bg(look.color(look.theme.background))
                    .fg(look.color(look.theme.foreground)),
            ),
            area,
        );
    }
    if too_small(area) {
        let msg = format!(
            "terminal too small ({}×{}): lvlmscope needs at least {}×{}. Enlarge it, or press q.",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let ctx = app.ctx();
    if let Some(c) = &app.compare {
        compare::draw::draw(f, app, c);
    } else {
        let (head, panes, foot) = layout(area, app);
        header::draw(f, head, &ctx);
        for (pane, r) in panes {
            match pane {
                Pane::Answer => app.doc.answer.draw(f, r, &ctx),
                Pane::Prompt => app.doc.prompt.draw(f, r, &ctx),
                Pane::Image => app.doc.image.draw(f, r, &ctx),
                Pane::Method => app.doc.method.draw(f, r, &ctx),
                Pane::Grid => app.doc.grid.draw(f, r, &ctx),
            }
        }
        app.status.draw(f, foot, &ctx);
    }
    app.help.draw(f, area, &ctx);
    app.form.draw(f, area, &ctx);
    app.open_b.draw(f, area, &app.look);
}
