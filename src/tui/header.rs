//! The header: model, image, prompt and the current settings.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::{Agg, App};

/// Draws the two header lines into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let accent = Style::default()
        .fg(look.color(look.theme.accent))
        .add_modifier(Modifier::BOLD);
    let dim = Style::default().fg(look.color(look.theme.dim));
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let (layers, heads) = app.layers_heads();
    let heads_txt = match app.agg {
        Agg::Head => format!("head {}/{}", app.head, heads.saturating_sub(1)),
        Agg::Mean => "mean of heads".into(),
        Agg::Max => "max of heads".into(),
    };
    let mut first = vec![Span::styled("lvlmscope ", accent)];
    let (model, prompt) = match &app.session {
        Some(s) => {
            let m = &s.manifest.model;
            let family = m
                .family
                .as_ref()
                .map(|f| format!(", {f}"))
                .unwrap_or_default();
            (
                format!(
                    "{} ({}{family}, {}×{}, grid {}×{}) · image {}",
                    m.path,
                    m.architecture,
                    layers,
                    heads,
                    m.image_grid[0],
                    m.image_grid[1],
                    s.manifest.image.path
                ),
                s.manifest.prompt.clone(),
            )
        }
        None => ("no session".into(), String::new()),
    };
    first.push(Span::styled(model, fg));
    let settings = format!(
        "method {} · layer {}/{} · {} · map {} · opacity {:.1}",
        app.method.name(),
        app.layer,
        layers.saturating_sub(1),
        heads_txt,
        look.colormap.name(),
        app.opacity
    );
    let mut second = vec![Span::styled(settings, accent)];
    if app.modified {
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
