//! The new-run form (model, image, prompt, with path completion) and the state of a live run.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Gauge, Paragraph};
use ratatui::Frame;

use super::app::App;

/// The form's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Model folder or id.
    Model,
    /// Image file.
    Image,
    /// Prompt text.
    Prompt,
}

/// The new-run form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunForm {
    /// Model folder or id.
    pub model: String,
    /// Image path.
    pub image: String,
    /// Prompt.
    pub prompt: String,
    /// The field being edited.
    pub field: Field,
    /// Candidates of the last path completion.
    pub completions: Vec<String>,
}

impl RunForm {
    /// A form pre-filled with the given values.
    pub fn new(model: String, image: String, prompt: String) -> Self {
        Self {
            model,
            image,
            prompt,
            field: Field::Prompt,
            completions: Vec::new(),
        }
    }

    /// The text of the current field.
    pub fn current(&mut self) -> &mut String {
        match self.field {
            Field::Model => &mut self.model,
            Field::Image => &mut self.image,
            Field::Prompt => &mut self.prompt,
        }
    }

    /// Moves to the next (`down`) or previous field.
    pub fn move_field(&mut self, down: bool) {
        self.field = match (self.field, down) {
            (Field::Model, true) | (Field::Prompt, false) => Field::Image,
            (Field::Image, true) | (Field::Model, false) => Field::Prompt,
            (Field::Prompt, true) | (Field::Image, false) => Field::Model,
        };
        self.completions.clear();
    }

    /// Completes the current field as a path (model and image fields).
    pub fn complete(&mut self) {
        if self.field == Field::Prompt {
            return;
        }
        let (done, list) = complete_path(self.current());
        *self.current() = done;
        self.completions = list;
    }
}

/// Completes `input` as a file path: extends it by the longest common prefix of the entries that
/// start with it, and returns those entries (directories with a trailing `/`).
pub fn complete_path(input: &str) -> (String, Vec<String>) {
    let (dir, stem) = match input.rfind('/') {
        Some(i) => (&input[..=i], &input[i + 1..]),
        None => ("", input),
    };
    let read_dir = if dir.is_empty() { "." } else { dir };
    let Ok(entries) = std::fs::read_dir(Path::new(read_dir)) else {
        return (input.to_string(), Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(stem) || (name.starts_with('.') && !stem.starts_with('.')) {
                return None;
            }
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            Some(if is_dir { format!("{name}/") } else { name })
        })
        .collect();
    names.sort();
    let Some(first) = names.first() else {
        return (input.to_string(), names);
    };
    let mut common = first.clone();
    for n in &names[1..] {
        let len = common
            .char_indices()
            .zip(n.chars())
            .take_while(|((_, a), b)| a == b)
            .count();
        let cut = common
            .char_indices()
            .nth(len)
            .map_or(common.len(), |(i, _)| i);
        common.truncate(cut);
    }
    (format!("{dir}{common}"), names)
}

/// A live run: its progress and the tokens streamed so far.
#[derive(Debug, Default, Clone)]
pub struct RunState {
    /// A run is in progress.
    pub active: bool,
    /// The current stage.
    pub stage: String,
    /// Fraction of the stage done.
    pub fraction: f64,
    /// Tokens streamed so far.
    pub tokens: Vec<String>,
    /// Set to cancel the run.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Draws the form as an overlay.
pub fn draw_form(f: &mut Frame, app: &App, form: &RunForm) {
    let area = f.area();
    let w = area.width.saturating_sub(8).min(90);
    let h = 12u16.min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let look = &app.look;
    let accent = Style::default().fg(look.color(look.theme.accent));
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(accent)
        .title(" New run (Enter: run · ↑↓: field · Tab: complete path · Esc: close) ");
    let inner = block.inner(r);
    f.render_widget(block, r);
    let mut lines = Vec::new();
    for (field, label, value) in [
        (Field::Model, "model ", &form.model),
        (Field::Image, "image ", &form.image),
        (Field::Prompt, "prompt", &form.prompt),
    ] {
        let style = if field == form.field {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{label} "), accent),
            Span::styled(format!("{value}▏"), style),
        ]));
    }
    if !form.completions.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(form.completions.join("  ")));
    }
    f.render_widget(
        Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }),
        inner,
    );
}

/// Draws the progress gauge of a live run into `area`.
pub fn draw_progress(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let [label, gauge] =
        Layout::horizontal([Constraint::Length(28), Constraint::Min(1)]).areas(area);
    f.render_widget(
        Paragraph::new(format!(
            " {} · {} tokens · Esc cancels",
            app.run.stage,
            app.run.tokens.len()
        )),
        label,
    );
    f.render_widget(
        Gauge::default()
            .gauge_style(Style::default().fg(look.color(look.theme.accent)))
            .ratio(app.run.fraction.clamp(0.0, 1.0)),
        gauge,
    );
}
