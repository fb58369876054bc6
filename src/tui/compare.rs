//! The compare split view (`tui --session A --compare B`): a second session beside the first,
//! driven by the same keys. It takes the method pane's place: B's prompt and answer with the
//! selected token index marked, then for that token the map the image pane shows (same
//! catalogue id) of B and, when both sessions saw the same pixels, the cell-wise difference
//! A − B on one shared scale, with Spearman's ρ — the numbers of `lvlmscope compare`
//! ([`crate::explain::compare`]). A component that owns session B and the comparison of the
//! current selection, recomputed with the view; each session's per-token reliance (attention
//! over every layer and head) is computed once per session and set of relevancy rows
//! ([`RelianceCache`]).

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::explain::catalogue::MapId;
use crate::explain::compare::{self, Comparison, Side};
use crate::session::Session;
use crate::style::normalize;

use super::blocks::{display_token, half_blocks, put, Px};
use super::component::{Component, Ctx, Handled};
use super::keymap::Action;
use super::msg::Effect;
use super::state::Pane;

/// Session B and its comparison with the app's session under the current selection.
#[derive(Debug, Clone)]
pub struct ComparePane {
    /// The second session.
    pub session: Session,
    /// Where it came from, as shown.
    pub name: String,
    /// The comparison of the selected token under the shown map, or why there is none.
    pub result: Result<Comparison, String>,
    /// Each session's per-token reliance, kept across refreshes.
    pub reliance: RelianceCache,
}

/// What a session's per-token reliance depends on: its ids, whether it holds attention, and
/// which tokens have relevancy rows (a job adds them).
#[derive(Debug, Clone, PartialEq)]
struct RelianceKey {
    input_ids: Vec<i64>,
    output_ids: Vec<i64>,
    prompt: String,
    attention: bool,
    relevancy_tokens: Vec<usize>,
}

impl RelianceKey {
    fn of(s: &Session) -> Self {
        Self {
            input_ids: s.input_ids.clone(),
            output_ids: s.output_ids.clone(),
            prompt: s.manifest.prompt.clone(),
            attention: s.attn_gen.is_some(),
            relevancy_tokens: s.manifest.relevancy_tokens.clone(),
        }
    }
}

/// The reliance sides of sessions A and B, each recomputed only when its session changes.
#[derive(Debug, Clone, Default)]
pub struct RelianceCache {
    sides: [Option<(RelianceKey, Side)>; 2],
    computed: usize,
}

impl RelianceCache {
    /// How many times a session's reliance was computed.
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// The side of `s` in slot `i` (0: A, 1: B), computed when the slot holds another session.
    fn side(&mut self, i: usize, s: &Session) -> Side {
        let key = RelianceKey::of(s);
        match &self.sides[i] {
            Some((k, side)) if *k == key => side.clone(),
            _ => {
                let side = compare::side(s);
                self.computed += 1;
                self.sides[i] = Some((key, side.clone()));
                side
            }
        }
    }
}

impl ComparePane {
    /// A pane showing `session` (named `name`) beside the app's.
    pub fn new(session: Session, name: String) -> Self {
        Self {
            session,
            name,
            result: Err("nothing compared yet".into()),
            reliance: RelianceCache::default(),
        }
    }

    /// Compares the app's session `a` with B for answer token `t` under map `id`.
    pub fn refresh(&mut self, a: Option<&Session>, t: usize, id: &MapId) {
        self.result = match a {
            Some(a) => {
                let sides = [
                    self.reliance.side(0, a),
                    self.reliance.side(1, &self.session),
                ];
                compare::compare_sides(a, &self.session, sides, &[t], id).map_err(|e| e.to_string())
            }
            None => Err("no session A".into()),
        };
    }
}

impl Component for ComparePane {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        draw(self, f, area, ctx);
    }

    fn handle(&mut self, _action: Action, _ctx: &Ctx, _out: &mut Vec<Effect>) -> Handled {
        Handled::No
    }

    fn commands(&self, _ctx: &Ctx) -> Vec<Action> {
        Vec::new()
    }
}

