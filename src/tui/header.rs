//! The header: model, image, prompt and the current settings.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::component::Ctx;
use super::state::Agg;

/// Draws the two header lines into `area`.
pub fn draw(f: &mut Frame, area: Rect, ctx: &Ctx) {
    let look = ctx.look;
    let sel = ctx.sel;
    let accent = Style::default()
        .fg(look.color(look.theme.accent))
        .add_modifier(Modifier::BOLD);
    let dim = Style::default().fg(look.color(look.theme.dim));
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let (layers, heads) = ctx.layers_heads();
    let heads = ctx.vision_shown().map_or(heads, |(_, _, hv)| hv);
    let heads_txt = match sel.agg {
        Agg::Head => format!("head {}/{}", sel.head, heads.saturating_sub(1)),
        Agg::Mean => "mean of heads".into(),
        Agg::Max => "max of heads".into(),
    };
    let mut first = vec![Span::styled("lvlmscope ", accent)];
    let (model, prompt) = match ctx.session {
        Some(s) => {
            let m = &s.manifest.model;
            let grid = ctx.grid();
            let family = m
                .family
                .as_ref()
                .map(|f| format!(", {f}"))
                .unwrap_or_default();
            (
                format!(
                    "{} ({}{family}, {}×{}, grid {}×{}) · image {}",
                    m.path, m.architecture, layers, heads, grid[0], grid[1], s.manifest.image.path
                ),
                s.manifest.prompt.clone(),
            )
        }
        None => ("no session".into(), String::new()),
    };
    first.push(Span::styled(model, fg));
    let layer = match ctx.vision_shown() {
        Some((l, lv, _)) => format!("vision layer {l}/{}", lv.saturating_sub(1)),
        None => format!("layer {}/{}", sel.layer, layers.saturating_sub(1)),
    };
    let settings = format!(
        "method {} · {layer} · {} · map {} · opacity {:.1}",
        sel.method.name(),
        heads_txt,
        look.colormap.name(),
        ctx.opacity
    );
    let mut second = vec![Span::styled(settings, accent)];
    if ctx.modified {
        second.push(Span::styled(
            " · unsaved results (s)",
            Style::default().fg(look.color(look.theme.warning)),
        ));
    }
    second.extend([
        Span::styled(" · prompt: ", dim),
        Span::styled(prompt.replace('\n', " "), fg),
    ]);
    f.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        area,
    );
}
