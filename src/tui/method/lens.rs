//! The logit lens in the method pane (method 4): the selected answer token read out after each
//! decoder layer, its probability as a bar with its rank and the layer's top token, the shown
//! layer highlighted; the image pane shows the catalogue's `lens.l{L}` (each patch's
//! probability of the token after layer L). A reading the session lacks is computed on the job
//! worker with the session's model (key `r`; at once on the embedded demo) and cached in the
//! session's `lens` list, which `s` saves like relevancy rows.

use std::collections::BTreeMap;

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use crate::explain::lens::{self, Lens};
use crate::job::ModelJob;

use super::super::blocks::{bars, put};
use super::super::component::Ctx;
use super::super::msg::Effect;
use super::knockout::word;

/// The reading of token `t` the session holds at `layer`, else at any layer (the curve is the
/// same at every layer; only the patch map differs).
pub fn reading<'a>(ctx: &Ctx<'a>, t: usize, layer: usize) -> Option<&'a Lens> {
    let s = ctx.session?;
    lens::cached(s, t, layer).or_else(|| s.manifest.lens.iter().find(|l| l.token == t))
}

/// The first of the view's tokens whose reading at the shown layer the session lacks.
pub fn missing_token(ctx: &Ctx) -> Option<usize> {
    let s = ctx.session?;
    let layer = ctx.sel.layer;
    ctx.view
        .tokens
        .iter()
        .copied()
        .find(|&t| t < s.num_output() && lens::cached(s, t, layer).is_none())
}

/// Key `r` under the lens: computes the reading the shown map lacks on the job worker.
pub fn request(ctx: &Ctx, out: &mut Vec<Effect>) {
    let Some(s) = ctx.session else {
        out.push(Effect::Notify("no session loaded".into(), true));
        return;
    };
    match missing_token(ctx) {
        Some(token) => out.push(Effect::StartJob(ModelJob::Lens {
            token,
            layer: ctx.sel.layer,
        })),
        None if s.num_output() == 0 => out.push(Effect::Notify(
            "the session has no output tokens to read out".into(),
            true,
        )),
        None => out.push(Effect::Notify(
            format!(
                "the session already holds the logit lens at layer {}",
                ctx.sel.layer
            ),
            false,
        )),
    }
}

/// Draws the curve of the first selected token into `area`, or how to compute it.
pub fn draw(words: &BTreeMap<u32, String>, f: &mut Frame, area: Rect, ctx: &Ctx) {
    let t = ctx.token();
    let Some(l) = reading(ctx, t, ctx.sel.layer) else {
        let dim = Style::default().fg(ctx.look.color(ctx.look.theme.dim));
        let hint = format!(
            "no logit lens for token {t} yet: press r to read it out with the session's model"
        );
        put(f.buffer_mut(), area, area.x, area.y, &hint, dim);
        return;
    };
    let title = format!(
        "token {t} {} · p and rank after each layer",
        word(words, l.token_id)
    );
    let fg = Style::default().fg(ctx.look.color(ctx.look.theme.accent));
    put(f.buffer_mut(), area, area.x, area.y, &title, fg);
    let rows: Vec<(String, f32, bool)> = l
        .curve
        .iter()
        .map(|p| {
            (
                format!("l{} #{} {}", p.layer, p.rank, word(words, p.top)),
                p.prob,
                p.layer == ctx.sel.layer,
            )
        })
        .collect();
    let body = Rect::new(
        area.x,
        area.y + 1,
        area.width,
        area.height.saturating_sub(1),
    );
    bars(f, ctx.look, body, &rows);
}
