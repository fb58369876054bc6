//! The heads × layers pane: mean attention from the answer to the image ("Image-to-Answer") and
//! to the question ("Question-to-Answer"), one column per layer, two heads per cell row. A
//! component owning its scope (every answer token, or the selection; key `g`); its arrows move
//! the shared layer and head.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use crate::explain::attention::min_max;
use crate::session::Array;
use crate::style::normalize;

use super::blocks::{half_blocks, pane_inner, put, Px};
use super::component::{Component, Ctx, Handled};
use super::hits::GridGeom;
use super::keymap::Action;
use super::msg::Effect;
use super::state::{clamp_step, Agg, Pane};

/// The question grid's column when the pane is too narrow to show it.
const NO_QUESTION_GRID: u16 = u16::MAX / 2;

/// The heads × layers pane: whether its grids cover every answer token or the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPane {
    all_tokens: bool,
}

impl Default for GridPane {
    fn default() -> Self {
        Self { all_tokens: true }
    }
}

impl GridPane {
    /// The grids cover every answer token (else the selected ones).
    pub fn all_tokens(&self) -> bool {
        self.all_tokens
    }
}

/// Where the pane in `area` draws its grids; `None` when it draws none.
pub fn geom(ctx: &Ctx, area: Rect) -> Option<GridGeom> {
    let inner = pane_inner(area);
    let img = ctx.view.grid_image.as_ref()?;
    ctx.view.grid_question.as_ref()?;
    let (layers, heads) = (img.shape[0], img.shape[1]);
    if inner.height < 3 || inner.width < 8 || layers * heads == 0 {
        return None;
    }
    let rows_avail = inner.height.saturating_sub(2) as usize;
    let gap = layers.max(12) + 2;
    let side_by_side = inner.width as usize >= gap + layers.max(15);
    Some(GridGeom {
        x0: inner.x,
        x1: if side_by_side {
            inner.x + gap as u16
        } else {
            NO_QUESTION_GRID
        },
        y0: inner.y + 1,
        layers: if side_by_side {
            layers
        } else {
            layers.min(inner.width as usize)
        },
        heads: heads.min(rows_avail * 2),
    })
}

impl Component for GridPane {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        draw(self, f, area, ctx);
    }

    /// `g` anywhere; arrows when focused (left/right: layer, up/down: head).
    fn handle(&mut self, action: Action, ctx: &Ctx, out: &mut Vec<Effect>) -> Handled {
        let (layers, heads) = ctx.layers_heads();
        let sel = *ctx.sel;
        let focused = ctx.focus == Pane::Grid;
        let (dl, dh) = match action {
            Action::GridScope => {
                self.all_tokens = !self.all_tokens;
                return Handled::Yes;
            }
            Action::Left if focused => (-1, 0),
            Action::Right if focused => (1, 0),
            Action::Up if focused => (0, -1),
            Action::Down if focused => (0, 1),
            _ => return Handled::No,
        };
        let mut next = sel.with_head(clamp_step(sel.head, dh, heads));
        next.layer = clamp_step(sel.layer, dl, layers);
        out.push(Effect::Select(next));
        Handled::Yes
    }

    fn commands(&self, ctx: &Ctx) -> Vec<Action> {
        let mut out = vec![Action::GridScope];
        if ctx.focus == Pane::Grid {
            out.extend([Action::Left, Action::Right, Action::Up, Action::Down]);
        }
        out
    }
}

/// Draws the heads × layers pane into `area`.
fn draw(pane: &GridPane, f: &mut Frame, area: Rect, ctx: &Ctx) {
    let scope = if pane.all_tokens {
        "all answer tokens"
    } else {
        "selected tokens"
    };
    let block = ctx.frame(Pane::Grid, format!("Heads × layers · {scope}"));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let (Some(img), Some(q)) = (&ctx.view.grid_image, &ctx.view.grid_question) else {
        return;
    };
    let Some(geom) = geom(ctx, area) else {
        return;
    };
    let look = ctx.look;
    let (layers, heads) = (img.shape[0], img.shape[1]);
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let GridGeom {
        x0,
        x1,
        y0,
        layers: shown_layers,
        heads: heads_shown,
    } = geom;
    let side_by_side = x1 != NO_QUESTION_GRID;
    {
        let buf = f.buffer_mut();
        put(buf, inner, x0, inner.y, "Image→Answer", dim);
        if side_by_side {
            put(buf, inner, x1, inner.y, "Question→Answer", dim);
        }
    }
    let sel = ctx.sel;
    let cursor = (sel.agg == Agg::Head).then_some((sel.layer, sel.head));
    let grids: Vec<(u16, &Array)> = if side_by_side {
        vec![(x0, img), (x1, q)]
    } else {
        vec![(x0, img)]
    };
    for (x, g) in grids {
        let range = min_max(&g.data);
        let buf = f.buffer_mut();
        half_blocks(
            buf,
            look,
            (x, y0),
            (shown_layers as u16, heads_shown as u16),
            |l, h| {
                if cursor == Some((l, h)) {
                    return Px {
                        rgb: look.theme.cursor,
                        level: 1.0,
                    };
                }
                let level = normalize(g.get(&[l, h]), range);
                Px {
                    rgb: look.map_rgb(level),
                    level,
                }
            },
        );
    }
    let (l, h) = (sel.layer.min(layers - 1), sel.head.min(heads - 1));
    let info = format!(
        "layer {l} head {h}: image {:.4} · question {:.4}{}",
        img.get(&[l, h]),
        q.get(&[l, h]),
        if heads_shown < heads {
            format!(" · heads 0–{} shown", heads_shown - 1)
        } else {
            String::new()
        }
    );
    let y = inner.bottom() - 1;
    put(f.buffer_mut(), inner, inner.x, y, &info, fg);
}
