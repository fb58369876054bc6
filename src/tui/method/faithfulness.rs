//! The faithfulness block of the method pane: for the current answer token, the probability
//! drop Δp of every map the session holds (raw attention as the current layer and heads show
//! it, the standard attention maps, relevancy, causal, and a random map as the baseline): the
//! token's probability with the original image minus its probability with the map's top 20 %
//! of patches replaced by the image's mean colour (`explain::faithfulness`). A map whose
//! removal hurts the answer most is the one to trust.
//!
//! `f` shows or hides the block; while it is shown, the numbers the current token lacks are
//! computed on the job worker with the session's model (one deletion experiment per token,
//! the original image run once). Results are cached per (token, map name) for the session,
//! together with the map they were measured on, so a map that changed (new relevancy rows, a
//! causal result with other parameters) is measured again ([`FaithState`]; the rows come from
//! the view, [`super::super::view::faith`]).

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::job::ModelJob;

use super::super::blocks::{bar, display_token, put};
use super::super::component::Ctx;
use super::super::msg::Effect;
use super::super::state::region_word;
use super::super::view::faith::{FaithState, BASELINE};

/// Key `f`: shows or hides the block; on a block whose computation stopped (an error, Esc),
/// computes again.
pub fn toggle(state: &mut FaithState, ctx: &Ctx, out: &mut Vec<Effect>) {
    if ctx.session.is_none() {
        out.push(Effect::Notify("no session loaded".into(), true));
        return;
    }
    if state.shown && state.halted.is_some() {
        state.halted = None;
    } else {
        state.shown = !state.shown;
    }
}

/// While the block is shown and no job runs, the job that measures the drops the current
/// token lacks.
pub fn missing_job(state: &FaithState, ctx: &Ctx) -> Option<ModelJob> {
    if !state.shown || state.halted.is_some() || ctx.job.is_some() {
        return None;
    }
    let fv = ctx.view.faith.as_ref()?;
    if fv.missing.is_empty() {
        return None;
    }
    Some(ModelJob::Faithfulness {
        token: fv.token,
        maps: fv.missing.clone(),
        fraction: state.fraction,
        region: fv.region,
    })
}

/// The first of `parts` joined with " · " that fit in `width` cells (the first one always).
fn fit(parts: &[String], width: u16) -> String {
    let mut out = String::new();
    for part in parts {
        let next = if out.is_empty() {
            part.clone()
        } else {
            format!("{out} · {part}")
        };
        if !out.is_empty() && next.chars().count() > width as usize {
            break;
        }
        out = next;
    }
    out
}

/// Lines the block needs in the method pane (0 when it is not shown).
pub fn height(state: &FaithState, ctx: &Ctx) -> u16 {
    match (&ctx.view.faith, state.shown) {
        (Some(fv), true) => fv.rows.len() as u16 + 1 + u16::from(fv.error.is_some()),
        _ => 0,
    }
}

/// Draws the block into `area`: a header line, then one row per map with a bar and its Δp;
/// the current map marked ▶, the best one reversed, maps no better than the random baseline
/// dimmed.
pub fn draw(state: &FaithState, f: &mut Frame, area: Rect, ctx: &Ctx) {
    let (Some(fv), Some(s)) = (&ctx.view.faith, ctx.session) else {
        return;
    };
    let look = ctx.look;
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let warn = Style::default().fg(look.color(look.theme.warning));
    let accent = Style::default().fg(look.color(look.theme.accent));
    let buf = f.buffer_mut();
    let word = s
        .manifest
        .tokens
        .output
        .get(fv.token)
        .map(|w| display_token(w))
        .unwrap_or_default();
    let pct = (state.fraction * 100.0).round();
    let p = fv
        .original
        .map_or_else(|| "p …".to_string(), |p| format!("p {p:.3}"));
    let what = match fv.region {
        Some(kind) => format!("faithfulness of {}", region_word(kind)),
        None => "faithfulness".to_string(),
    };
    let mut parts = vec![
        what,
        format!("token {} {word:?}", fv.token),
        p,
        format!("Δp@{pct}%"),
    ];
    if let Some(secs) = state.seconds.get(&fv.token) {
        parts.push(format!("{secs:.2}s"));
    }
    put(buf, area, area.x, area.y, &fit(&parts, area.width), accent);
    let mut y = area.y + 1;
    let halted = state
        .halted
        .as_ref()
        .map(|h| format!("stopped (f retries): {h}"));
    if let Some(msg) = fv.error.as_ref().or(halted.as_ref()) {
        put(buf, area, area.x, y, msg, warn);
        y += 1;
    }
    let baseline = fv
        .rows
        .iter()
        .find(|r| r.name == BASELINE)
        .and_then(|r| r.drop);
    let max = fv.rows.iter().filter_map(|r| r.drop).fold(0.0f32, f32::max);
    let label_w = fv
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(24);
    let bar_w = (area.width as usize)
        .saturating_sub(label_w + 17)
        .clamp(1, 30);
    for row in &fv.rows {
        if y >= area.bottom() {
            break;
        }
        let weak =
            matches!((row.drop, baseline), (Some(d), Some(b)) if d <= b && row.name != BASELINE);
        let mut style = if weak { dim } else { fg };
        if row.best {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let mark = if row.current { "▶" } else { " " };
        let name: String = row.name.chars().take(label_w).collect();
        let mut x = area.x;
        x += put(buf, area, x, y, &format!("{mark}{name:<label_w$} "), style);
        let value = match row.drop {
            Some(d) => {
                let frac = if max > 0.0 { d / max } else { 0.0 };
                x += put(buf, area, x, y, &bar(frac, bar_w), accent);
                format!(" {d:+.3}")
            }
            None => {
                x += put(buf, area, x, y, &format!("{:<bar_w$}", "…"), dim);
                String::new()
            }
        };
        x += put(buf, area, x, y, &value, style);
        if row.best {
            put(buf, area, x, y, " best", accent);
        }
        y += 1;
    }
}
