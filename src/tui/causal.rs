//! The causal view of the method pane: CLEANN heads by importance, the explaining set of the
//! shown head up to the chosen radius, and its possible-d-separation tree; plus the causal
//! keys (radius, α, attention threshold, search radius) and the on-demand tree cache.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use crate::explain::attention::patch_positions;
use crate::explain::causal::ParamStep;
use crate::session::{CausalHead, CausalParams, CausalToken, Session};

use super::app::{Agg, App};
use super::blocks::{bars, display_token, put};
use super::keymap::Action;
use super::update::Cmd;

/// The possible-d-separation tree of one head, recomputed on demand and cached in the app.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalTree {
    /// The explained position.
    pub target: usize,
    /// The head.
    pub head: usize,
    /// The parameters the tree was computed with.
    pub params: CausalParams,
    /// `(depth, position)` rows in depth-first order, root (depth 0) first.
    pub rows: Vec<(usize, usize)>,
}

/// The head the causal pane details: the selected head under [`Agg::Head`], else the most
/// important one (ties: lower index).
pub fn shown_head(ct: &CausalToken, agg: Agg, head: usize) -> Option<&CausalHead> {
    match agg {
        Agg::Head => ct.heads.iter().find(|h| h.head == head),
        _ => heads_by_importance(ct).into_iter().next(),
    }
}

/// The heads by descending importance (ties: lower index first).
pub fn heads_by_importance(ct: &CausalToken) -> Vec<&CausalHead> {
    let mut heads: Vec<_> = ct.heads.iter().collect();
    heads.sort_by(|a, b| {
        b.importance
            .total_cmp(&a.importance)
            .then(a.head.cmp(&b.head))
    });
    heads
}

/// The explaining positions of `h` first reached at radius 1 up to `radius`, ascending.
pub fn set_up_to(h: &CausalHead, radius: usize) -> Vec<usize> {
    let mut set: Vec<usize> = h
        .per_radius
        .range(1..=radius.max(1))
        .flat_map(|(_, ps)| ps.iter().copied())
        .collect();
    set.sort_unstable();
    set.dedup();
    set
}

/// The radius the pane shows: the chosen one, within 1 and `max`.
pub fn effective_radius(chosen: usize, max: usize) -> usize {
    chosen.clamp(1, max.max(1))
}

/// The parameters of the results the session holds, if any.
fn stored_params(app: &App) -> Option<&CausalParams> {
    app.session
        .as_ref()
        .and_then(|s| s.manifest.causal.as_ref())
        .map(|c| &c.params)
}

/// The largest radius the radius selector offers (the stored results' search radius).
pub fn max_radius(app: &App) -> usize {
    stored_params(app)
        .unwrap_or(&app.causal_params)
        .search_radius
        .max(1)
}

/// The causal explanation of answer token `t` with `params`, as the app's worker thread asks
/// for it ([`crate::explain::causal::compute_token`], the error as its sentence).
pub fn compute(s: &Session, t: usize, params: &CausalParams) -> Result<CausalToken, String> {
    crate::explain::causal::compute_token(s, t, params).map_err(|e| e.to_string())
}

/// Keys `- +`: the shown radius one less or one more, within 1 and the search radius.
pub fn step_radius(app: &mut App, action: Action) {
    let max = max_radius(app);
    let eff = effective_radius(app.causal_radius, max);
    app.causal_radius = match action {
        Action::RadiusDown => eff.saturating_sub(1).max(1),
        _ => (eff + 1).min(max),
    };
}

/// Keys `a A t T r R`: one step of a CLEANN parameter, then the selected token's explanation
/// with the new parameters (a search-radius step also shows the whole new radius).
pub fn step_params(app: &mut App, step: ParamStep) -> Vec<Cmd> {
    let next = app.causal_params.stepped(step);
    if next == app.causal_params {
        return Vec::new();
    }
    app.causal_params = next;
    if matches!(step, ParamStep::RadiusDown | ParamStep::RadiusUp) {
        app.causal_radius = app.causal_params.search_radius;
    }
    request(app)
}

/// Asks for the selected token's explanation with the app's parameters, unless the session
/// already holds it.
pub fn request(app: &mut App) -> Vec<Cmd> {
    let t = app.selected_tokens()[0];
    let Some(s) = &app.session else {
        return Vec::new();
    };
    let have = s
        .manifest
        .causal
        .as_ref()
        .is_some_and(|c| c.params == app.causal_params && c.tokens.contains_key(&t));
    if have {
        app.notify(format!("token {t} already has a causal explanation"), false);
        return Vec::new();
    }
    if !s.attn_full.contains_key(&app.causal_params.layer) {
        app.notify(
            "no full attention in this session: run `lvlmscope run --causal`",
            true,
        );
        return Vec::new();
    }
    app.notify(
        format!(
            "computing the causal explanation of token {t} ({})…",
            app.causal_params.label()
        ),
        false,
    );
    vec![Cmd::ComputeCausal(t, app.causal_params.clone())]
}

