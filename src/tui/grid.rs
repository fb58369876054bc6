//! The heads × layers pane: mean attention from the answer to the image ("Image-to-Answer") and
//! to the question ("Question-to-Answer"), one column per layer, two heads per cell row. A
//! component owning its scope (every answer token, or the selection; key `g`); its arrows move
//! the shared layer and head. Given a head score file (`eval --heads --json`, `tui --heads
//! FILE`; on the embedded demo `assets/demo-heads.json`), `G` colours the image grid by a
//! localization score instead of attention ([`Colouring`]).

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use crate::explain::attention::min_max;
use crate::explain::catalogue::heads::{demo_scores, is_demo_session, HeadScore};
use crate::session::{Array, Session};
use crate::style::normalize;

use super::blocks::{half_blocks, pane_inner, put, Px};
use super::component::{Component, Ctx, Handled};
use super::hits::GridGeom;
use super::keymap::Action;
use super::msg::Effect;
use super::state::{clamp_step, Agg, Pane};

/// The question grid's column when the pane is too narrow to show it.
const NO_QUESTION_GRID: u16 = u16::MAX / 2;

/// What colours the image grid (key `G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colouring {
    /// Mean attention from the answer to the image.
    Attention,
    /// The strict pointing game of the score file.
    Pointing,
    /// The overlap pointing game (top patch ≥ ¼ covered).
    Overlap,
    /// Zhang et al.'s pointing game (15 px at a 500-px image).
    Tolerance,
    /// Mass in mask.
    Mass,
}

impl Colouring {
    /// The next colouring.
    pub fn next(self) -> Colouring {
        match self {
            Colouring::Attention => Colouring::Pointing,
            Colouring::Pointing => Colouring::Overlap,
            Colouring::Overlap => Colouring::Tolerance,
            Colouring::Tolerance => Colouring::Mass,
            Colouring::Mass => Colouring::Attention,
        }
    }

    /// How the grid names it.
    pub fn label(self) -> &'static str {
        match self {
            Colouring::Attention => "attention",
            Colouring::Pointing => "pointing",
            Colouring::Overlap => "overlap",
            Colouring::Tolerance => "±15 px",
            Colouring::Mass => "mass in mask",
        }
    }

    /// The score it reads from a head's scores (`None` for attention).
    pub fn score(self, s: &HeadScore) -> Option<f32> {
        match self {
            Colouring::Attention => None,
            Colouring::Pointing => Some(s.pointing),
            Colouring::Overlap => Some(s.pointing_overlap),
            Colouring::Tolerance => Some(s.pointing_tolerance),
            Colouring::Mass => Some(s.mass_in_mask),
        }
    }
}

/// Head scores: where they come from and every head's, layer-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    /// The file they were read from, as shown.
    pub source: String,
    /// The scores.
    pub scores: Vec<HeadScore>,
}

/// The heads × layers pane: whether its grids cover every answer token or the selection, and
/// what colours the image grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPane {
    all_tokens: bool,
    colouring: Colouring,
    /// Scores given on the command line.
    given: Option<HeadScores>,
    /// The scores that fit the open session (`[layer][head]`), given or the demo's.
    scores: Option<(String, Vec<Vec<HeadScore>>)>,
}

impl Default for GridPane {
    fn default() -> Self {
        Self {
            all_tokens: true,
            colouring: Colouring::Attention,
            given: None,
            scores: None,
        }
    }
}

impl GridPane {
    /// The grids cover every answer token (else the selected ones).
    pub fn all_tokens(&self) -> bool {
        self.all_tokens
    }

    /// What colours the image grid.
    pub fn colouring(&self) -> Colouring {
        self.colouring
    }

    /// Uses `scores` (read from a head score file) for the sessions opened from now on.
    pub fn give_scores(&mut self, scores: HeadScores) {
        self.given = Some(scores);
        self.colouring = Colouring::Pointing;
    }

