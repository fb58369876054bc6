//! The answer pane: generated tokens as a selectable list (streamed tokens and the progress of
//! a live run while one runs). A component owning the token cursor and selection.

use std::collections::BTreeSet;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Gauge, Paragraph};
use ratatui::Frame;

use crate::explain::attention::min_max;
use crate::style::normalize;

use super::blocks::{display_token, flow, pane_inner, put, text_cells};
use super::component::{Component, Ctx, Handled};
use super::keymap::Action;
use super::msg::Effect;
use super::state::{clamp_step, Pane};

/// The answer pane: the token cursor and the tokens selected with space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerPane {
    cursor: usize,
    selected: BTreeSet<usize>,
}

impl AnswerPane {
    /// The token under the cursor.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The tokens selected with space.
    pub fn selected(&self) -> &BTreeSet<usize> {
        &self.selected
    }

    /// The answer tokens the views use: the selection, or the cursor token.
    pub fn tokens(&self) -> Vec<usize> {
        if self.selected.is_empty() {
            vec![self.cursor]
        } else {
            self.selected.iter().copied().collect()
        }
    }

    /// Puts the cursor on token `t` (a click).
    pub fn set_cursor(&mut self, t: usize) {
        self.cursor = t;
    }

    /// Clears the selection.
    pub fn clear_selection(&mut self) {
        self.selected.clear();
    }

    /// The cells of each answer token the pane in `area` shows, with the token's index.
    pub fn hits(&self, ctx: &Ctx, area: Rect) -> Vec<(Rect, usize)> {
        self.place(ctx, area, &texts(ctx)).tokens
    }

    fn place(&self, ctx: &Ctx, area: Rect, texts: &[String]) -> Placed {
        let mut inner = pane_inner(area);
        let mut progress = None;
        if ctx.run.active && inner.height > 1 {
            progress = Some(Rect::new(inner.x, inner.bottom() - 1, inner.width, 1));
            inner.height -= 1;
        }
        let widths: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
        let places = flow(&widths, inner.width as usize);
        let cursor_line = places.get(self.cursor).map_or(0, |p| p.1);
        let height = inner.height.max(1) as usize;
        let scroll = cursor_line.saturating_sub(height - 1);
        let mut tokens = Vec::new();
        for (t, (text, &(x, line))) in texts.iter().zip(&places).enumerate() {
            if line < scroll || line >= scroll + height || inner.height == 0 {
                continue;
            }
            let (cx, cy) = (inner.x + x as u16, inner.y + (line - scroll) as u16);
            if cx >= inner.right() {
                continue;
            }
            let used = text_cells(text, inner.right() - cx);
            tokens.push((Rect::new(cx, cy, used, 1), t));
        }
        Placed {
            progress,
            inner,
            tokens,
        }
    }
}

/// The answer tokens' texts (streamed ones during a live run).
fn texts(ctx: &Ctx) -> Vec<String> {
    if ctx.run.active {
        ctx.run.tokens.iter().map(|t| display_token(t)).collect()
    } else {
        ctx.session.map_or(Vec::new(), |s| {
            s.manifest
                .tokens
                .output
                .iter()
                .map(|t| display_token(t))
                .collect()
        })
    }
}

/// Where the answer pane in `area` puts things: the progress line of a live run, and each
/// visible token's cells with its index.
struct Placed {
    progress: Option<Rect>,
    inner: Rect,
    tokens: Vec<(Rect, usize)>,
}

impl Component for AnswerPane {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let look = ctx.look;
        let streaming = ctx.run.active;
        let texts = texts(ctx);
        let title = if streaming {
            format!("Answer · streaming · {} tokens", texts.len())
        } else if let Some(label) = ctx
            .view
            .token_values
            .as_ref()
            .map(|_| &ctx.view.token_values_label)
        {
            format!("Answer · coloured by {label}")
        } else {
            let sel = if self.selected.is_empty() {
                String::new()
            } else {
                format!(" · {} selected", self.selected.len())
            };
            format!("Answer · token {}/{}{sel}", self.cursor, texts.len())
        };
        let title = match ctx.turn {
            (shown, total) if total > 1 => format!("Turn {shown}/{total} · {title}"),
            _ => title,
        };
        f.render_widget(ctx.frame(Pane::Answer, title), area);
        let placed = self.place(ctx, area, &texts);
        if let Some(r) = placed.progress {
            draw_progress(f, ctx, r);
        }
        let values = ctx.view.token_values.as_ref();
        let range = values.map(|v| min_max(v)).unwrap_or((0.0, 0.0));
        let theme = &look.theme;
        let buf = f.buffer_mut();
        for (r, t) in placed.tokens {
            let mut style = Style::default().fg(look.color(theme.foreground));
            if let Some(v) = values.and_then(|v| v.get(t)) {
                style = style
                    .fg(look.map_color(normalize(*v, range)))
                    .add_modifier(Modifier::BOLD);
            }
            if !streaming && self.selected.contains(&t) {
                style = style.bg(look.color(theme.selected));
            }
            if !streaming && t == self.cursor {
                style = style.add_modifier(Modifier::REVERSED);
            }
            put(buf, placed.inner, r.x, r.y, &texts[t], style);
        }
    }

    /// Arrows and space when focused; Home and End anywhere.
    fn handle(&mut self, action: Action, ctx: &Ctx, _out: &mut Vec<Effect>) -> Handled {
        let n = ctx.num_tokens();
        let focused = ctx.focus == Pane::Answer;
        match action {
            Action::Left | Action::Up if focused => self.cursor = clamp_step(self.cursor, -1, n),
            Action::Right | Action::Down if focused => self.cursor = clamp_step(self.cursor, 1, n),
            Action::Select if focused => {
                if n > 0 && !self.selected.remove(&self.cursor) {
                    self.selected.insert(self.cursor);
                }
            }
            Action::First => self.cursor = 0,
            Action::Last => self.cursor = n.saturating_sub(1),
            _ => return Handled::No,
        }
        Handled::Yes
    }

    fn commands(&self, ctx: &Ctx) -> Vec<Action> {
        let mut out = vec![Action::First, Action::Last];
        if ctx.focus == Pane::Answer {
            out.extend([Action::Left, Action::Right, Action::Select]);
        }
        out
    }
}

/// Draws the progress gauge of a live run into `area`.
fn draw_progress(f: &mut Frame, ctx: &Ctx, area: Rect) {
    let [label, gauge] =
        Layout::horizontal([Constraint::Length(28), Constraint::Min(1)]).areas(area);
    f.render_widget(
        Paragraph::new(format!(
            " {} · {} tokens · Esc cancels",
            ctx.run.stage,
            ctx.run.tokens.len()
        )),
        label,
    );
    f.render_widget(
        Gauge::default()
            .gauge_style(Style::default().fg(ctx.look.color(ctx.look.theme.accent)))
            .ratio(ctx.run.fraction.clamp(0.0, 1.0)),
        gauge,
    );
}
