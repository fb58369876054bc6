//! The split view's frame: side A and side B, each framed (the focused one lit) with its
//! header, answer and prompt tokens, image with its map and method pane, the strip of the
//! comparison between them, and the status line. Side by side from [`COLUMNS_FROM`] terminal
//! columns, one above the other below that (the strip then at the right, when there is room).
//! Each side draws its own heads × layers pane under its method pane when that column is tall
//! enough for [`GRID_MIN_ROWS`] rows of it beside [`METHOD_MIN_ROWS`] of the method pane (the
//! two sessions may come from models of other sizes, and their grids side by side are the
//! comparison); otherwise it is left out, and the head keys still work.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::Frame;

use super::super::app::App;
use super::super::blocks::{pane_frame, pane_inner, put};
use super::super::component::{Component, Ctx};
use super::super::header;
use super::super::image::ImagePane;
use super::super::keymap::Action;
use super::super::method::MethodPane;
use super::super::prompt::PromptPane;
use super::super::state::Pane;
use super::super::tokens::AnswerPane;
use super::{strip, ComparePane, Which};

/// From this many terminal columns the sides stand side by side; below, one above the other.
pub const COLUMNS_FROM: u16 = 140;

/// The fewest rows of the method pane left above a side's heads × layers pane.
pub const METHOD_MIN_ROWS: u16 = 8;

/// The fewest rows a side's heads × layers pane is drawn in (frame, labels, two rows of heads).
pub const GRID_MIN_ROWS: u16 = 6;

/// Where one side's parts go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideRects {
    /// The side's frame.
    pub frame: Rect,
    /// Its two header lines.
    pub head: Rect,
    /// Its answer pane.
    pub answer: Rect,
    /// Its prompt pane.
    pub prompt: Rect,
    /// Its image pane.
    pub image: Rect,
    /// Its method pane.
    pub method: Rect,
    /// Its heads × layers pane (empty when the side is not tall enough).
    pub grid: Rect,
}

impl SideRects {
    /// The side's panes as the single view lists them.
    pub fn panes(&self) -> [(Pane, Rect); 5] {
        [
            (Pane::Answer, self.answer),
            (Pane::Prompt, self.prompt),
            (Pane::Image, self.image),
            (Pane::Method, self.method),
            (Pane::Grid, self.grid),
        ]
    }
}

/// The split view's rectangles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLayout {
    /// Side A, side B.
    pub sides: [SideRects; 2],
    /// The comparison strip (empty when there is no room).
    pub strip: Rect,
    /// The status line.
    pub foot: Rect,
}

/// The split view's layout for a frame of `area`, with room for heads × layers panes of
/// `heads` heads (none for 0).
pub fn layout(area: Rect, heads: usize) -> SplitLayout {
    let [body, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let (a, strip, b) = if body.width >= COLUMNS_FROM {
        let w = (body.width / 5).clamp(28, 40);
        let [a, s, b] = Layout::horizontal([
            Constraint::Fill(1),
            Constraint::Length(w),
            Constraint::Fill(1),
        ])
        .areas(body);
        (a, s, b)
    } else {
        let w = if body.width >= 90 { 30 } else { 0 };
        let [left, s] =
            Layout::horizontal([Constraint::Min(10), Constraint::Length(w)]).areas(body);
        let [a, b] = Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(left);
        (a, s, b)
    };
    SplitLayout {
        sides: [side_rects(a, heads), side_rects(b, heads)],
        strip,
        foot,
    }
}

/// The layout of `app`'s split view `c` for a frame of `area` (the grids sized for the side
/// with more heads).
pub fn split_layout(area: Rect, app: &App, c: &ComparePane) -> SplitLayout {
    let heads = |s: Option<&crate::session::Session>| s.map_or(0, |s| s.manifest.model.text_heads);
    let (a, b) = c.sessions(app);
    layout(area, heads(a).max(heads(b)))
}

/// The method pane and below it the heads × layers pane for `heads` heads when `column` is
/// tall enough for both, else the whole column for the method pane.
fn method_and_grid(column: Rect, heads: usize) -> (Rect, Rect) {
    let want = (heads as u16).div_ceil(2) + 4;
    let room = column.height.saturating_sub(METHOD_MIN_ROWS);
    if heads == 0 || room < GRID_MIN_ROWS {
        return (column, Rect::default());
    }
    let [method, grid] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(want.min(room))]).areas(column);
    (method, grid)
}

