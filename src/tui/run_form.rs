//! The new-run form (model, image, prompt, with path completion): a component, open or
//! closed, that takes the keyboard while open (its fields take text, so it reads keys rather
//! than actions) and asks the app to start the run.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::component::{Component, Ctx, Handled};
use super::keymap::Action;
use super::msg::{Effect, LiveRequest};

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
    /// A follow-up question on the session shown: only the prompt is asked for.
    pub follow_up: bool,
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
            follow_up: false,
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

/// The form as a component: closed, or open with its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFormPane {
    form: Option<RunForm>,
}

impl RunFormPane {
    /// The open form, if any.
    pub fn form(&self) -> Option<&RunForm> {
        self.form.as_ref()
    }

    /// Whether the form is open.
    pub fn is_open(&self) -> bool {
        self.form.is_some()
    }

    /// Opens the form with the given values.
    pub fn open(&mut self, model: String, image: String, prompt: String) {
        self.form = Some(RunForm::new(model, image, prompt));
    }

    /// Opens the one-line prompt of a follow-up question on the session shown.
    pub fn open_follow_up(&mut self) {
        let mut form = RunForm::new(String::new(), String::new(), String::new());
        form.follow_up = true;
        self.form = Some(form);
    }

    /// A key while the form is open (`running`: a live run is in progress): edits the form,
    /// closes it (Esc), or asks for the run (Enter).
    pub fn key(&mut self, k: KeyEvent, running: bool) -> Vec<Effect> {
        let Some(form) = self.form.as_mut() else {
            return Vec::new();
        };
        match k.code {
            KeyCode::Esc => self.form = None,
            KeyCode::Up | KeyCode::Down | KeyCode::Tab if form.follow_up => {}
            KeyCode::Up => form.move_field(false),
            KeyCode::Down => form.move_field(true),
            KeyCode::Tab => form.complete(),
            KeyCode::Backspace => {
                form.current().pop();
            }
            KeyCode::Char(c) => form.current().push(c),
            KeyCode::Enter => return self.submit(running),
            _ => {}
        }
        Vec::new()
    }

    fn submit(&mut self, running: bool) -> Vec<Effect> {
        let Some(form) = self.form.as_mut() else {
            return Vec::new();
        };
        if running {
            let text = "a run is already in progress (Esc cancels it)";
            return vec![Effect::Notify(text.into(), true)];
        }
        if form.follow_up {
            if form.prompt.trim().is_empty() {
                return vec![Effect::Notify(
                    "type the follow-up question first".into(),
                    true,
                )];
            }
            let prompt = form.prompt.trim().to_string();
            self.form = None;
            return vec![Effect::FollowUp(prompt)];
        }
        let missing = [
            (Field::Model, &form.model),
            (Field::Image, &form.image),
            (Field::Prompt, &form.prompt),
        ]
        .into_iter()
        .find(|(_, v)| v.trim().is_empty())
        .map(|(f, _)| f);
        if let Some(field) = missing {
            form.field = field;
            let text = "fill in model, image and prompt first";
            return vec![Effect::Notify(text.into(), true)];
        }
        let req = LiveRequest {
            model: form.model.trim().to_string(),
            image: PathBuf::from(form.image.trim()),
            prompt: form.prompt.clone(),
            max_new_tokens: 64,
            history: None,
        };
        self.form = None;
        vec![Effect::StartRun(req)]
    }
}

impl Component for RunFormPane {
    /// Draws the open form as an overlay over `area`.
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        if let Some(form) = self.form.as_ref().filter(|f| f.follow_up) {
            draw_follow_up(f, area, ctx, form);
        } else if let Some(form) = &self.form {
            draw_form(f, area, ctx, form);
        }
    }

    /// `n` opens the form, filled in from the session shown; `F` the follow-up prompt, when a
    /// session is shown.
    fn handle(&mut self, action: Action, ctx: &Ctx, out: &mut Vec<Effect>) -> Handled {
        if action == Action::FollowUp {
            if ctx.session.is_none() {
                out.push(Effect::Notify(
                    "no session to follow up: run or open one first".into(),
                    true,
                ));
            } else {
                self.open_follow_up();
            }
            return Handled::Yes;
        }
        if action != Action::NewRun {
            return Handled::No;
        }
        let s = ctx.session;
        self.open(
            s.map(|s| s.manifest.model.path.clone()).unwrap_or_default(),
            s.map(|s| s.manifest.image.path.clone()).unwrap_or_default(),
            s.map(|s| s.manifest.prompt.clone()).unwrap_or_default(),
        );
        Handled::Yes
    }

    fn commands(&self, _ctx: &Ctx) -> Vec<Action> {
        if self.form.is_some() {
            Vec::new()
        } else {
            vec![Action::NewRun, Action::FollowUp]
        }
    }
}

/// Draws `form` as an overlay centred in `area`.
fn draw_form(f: &mut Frame, area: Rect, ctx: &Ctx, form: &RunForm) {
    let w = area.width.saturating_sub(8).min(90);
    let h = 12u16.min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let look = ctx.look;
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

/// Draws the one-line prompt of a follow-up question centred in `area`.
fn draw_follow_up(f: &mut Frame, area: Rect, ctx: &Ctx, form: &RunForm) {
    let w = area.width.saturating_sub(8).min(90);
    let h = 3u16.min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let accent = Style::default().fg(ctx.look.color(ctx.look.theme.accent));
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(accent)
        .title(" Follow-up on the same image (Enter: ask · Esc: cancel) ");
    let inner = block.inner(r);
    f.render_widget(block, r);
    let line = Line::from(vec![
        Span::styled("question ", accent),
        Span::raw(format!("{}▏", form.prompt)),
    ]);
    f.render_widget(Paragraph::new(line), inner);
}