/// One map drawn as a block grid into `area` (at most), each cell the same whole number of
/// columns and half-rows; returns the columns used.
fn grid(
    f: &mut Frame,
    ctx: &Ctx,
    area: Rect,
    (rows, cols): (usize, usize),
    values: &[f32],
    range: (f32, f32),
) -> u16 {
    if rows * cols == 0 || values.len() < rows * cols || area.width == 0 || area.height == 0 {
        return 0;
    }
    let k = (area.width as usize / cols)
        .min(area.height as usize * 2 / rows)
        .max(1);
    let (w, h) = ((cols * k).min(area.width as usize), rows * k);
    let look = ctx.look;
    half_blocks(
        f.buffer_mut(),
        look,
        (area.x, area.y),
        (w as u16, (h as u16).min(area.height * 2)),
        |x, y| {
            let level = normalize(
                values[(y / k).min(rows - 1) * cols + (x / k).min(cols - 1)],
                range,
            );
            Px {
                rgb: look.map_rgb(level),
                level,
            }
        },
    );
    w as u16
}

/// Draws the pane: B's prompt and answer, then B's map and A − B for the selected token.
fn draw(pane: &ComparePane, f: &mut Frame, area: Rect, ctx: &Ctx) {
    let title = format!("Compare · B = {}", pane.name);
    let block = ctx.frame(Pane::Method, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.width < 8 || inner.height < 3 {
        return;
    }
    let look = ctx.look;
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let warn = Style::default().fg(look.color(look.theme.warning));
    let t = ctx.token();
    let b = &pane.session;
    {
        let buf = f.buffer_mut();
        put(
            buf,
            inner,
            inner.x,
            inner.y,
            &format!("B prompt  {}", b.manifest.prompt),
            dim,
        );
        let mut x = inner.x;
        x += put(buf, inner, x, inner.y + 1, "B answer  ", dim);
        for (i, w) in b.manifest.tokens.output.iter().enumerate() {
            let style = if i == t {
                fg.add_modifier(Modifier::REVERSED)
            } else {
                fg
            };
            x += put(buf, inner, x, inner.y + 1, &display_token(w), style);
            x += put(buf, inner, x, inner.y + 1, " ", fg);
        }
    }
    let c = match &pane.result {
        Ok(c) => c,
        Err(e) => {
            put(f.buffer_mut(), inner, inner.x, inner.y + 2, e, warn);
            return;
        }
    };
    let Some(m) = c.maps.first() else {
        return;
    };
    let rho = m.rank_correlation.map_or_else(
        || "different images: no difference".into(),
        |r| format!("Spearman ρ {r:.3}"),
    );
    let head = format!(
        "token {t} · {rho} · A {:?} · B {:?} · {}",
        display_token(&m.text[0]),
        display_token(&m.text[1]),
        c.method
    );
    put(f.buffer_mut(), inner, inner.x, inner.y + 2, &head, fg);
    let shared =
        m.a.iter()
            .chain(&m.b)
            .copied()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
    let shared = if shared.0.is_finite() {
        shared
    } else {
        (0.0, 1.0)
    };
    let body = Rect::new(
        inner.x,
        inner.y + 4,
        inner.width,
        inner.height.saturating_sub(4),
    );
    let half = Rect::new(body.x, body.y, body.width / 2, body.height);
    let [rb, cb] = m.grids[1];
    put(
        f.buffer_mut(),
        inner,
        body.x,
        inner.y + 3,
        "B (shared scale)",
        dim,
    );
    grid(f, ctx, half, (rb, cb), &m.b, shared);
    if let Some(d) = &m.difference {
        let x = body.x + body.width / 2 + 1;
        let reach = d
            .iter()
            .fold(0f32, |a, v| a.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        let label = format!("A − B (±{reach:.4})");
        put(f.buffer_mut(), inner, x, inner.y + 3, &label, dim);
        let [ra, ca] = m.grids[0];
        let right = Rect::new(
            x,
            body.y,
            body.width.saturating_sub(body.width / 2 + 1),
            body.height,
        );
        grid(f, ctx, right, (ra, ca), d, (-reach, reach));
    }
}