fn side_rects(frame: Rect, heads: usize) -> SideRects {
    let inner = pane_inner(frame);
    let [head, rest] = Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(inner);
    let tokens_w = |w: u16, pct: u32| ((w as u32 * pct / 100) as u16).clamp(14, 28);
    let (tokens, image, method) = if rest.width >= rest.height.saturating_mul(4) {
        let image_w = (rest.height * 2 + 2).min((rest.width as u32 * 40 / 100) as u16);
        let [t, i, m] = Layout::horizontal([
            Constraint::Length(tokens_w(rest.width, 22)),
            Constraint::Length(image_w),
            Constraint::Min(10),
        ])
        .areas(rest);
        (t, i, m)
    } else {
        let [top, m] =
            Layout::vertical([Constraint::Min(6), Constraint::Percentage(35)]).areas(rest);
        let [t, i] = Layout::horizontal([
            Constraint::Length(tokens_w(top.width, 30)),
            Constraint::Min(8),
        ])
        .areas(top);
        (t, i, m)
    };
    let [answer, prompt] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(tokens);
    let (method, grid) = method_and_grid(method, heads);
    SideRects {
        frame,
        head,
        answer,
        prompt,
        image,
        method,
        grid,
    }
}

/// The panes of the focused side of `app`'s split view `c` in a frame of `area` (for clicks
/// and Tab).
pub fn focused_panes(area: Rect, app: &App, c: &ComparePane) -> [(Pane, Rect); 5] {
    split_layout(area, app, c).sides[c.focused as usize].panes()
}

/// The side under the cell `(x, y)` of a frame of `area`, if any.
pub fn side_at(area: Rect, x: u16, y: u16) -> Option<Which> {
    let l = layout(area, 0);
    let hit = |r: Rect| x >= r.x && x < r.right() && y >= r.y && y < r.bottom();
    [Which::A, Which::B]
        .into_iter()
        .find(|&w| hit(l.sides[w as usize].frame))
}

/// Draws the split view of `app` (whose compare pane is `c`) into the whole frame.
pub fn draw(f: &mut Frame, app: &App, c: &ComparePane) {
    let l = split_layout(f.area(), app, c);
    for w in [Which::A, Which::B] {
        let r = &l.sides[w as usize];
        let focused = w == c.focused;
        let mark = if focused { " · keys act here" } else { "" };
        let prompt = match (focused, c.other.session.as_ref(), app.doc.session.as_ref()) {
            (true, _, Some(s)) | (false, Some(s), _) => s.manifest.prompt.replace('\n', " "),
            _ => String::new(),
        };
        let title = format!("{} = {}{mark} · {prompt}", w.letter(), c.name(w));
        f.render_widget(pane_frame(&app.look, focused, title), r.frame);
        if focused {
            let ctx = app.ctx();
            let parts = (
                &app.doc.answer,
                &app.doc.prompt,
                &app.doc.image,
                &app.doc.method,
            );
            draw_side(f, r, &ctx, parts);
            if r.grid.area() > 0 {
                app.doc.grid.draw(f, r.grid, &ctx);
            }
        } else {
            let o = &c.other;
            let ctx = super::side::ctx(o, app);
            draw_side(f, r, &ctx, (&o.answer, &o.prompt, &o.image, &o.method));
            // Its panes are unlit under the focus on the heads × layers pane; that pane too.
            let unlit = Ctx {
                focus: Pane::Answer,
                ..ctx
            };
            if r.grid.area() > 0 {
                o.grid.draw(f, r.grid, &unlit);
            }
        }
    }
    strip::draw(f, l.strip, app, c);
    let keys = [
        (Action::CompareFocus, "w", "side"),
        (Action::CompareLink, "u", "link"),
        (Action::CompareClose, "X", "close"),
    ]
    .map(|(a, key, word)| format!("{} {word}", app.keymap.label(&[a], key)))
    .join("  ");
    let width = (keys.chars().count() as u16 + 2).min(l.foot.width / 3);
    let [status, hint] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(width)]).areas(l.foot);
    app.status.draw(f, status, &app.ctx());
    let accent = Style::default().fg(app.look.color(app.look.theme.accent));
    put(f.buffer_mut(), hint, hint.x + 1, hint.y, &keys, accent);
}

fn draw_side(
    f: &mut Frame,
    r: &SideRects,
    ctx: &Ctx,
    (answer, prompt, image, method): (&AnswerPane, &PromptPane, &ImagePane, &MethodPane),
) {
    header::draw(f, r.head, ctx);
    answer.draw(f, r.answer, ctx);
    prompt.draw(f, r.prompt, ctx);
    image.draw(f, r.image, ctx);
    method.draw(f, r.method, ctx);
}
