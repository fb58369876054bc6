//! The prompt pane: prompt tokens (the image span folded into one chip), coloured by the
//! attention the selected answer tokens give them; selectable for the reverse view. A
//! component owning the prompt cursor and selection.

use std::collections::BTreeSet;

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::session::Session;
use crate::style::normalize;

use super::blocks::{display_token, flow, pane_inner, put, text_cells};
use super::component::{Component, Ctx, Handled};
use super::keymap::Action;
use super::msg::Effect;
use super::state::{clamp_step, prompt_positions, Pane};
use super::view::text_range;

/// The prompt pane: the cursor over prompt positions (an input position outside the image)
/// and the positions selected with space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptPane {
    cursor: usize,
    selected: BTreeSet<usize>,
}

impl PromptPane {
    /// The prompt position under the cursor.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The prompt positions selected with space.
    pub fn selected(&self) -> &BTreeSet<usize> {
        &self.selected
    }

    /// Puts the cursor on input position `p` (a click).
    pub fn set_cursor(&mut self, p: usize) {
        self.cursor = p;
    }

    /// Clears the selection.
    pub fn clear_selection(&mut self) {
        self.selected.clear();
    }

    /// The pane for a newly opened session: nothing selected, the cursor on its first prompt
    /// position.
    pub fn for_session(s: &Session) -> Self {
        Self {
            cursor: prompt_positions(s).first().copied().unwrap_or(0),
            selected: BTreeSet::new(),
        }
    }

    /// The cells of each prompt token the pane in `area` shows, with its input position.
    pub fn hits(&self, ctx: &Ctx, area: Rect) -> Vec<(Rect, usize)> {
        let chips = chips(ctx);
        self.place(pane_inner(area), &chips)
            .into_iter()
            .filter_map(|(r, i)| chips[i].0.map(|p| (r, p)))
            .collect()
    }

    /// The cells of each visible chip in the pane's `inner` area, with the chip's index.
    fn place(&self, inner: Rect, chips: &[(Option<usize>, String)]) -> Vec<(Rect, usize)> {
        let widths: Vec<usize> = chips.iter().map(|c| c.1.chars().count()).collect();
        let places = flow(&widths, inner.width as usize);
        let cursor_i = chips
            .iter()
            .position(|c| c.0 == Some(self.cursor))
            .unwrap_or(0);
        let height = inner.height.max(1) as usize;
        let scroll = places
            .get(cursor_i)
            .map_or(0, |p| p.1)
            .saturating_sub(height - 1);
        let mut out = Vec::new();
        for (i, (chip, &(x, line))) in chips.iter().zip(&places).enumerate() {
            if line < scroll || line >= scroll + height || inner.height == 0 {
                continue;
            }
            let (cx, cy) = (inner.x + x as u16, inner.y + (line - scroll) as u16);
            if cx >= inner.right() {
                continue;
            }
            out.push((
                Rect::new(cx, cy, text_cells(&chip.1, inner.right() - cx), 1),
                i,
            ));
        }
        out
    }
}

/// The prompt's chips: input position (None for the folded image span) and text.
fn chips(ctx: &Ctx) -> Vec<(Option<usize>, String)> {
    let Some(s) = ctx.session else {
        return Vec::new();
    };
    let image = s.image_range();
    let mut chips = Vec::new();
    for (p, tok) in s.manifest.tokens.input.iter().enumerate() {
        if image.contains(&p) {
            if p == image.start {
                chips.push((None, format!("[image ×{}]", image.len())));
            }
            continue;
        }
        chips.push((Some(p), display_token(tok)));
    }
    chips
}

impl Component for PromptPane {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let look = ctx.look;
        let sel = if self.selected.is_empty() {
            String::new()
        } else {
            format!(" · {} selected", self.selected.len())
        };
        let block = ctx.frame(Pane::Prompt, format!("Prompt · attention from answer{sel}"));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let Some(s) = ctx.session else { return };
        let chips = chips(ctx);
        let values = &ctx.view.position_values;
        let range = text_range(values, s);
        let theme = &look.theme;
        let buf = f.buffer_mut();
        for (r, i) in self.place(inner, &chips) {
            let (pos, text) = &chips[i];
            let mut style = Style::default().fg(look.color(theme.dim));
            if let Some(p) = pos {
                if let Some(v) = values.get(*p) {
                    style = style.fg(look.map_color(normalize(*v, range)));
                }
                if self.selected.contains(p) {
                    style = style.bg(look.color(theme.selected));
                }
                if *p == self.cursor && ctx.focus == Pane::Prompt {
                    style = style.add_modifier(Modifier::REVERSED);
                }
            }
            put(buf, inner, r.x, r.y, text, style);
        }
    }

    /// Arrows and space when focused.
    fn handle(&mut self, action: Action, ctx: &Ctx, _out: &mut Vec<Effect>) -> Handled {
        let Some(s) = ctx.session.filter(|_| ctx.focus == Pane::Prompt) else {
            return Handled::No;
        };
        let step = match action {
            Action::Left | Action::Up => -1,
            Action::Right | Action::Down => 1,
            Action::Select => {
                if !self.selected.remove(&self.cursor) {
                    self.selected.insert(self.cursor);
                }
                return Handled::Yes;
            }
            _ => return Handled::No,
        };
        let pos = prompt_positions(s);
        if !pos.is_empty() {
            let i = pos.iter().position(|&p| p == self.cursor).unwrap_or(0);
            self.cursor = pos[clamp_step(i, step, pos.len())];
        }
        Handled::Yes
    }

    fn commands(&self, ctx: &Ctx) -> Vec<Action> {
        if ctx.focus == Pane::Prompt {
            vec![Action::Left, Action::Right, Action::Select]
        } else {
            Vec::new()
        }
    }
}
