//! The causal view of the method pane: CLEANN heads by importance, the explaining set of the
//! shown head up to the chosen radius, and its possible-d-separation tree; plus the causal
//! keys (radius, α, attention threshold, search radius). The numbers come from the view
//! ([`super::super::view::causal`]) and [`crate::explain::causal`].

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use crate::explain::causal::{effective_radius, heads_by_importance, shown_head, ParamStep};
use crate::session::Session;

use super::super::blocks::bars;
use super::super::blocks::{display_token, put};
use super::super::component::Ctx;
use super::super::keymap::Action;
use super::super::msg::{Cmd, Effect};
use super::super::state::Agg;
use super::super::view::causal::{stored_params, CausalState};

/// Keys `- +`: the shown radius one less or one more, within 1 and the search radius.
pub fn step_radius(state: &mut CausalState, action: Action, ctx: &Ctx) {
    let max = state.max_radius(ctx.session);
    let eff = effective_radius(state.radius, max);
    state.radius = match action {
        Action::RadiusDown => eff.saturating_sub(1).max(1),
        _ => (eff + 1).min(max),
    };
}

/// Keys `a A t T r R`: one step of a CLEANN parameter, then the selected token's explanation
/// with the new parameters (a search-radius step also shows the whole new radius).
pub fn step_params(state: &mut CausalState, step: ParamStep, ctx: &Ctx, out: &mut Vec<Effect>) {
    let next = state.params.stepped(step);
    if next == state.params {
        return;
    }
    state.params = next;
    if matches!(step, ParamStep::RadiusDown | ParamStep::RadiusUp) {
        state.radius = state.params.search_radius;
    }
    request(state, ctx, out);
}

/// Asks for the selected token's explanation with the pane's parameters, unless the session
/// already holds it.
pub fn request(state: &CausalState, ctx: &Ctx, out: &mut Vec<Effect>) {
    let t = ctx.token();
    let Some(s) = ctx.session else {
        return;
    };
    let params = &state.params;
    let have = s
        .manifest
        .causal
        .as_ref()
        .is_some_and(|c| &c.params == params && c.tokens.contains_key(&t));
    if have {
        let text = format!("token {t} already has a causal explanation");
        out.push(Effect::Notify(text, false));
        return;
    }
    if !s.attn_full.contains_key(&params.layer) {
        let text = "no full attention in this session: run `lvlmscope run --causal`";
        out.push(Effect::Notify(text.into(), true));
        return;
    }
    let text = format!(
        "computing the causal explanation of token {t} ({})…",
        params.label()
    );
    out.push(Effect::Notify(text, false));
    out.push(Effect::Cmd(Cmd::ComputeCausal(t, params.clone())));
}

/// The method pane's title under the causal method: parameters, shown radius / search radius.
pub fn title(state: &CausalState, ctx: &Ctx) -> String {
    let p = &state.params;
    let stale = stored_params(ctx.session).is_some_and(|s| s != p);
    format!(
        "Causal · α {:.0e} · att_th {} · r {}/{}{}",
        p.alpha,
        p.att_th,
        effective_radius(state.radius, state.max_radius(ctx.session)),
        p.search_radius,
        if stale { " · shown: older params" } else { "" }
    )
}

/// A position's label: `patch(r,c)` for a cell of the image (`base(r,c)`, `highres(r,c)` when
/// the image has several regions), else `token@position` (separators included).
fn label(s: &Session, p: usize) -> String {
    let regions = s.regions();
    for r in regions
        .iter()
        .filter(|r| (r.span[0]..r.span[0] + r.span[1]).contains(&p))
    {
        if let Ok(i) = r.cell_positions().binary_search(&p) {
            let cols = r.grid[1].max(1);
            let name = if regions.len() > 1 {
                r.kind.name()
            } else {
                "patch"
            };
            return format!("{name}({},{})", i / cols, i % cols);
        }
    }
    format!("{}@{p}", display_token(s.token_at(p)))
}

/// Draws the causal result of the selected token into `area` (inside the method pane).
pub fn draw(state: &CausalState, f: &mut Frame, area: Rect, ctx: &Ctx) {
    let look = ctx.look;
    let Some(s) = ctx.session else { return };
    let Some(ct) = &ctx.view.causal else {
        let warn = Style::default().fg(look.color(look.theme.warning));
        let msg = ctx.view.map_missing.clone().unwrap_or_default();
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
    let shown = ctx.view.causal_head;
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
    bars(f, look, bars_area, &rows);
    let y0 = bars_area.bottom();
    let detail = Rect::new(area.x, y0, area.width, area.bottom().saturating_sub(y0));
    if detail.height == 0 {
        return;
    }
    let buf = f.buffer_mut();
    let chosen = (ctx.sel.agg == Agg::Head).then_some(ctx.sel.head);
    let Some(h) = shown_head(ct, chosen) else {
        let msg = format!("head {} has no result", ctx.sel.head);
        put(buf, detail, detail.x, detail.y, &msg, fg);
        return;
    };
    let r = ctx.view.causal_radius;
    let set = &ctx.view.causal_set;
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
    match &state.tree {
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