    /// Fits the scores to session `s`: the given ones, else the embedded demo's on a demo
    /// session. Returns the sentence saying why given scores do not fit (the grid then keeps
    /// its attention colours).
    pub fn open_session(&mut self, s: &Session) -> Option<String> {
        self.scores = None;
        let (layers, heads) = (s.manifest.model.text_layers, s.manifest.model.text_heads);
        let given = match &self.given {
            Some(g) => g.clone(),
            None if is_demo_session(s) => HeadScores {
                source: "demo-heads.json".into(),
                scores: demo_scores(),
            },
            None => return None,
        };
        match fit_scores(&given.scores, layers, heads) {
            Ok(grid) => {
                self.scores = Some((given.source, grid));
                None
            }
            Err(why) => {
                self.colouring = Colouring::Attention;
                Some(format!(
                    "the head score file {} {why}, the session's model {layers} layers × {heads} heads; the grid shows attention",
                    given.source
                ))
            }
        }
    }

    /// The score of head `h` of layer `l` under the colouring, when the image grid shows one.
    fn score(&self, l: usize, h: usize) -> Option<f32> {
        let (_, grid) = self.scores.as_ref()?;
        self.colouring.score(grid.get(l)?.get(h)?)
    }
}

/// `scores` as a `[layer][head]` table for a model of `layers × heads`; why not, when they do
/// not score exactly those heads.
fn fit_scores(
    scores: &[HeadScore],
    layers: usize,
    heads: usize,
) -> Result<Vec<Vec<HeadScore>>, String> {
    let file_layers = scores.iter().map(|s| s.layer + 1).max().unwrap_or(0);
    let file_heads = scores.iter().map(|s| s.head + 1).max().unwrap_or(0);
    let shape = || format!("scores {file_layers} layers × {file_heads} heads");
    if file_layers != layers || file_heads != heads || scores.len() != layers * heads {
        return Err(shape());
    }
    let mut grid: Vec<Vec<Option<HeadScore>>> = vec![vec![None; heads]; layers];
    for s in scores {
        let cell = &mut grid[s.layer][s.head];
        if cell.is_some() {
            return Err(format!("scores head l{}h{} twice", s.layer, s.head));
        }
        *cell = Some(*s);
    }
    grid.into_iter()
        .map(|row| row.into_iter().collect::<Option<Vec<_>>>())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(shape)
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
            Action::GridColouring => {
                if self.scores.is_some() {
                    self.colouring = self.colouring.next();
                } else {
                    out.push(Effect::Notify(
                        "no head scores for this model: open the app with --heads FILE (from `lvlmscope eval --heads --json`)".into(),
                        true,
                    ));
                }
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
        if self.scores.is_some() {
            out.push(Action::GridColouring);
        }
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
    let colouring = match (&pane.scores, pane.colouring) {
        (Some(_), c) if c != Colouring::Attention => format!(" · by {}", c.label()),
        _ => String::new(),
    };
    let block = ctx.frame(Pane::Grid, format!("Heads × layers · {scope}{colouring}"));
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
        let left = match pane.score(0, 0) {
            Some(_) => pane.colouring.label(),
            None => "Image→Answer",
        };
        put(buf, inner, x0, inner.y, left, dim);
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
    for (i, (x, g)) in grids.into_iter().enumerate() {
        let scored = i == 0 && pane.score(0, 0).is_some();
        let range = if scored { (0.0, 1.0) } else { min_max(&g.data) };
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
                let value = match scored {
                    true => pane.score(l, h).unwrap_or(0.0),
                    false => g.get(&[l, h]),
                };
                let level = normalize(value, range);
                Px {
                    rgb: look.map_rgb(level),
                    level,
                }
            },
        );
    }
    let (l, h) = (sel.layer.min(layers - 1), sel.head.min(heads - 1));
    let shown = if heads_shown < heads {
        format!(" · heads 0–{} shown", heads_shown - 1)
    } else {
        String::new()
    };
    let info = match (pane.score(l, h), &pane.scores) {
        (Some(v), Some((source, _))) => format!(
            "l{l}h{h} {} {v:.3} ({source}) · image {:.4} · question {:.4}{shown}",
            pane.colouring.label(),
            img.get(&[l, h]),
            q.get(&[l, h]),
        ),
        _ => format!(
            "layer {l} head {h}: image {:.4} · question {:.4}{shown}",
            img.get(&[l, h]),
            q.get(&[l, h]),
        ),
    };
    let y = inner.bottom() - 1;
    put(f.buffer_mut(), inner, inner.x, y, &info, fg);
}
