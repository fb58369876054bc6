//! The status line: the progress of a model job, the latest notice, or the keys that apply now
//! (generated from the keymap). A component owning the notice.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::component::{Component, Ctx, Handled};
use super::keymap::Action;
use super::msg::Effect;
use super::state::{Notice, PendingJob};

/// The status line: the latest notice, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusBar {
    notice: Option<Notice>,
}

impl StatusBar {
    /// The latest notice.
    pub fn notice(&self) -> Option<&Notice> {
        self.notice.as_ref()
    }

    /// Shows a notice.
    pub fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            text: text.into(),
            error,
        });
    }

    /// Removes the notice (the footer of keys shows again).
    pub fn clear(&mut self) {
        self.notice = None;
    }
}

/// The keys that apply in the current state, as (keys, action) pairs, from the keymap.
pub fn current_keys(ctx: &Ctx) -> Vec<(String, &'static str)> {
    let mut keys = super::keymap::footer(
        ctx.keymap,
        ctx.focus,
        ctx.sel.method,
        ctx.run.active,
        ctx.job.is_some(),
    );
    if ctx.region_count() > 1 {
        // After the pane and its two moving/selecting entries: seen on a narrow terminal.
        keys.insert(3.min(keys.len()), super::keymap::region_footer(ctx.keymap));
    }
    keys
}

/// The status line while a job runs: "computing relevancy of token 3… (loading model) ·
/// Esc cancels".
pub fn job_line(job: &PendingJob) -> String {
    let pct = if job.fraction > 0.0 {
        format!(" {:.0}%", job.fraction * 100.0)
    } else {
        String::new()
    };
    format!(
        "computing {}… ({}{pct}) · Esc cancels",
        job.job.describe(),
        job.stage
    )
}

impl Component for StatusBar {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let look = ctx.look;
        let accent = Style::default().fg(look.color(look.theme.accent));
        let dim = Style::default().fg(look.color(look.theme.dim));
        let line = match (&self.notice, &ctx.view.error, ctx.job.map(job_line)) {
            (_, _, Some(job)) => Line::from(Span::styled(
                job,
                Style::default().fg(look.color(look.theme.foreground)),
            )),
            (Some(n), _, None) => {
                let color = if n.error {
                    look.theme.warning
                } else {
                    look.theme.foreground
                };
                Line::from(Span::styled(
                    n.text.clone(),
                    Style::default().fg(look.color(color)),
                ))
            }
            (None, Some(e), None) => Line::from(Span::styled(
                e.clone(),
                Style::default().fg(look.color(look.theme.warning)),
            )),
            (None, None, None) => Line::from(
                current_keys(ctx)
                    .into_iter()
                    .flat_map(|(k, a)| {
                        [
                            Span::styled(k, accent),
                            Span::styled(format!(" {a}  "), dim),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        f.render_widget(Paragraph::new(line), area);
    }

    /// Esc, when nothing else takes it, dismisses the notice.
    fn handle(&mut self, action: Action, _ctx: &Ctx, _out: &mut Vec<Effect>) -> Handled {
        if action == Action::Cancel {
            self.notice = None;
            Handled::Yes
        } else {
            Handled::No
        }
    }

    fn commands(&self, _ctx: &Ctx) -> Vec<Action> {
        vec![Action::Cancel]
    }
}
