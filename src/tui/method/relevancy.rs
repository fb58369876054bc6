//! The relevancy view of the method pane: the input words most relevant to the selected answer
//! token against the image's largest relevancy, and the answer coloured by how much each token
//! relies on the image versus the text (the numbers come from the view, the image map from the
//! catalogue); and key `r`, which asks the job worker for the selected tokens' relevancy.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::explain::catalogue::{self, Need};
use crate::job::ModelJob;
use crate::session::Session;

use super::super::blocks::bars;
use super::super::blocks::{display_token, flow, put};
use super::super::component::Ctx;
use super::super::msg::Effect;
use super::super::view::relevancy_hint;

/// The label of the image's bar among the word bars.
pub const IMAGE_BAR: &str = "image (max)";

/// Asks the job worker for the relevancy of the selected answer tokens the session lacks (what
/// the catalogue says the map needs).
pub fn request(ctx: &Ctx, out: &mut Vec<Effect>) {
    let Some(s) = ctx.session else {
        out.push(Effect::Notify("no session loaded".into(), true));
        return;
    };
    let tokens = ctx.view.tokens.clone();
    let id = catalogue::MapId::relevancy(ctx.sel.rel_source, ctx.sel.rel_norm);
    match catalogue::need(s, &tokens, &id) {
        Need::Relevancy(todo) => out.push(Effect::StartJob(ModelJob::Relevancy { tokens: todo })),
        _ => {
            let what = ModelJob::Relevancy { tokens }.describe();
            out.push(Effect::Notify(
                format!("the session already holds {what}"),
                false,
            ));
        }
    }
}

/// The method pane's title under the relevancy method.
pub fn title(ctx: &Ctx) -> String {
    format!(
        "Relevancy · {} · {} (N)",
        ctx.sel.rel_source.name(),
        ctx.sel.rel_norm.name()
    )
}

/// Draws the relevancy view into `area` (inside the method pane).
pub fn draw(f: &mut Frame, area: Rect, ctx: &Ctx) {
    let Some(s) = ctx.session else { return };
    let look = ctx.look;
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let warn = Style::default().fg(look.color(look.theme.warning));
    let accent = Style::default().fg(look.color(look.theme.accent));
    let t = ctx.token();
    let have = s.manifest.relevancy_tokens.len();
    let total = s.num_output();
    let (header, style) = match (&ctx.view.rel_text, ctx.job) {
        (Some(_), _) => {
            let share = ctx.view.reliance.get(t).copied().flatten().unwrap_or(0.0);
            (
                format!(
                    "token {t} {:?} · image share {share:.2} · {have}/{total} computed",
                    display_token(&s.manifest.tokens.output[t])
                ),
                accent,
            )
        }
        (None, Some(job)) => (
            format!("computing {}… ({})", job.job.describe(), job.stage),
            fg,
        ),
        (None, None) => (relevancy_hint(s, t), warn),
    };
    put(f.buffer_mut(), area, area.x, area.y, &header, style);
    let body_h = area.height.saturating_sub(1);
    let reliance_h = reliance_height(ctx, s, area.width).min(body_h / 2);
    let bars_h = body_h - reliance_h;
    match &ctx.view.rel_text {
        _ if bars_h == 0 => {}
        Some(tr) => {
            let mut rows = vec![(IMAGE_BAR.to_string(), tr.image_max, true)];
            rows.extend(tr.words.iter().map(|w| {
                let label = super::parts::tagged(s, &w.positions, display_token(&w.text));
                (label, w.value, false)
            }));
            bars(
                f,
                look,
                Rect::new(area.x, area.y + 1, area.width, bars_h),
                &rows,
            );
        }
        None if have > 0 => {
            let msg = "(other tokens have relevancy: move to one, or press r)";
            put(f.buffer_mut(), area, area.x, area.y + 1, msg, dim);
        }
        None => {}
    }
    if reliance_h >= 2 {
        let r = Rect::new(area.x, area.bottom() - reliance_h, area.width, reliance_h);
        draw_reliance(f, ctx, s, r);
    }
}

fn chips(s: &Session) -> Vec<String> {
    s.manifest
        .tokens
        .output
        .iter()
        .map(|t| display_token(t))
        .collect()
}

/// Lines the reliance block needs: a label, the flowed answer, the legend.
fn reliance_height(ctx: &Ctx, s: &Session, width: u16) -> u16 {
    if ctx.view.reliance.iter().all(Option::is_none) {
        return 0;
    }
    let widths: Vec<usize> = chips(s).iter().map(|c| c.chars().count() + 1).collect();
    let lines = flow(&widths, width as usize)
        .last()
        .map_or(0, |&(_, line)| line + 1);
    lines as u16 + 2
}

/// The answer, each token coloured by the image share of its relevancy (0 text … 1 image),
/// with a legend; tokens without relevancy dimmed.
fn draw_reliance(f: &mut Frame, ctx: &Ctx, s: &Session, area: Rect) {
    let look = ctx.look;
    let dim = Style::default().fg(look.color(look.theme.dim));
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let buf = f.buffer_mut();
    let label = "reliance on the image (share of relevancy)";
    put(buf, area, area.x, area.y, label, dim);
    let texts = chips(s);
    let cells: Vec<String> = texts
        .iter()
        .zip(&ctx.view.reliance)
        .map(|(t, r)| match r {
            Some(x) if look.no_color() => format!("{}{t}", crate::style::shade(*x)),
            _ => t.clone(),
        })
        .collect();
    let widths: Vec<usize> = cells.iter().map(|c| c.chars().count()).collect();
    let places = flow(&widths, area.width as usize);
    let lines = area.height.saturating_sub(2) as usize;
    let cursor = ctx.token();
    for (t, (text, &(x, line))) in cells.iter().zip(&places).enumerate() {
        if line >= lines {
            break;
        }
        let mut style = match ctx.view.reliance.get(t).copied().flatten() {
            Some(share) => Style::default()
                .fg(look.map_color(share))
                .add_modifier(Modifier::BOLD),
            None => dim,
        };
        if t == cursor {
            style = style.add_modifier(Modifier::REVERSED);
        }
        put(
            buf,
            area,
            area.x + x as u16,
            area.y + 1 + line as u16,
            text,
            style,
        );
    }
    let y = area.bottom() - 1;
    let used = put(buf, area, area.x, y, "text 0 ", fg);
    let bar_w = 16u16.min(area.width.saturating_sub(used + 40));
    for i in 0..bar_w {
        let x = i as f32 / (bar_w.max(2) - 1) as f32;
        let cell = &mut buf[(area.x + used + i, y)];
        if look.no_color() {
            cell.set_char(crate::style::shade(x));
        } else {
            cell.set_char(' ').set_bg(look.map_color(x));
        }
    }
    put(
        buf,
        area,
        area.x + used + bar_w,
        y,
        " 1 image · dim: not computed (r)",
        fg,
    );
}
