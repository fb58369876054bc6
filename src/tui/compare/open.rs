//! The one-line prompt that opens session B from inside the app (`B`): a path, completed with
//! Tab as the new-run form completes; Esc cancels, Enter loads the file on a worker thread
//! ([`load`]) and the split view opens when it arrives, or the status line says in one sentence
//! why it cannot.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use crate::session;
use crate::style::Look;

use super::super::msg::{Cmd, Msg};
use super::super::run_form::complete_path;

/// The path prompt: closed, or open with what has been typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenPrompt {
    text: Option<String>,
    completions: Vec<String>,
}

/// What a key in the open prompt asks of the app.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptOutcome {
    /// Keep editing.
    Editing,
    /// Closed without loading.
    Cancelled,
    /// Load this file as session B.
    Load(Cmd),
    /// Say this (an error) and keep the prompt open.
    Refused(String),
}

impl OpenPrompt {
    /// Whether the prompt is open.
    pub fn is_open(&self) -> bool {
        self.text.is_some()
    }

    /// Opens the prompt, empty.
    pub fn open(&mut self) {
        self.text = Some(String::new());
        self.completions.clear();
    }

    /// What has been typed (empty when closed).
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or("")
    }

    /// A key while the prompt is open: edits, completes (Tab), closes (Esc) or asks to load
    /// (Enter).
    pub fn key(&mut self, k: KeyEvent) -> PromptOutcome {
        let Some(text) = self.text.as_mut() else {
            return PromptOutcome::Cancelled;
        };
        match k.code {
            KeyCode::Esc => {
                self.text = None;
                return PromptOutcome::Cancelled;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            KeyCode::Tab => {
                let (done, list) = complete_path(text);
                *text = done;
                self.completions = list;
            }
            KeyCode::Enter => {
                let path = text.trim();
                if path.is_empty() {
                    return PromptOutcome::Refused("type the path of a session file first".into());
                }
                let cmd = Cmd::LoadCompare(PathBuf::from(path));
                self.text = None;
                return PromptOutcome::Load(cmd);
            }
            _ => {}
        }
        PromptOutcome::Editing
    }

    /// Draws the open prompt centred in `area`.
    pub fn draw(&self, f: &mut Frame, area: Rect, look: &Look) {
        let Some(text) = &self.text else {
            return;
        };
        let w = area.width.saturating_sub(8).min(90);
        let h = (3 + u16::from(!self.completions.is_empty())).min(area.height);
        let r = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        let accent = Style::default().fg(look.color(look.theme.accent));
        f.render_widget(Clear, r);
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(accent)
            .title(" Compare with session B (Enter: open · Tab: complete · Esc: cancel) ");
        let inner = block.inner(r);
        f.render_widget(block, r);
        let mut lines = vec![Line::from(vec![
            Span::styled("session ", accent),
            Span::raw(format!("{text}▏")),
        ])];
        if !self.completions.is_empty() {
            lines.push(Line::from(self.completions.join("  ")));
        }
        f.render_widget(Paragraph::new(lines), inner);
    }
}

/// Loads the session file at `path` for the split view (what [`Cmd::LoadCompare`] runs on a
/// worker thread): the message that brings it, or one sentence saying why it cannot be read.
pub fn load(path: &Path) -> Msg {
    let r = session::load(path)
        .map(Box::new)
        .map_err(|e| format!("cannot compare with {}: {e}", path.display()));
    Msg::CompareLoaded(path.to_path_buf(), r)
}

/// The name the split view shows for a session loaded from `path`: its file name.
pub fn name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}
