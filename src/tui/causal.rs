//! The causal view of the method pane: CLEANN heads by importance, and the explaining tokens of
//! the current head, radius by radius.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use crate::explain::attention::patch_positions;

use super::app::{Agg, App};
use super::blocks::{display_token, put};
use super::method::bars;

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
    let mut heads: Vec<_> = ct.heads.iter().collect();
    heads.sort_by(|a, b| {
        b.importance
            .total_cmp(&a.importance)
            .then(a.head.cmp(&b.head))
    });
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let accent = Style::default().fg(look.color(look.theme.accent));
    let header = format!(
        "target position {} ({}) · {} heads",
        ct.target,
        display_token(s.token_at(ct.target)),
        ct.heads.len()
    );
    put(f.buffer_mut(), area, area.x, area.y, &header, accent);
    let half = (area.height.saturating_sub(1)) / 2;
    let bars_area = Rect::new(area.x, area.y + 1, area.width, half.max(1));
    let rows: Vec<(String, f32, bool)> = heads
        .iter()
        .map(|h| {
            (
                format!("h{}", h.head),
                h.importance as f32,
                app.agg == Agg::Head && h.head == app.head,
            )
        })
        .collect();
    bars(f, app, bars_area, &rows);
    let detail_y = bars_area.bottom();
    let detail = Rect::new(
        area.x,
        detail_y,
        area.width,
        area.bottom().saturating_sub(detail_y),
    );
    if detail.height == 0 {
        return;
    }
    let shown = match app.agg {
        Agg::Head => ct.heads.iter().find(|h| h.head == app.head),
        _ => heads.first().copied(),
    };
    let buf = f.buffer_mut();
    let Some(h) = shown else {
        put(
            buf,
            detail,
            detail.x,
            detail.y,
            &format!("head {} has no result", app.head),
            fg,
        );
        return;
    };
    let patches = patch_positions(s).ok();
    let name = |p: usize| match &patches {
        Some(r) if r.contains(&p) => {
            let [_, cols] = s.manifest.model.image_grid;
            let i = p - r.start;
            format!("patch({},{})", i / cols.max(1), i % cols.max(1))
        }
        _ => format!("{}@{p}", display_token(s.token_at(p))),
    };
    let mut lines = vec![format!(
        "head {} · importance {:.3} · {} nodes · explanation:",
        h.head,
        h.importance,
        h.nodes.len()
    )];
    for (radius, ps) in &h.per_radius {
        let items: Vec<String> = ps.iter().map(|&p| name(p)).collect();
        lines.push(format!("  r{radius}: {}", items.join(" ")));
    }
    if !h.image_weights.is_empty() {
        let items: Vec<String> = h
            .image_weights
            .iter()
            .map(|(p, w)| format!("{}={w:.2}", name(*p)))
            .collect();
        lines.push(format!("  image weights: {}", items.join(" ")));
    }
    for (i, line) in lines.iter().enumerate().take(detail.height as usize) {
        put(buf, detail, detail.x, detail.y + i as u16, line, fg);
    }
}