/// The method pane's title under the causal method: parameters, shown radius / search radius.
pub fn title(app: &App) -> String {
    let p = &app.causal_params;
    let stale = stored_params(app).is_some_and(|s| s != p);
    format!(
        "Causal · α {:.0e} · att_th {} · r {}/{}{}",
        p.alpha,
        p.att_th,
        effective_radius(app.causal_radius, max_radius(app)),
        p.search_radius,
        if stale { " · shown: older params" } else { "" }
    )
}

/// Recomputes the cached tree of the shown head when the selection or the parameters changed
/// (a few milliseconds: one head).
pub fn refresh_tree(app: &mut App) {
    let want = match (&app.session, &app.view.causal, app.view.causal_head) {
        (Some(s), Some(ct), Some(head)) => s
            .manifest
            .causal
            .as_ref()
            .map(|c| (s, ct.target, head, c.params.clone())),
        _ => None,
    };
    let Some((s, target, head, params)) = want else {
        app.causal_tree = None;
        return;
    };
    if app
        .causal_tree
        .as_ref()
        .is_some_and(|t| t.target == target && t.head == head && t.params == params)
    {
        return;
    }
    let tree = crate::explain::causal::head_tree(s, target, head, &params);
    app.causal_tree = tree.map(|rows| CausalTree {
        target,
        head,
        params,
        rows,
    });
}

/// A position's label: `patch(r,c)` for image positions, else `token@position`.
fn label(s: &Session, p: usize) -> String {
    match patch_positions(s).ok() {
        Some(r) if r.contains(&p) => {
            let [_, cols] = s.manifest.model.image_grid;
            let i = p - r.start;
            format!("patch({},{})", i / cols.max(1), i % cols.max(1))
        }
        _ => format!("{}@{p}", display_token(s.token_at(p))),
    }
}

/// Draws the causal result of the selected token into `area` (inside the method pane).
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let Some(s) = &app.session else { return };
    let Some(ct) = &app.view.causal else {
        let warn = Style::default().fg(look.color(look.theme.warning));
        let msg = app.view.map_missing.clone().unwrap_or_default();
        put(f.buffer_mut(), area, area.x, area.y, &msg, warn);
        return;
    };
    let heads = heads_by_importance(ct);
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let accent = Style::default().fg(look.color(look.theme.accent));
    let header = format!(
        "target position {} ({}) · {} heads",
        ct.target,
        display_token(s.token_at(ct.target)),
        ct.heads.len()
    );
    put(f.buffer_mut(), area, area.x, area.y, &header, accent);
    let rest = area.height.saturating_sub(1);
    let bars_h = (rest / 3).clamp(1, heads.len().max(1) as u16);
    let bars_area = Rect::new(area.x, area.y + 1, area.width, bars_h.min(rest));
    let shown = app.view.causal_head;
    let rows: Vec<(String, f32, bool)> = heads
        .iter()
        .map(|h| {
            (
                format!("h{}", h.head),
                h.importance as f32,
                Some(h.head) == shown,
            )
        })
        .collect();
    bars(f, app, bars_area, &rows);
    let y0 = bars_area.bottom();
    let detail = Rect::new(area.x, y0, area.width, area.bottom().saturating_sub(y0));
    if detail.height == 0 {
        return;
    }
    let buf = f.buffer_mut();
    let Some(h) = shown_head(ct, app.agg, app.head) else {
        let msg = format!("head {} has no result", app.head);
        put(buf, detail, detail.x, detail.y, &msg, fg);
        return;
    };
    let r = app.view.causal_radius;
    let set = &app.view.causal_set;
    let (img, txt): (Vec<usize>, Vec<usize>) =
        set.iter().partition(|p| s.image_range().contains(p));
    let names = |ps: &[usize]| {
        ps.iter()
            .map(|&p| match h.image_weights.get(&p) {
                Some(w) => format!("{}={w:.2}", label(s, p)),
                None => label(s, p),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut lines: Vec<(String, Style)> = vec![
        (
            format!(
                "head {} · importance {:.3} · {} nodes · r ≤ {r}: {} positions",
                h.head,
                h.importance,
                h.nodes.len(),
                set.len()
            ),
            accent,
        ),
        (format!("  text: {}", names(&txt)), fg),
        (format!("  image: {}", names(&img)), fg),
    ];
    match &app.causal_tree {
        Some(t) if t.head == h.head => {
            lines.push(("  possible-d-separation tree:".into(), accent));
            for &(depth, p) in &t.rows {
                let style = if depth <= r { fg } else { dim };
                let mark = if depth == 0 { "◆" } else { "└" };
                let text = format!("  {}{mark} {}", "  ".repeat(depth), label(s, p));
                lines.push((text, style));
            }
        }
        _ => lines.push((
            "  (tree needs attn.full of the explained layer)".into(),
            dim,
        )),
    }
    for (i, (line, style)) in lines.iter().enumerate().take(detail.height as usize) {
        put(buf, detail, detail.x, detail.y + i as u16, line, *style);
    }
}
