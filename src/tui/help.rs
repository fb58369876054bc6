//! The help overlay: every key, generated from the app's keymap ([`super::keymap::HELP`]); a
//! [`Component`] owning whether it is open and which page it shows. The rows are laid out in as
//! many columns as fit the terminal with readable texts; when even those are too few, the
//! columns go on further pages (Space or PageDown turns the page).

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::component::{Component, Ctx, Handled};
use super::keymap::{help_rows, Action, Keymap};
use super::msg::Effect;

/// The help overlay: closed, or open over the whole frame until the next key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HelpOverlay {
    /// The overlay is shown.
    pub open: bool,
    /// The page shown (0-based), when the keys take more than one.
    pub page: usize,
}

impl HelpOverlay {
    /// Turns to the next page when there is one in a terminal of `screen` (then `true`); the
    /// app's key handling asks this for Space and PageDown before any key closes the overlay.
    pub fn next_page(&mut self, keymap: &Keymap, screen: Rect) -> bool {
        let pages = layout(&help_rows(keymap), screen).0.len();
        if self.open && self.page + 1 < pages {
            self.page += 1;
            true
        } else {
            false
        }
    }
}

impl Component for HelpOverlay {
    /// Draws the overlay centred in `area` when open.
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        if self.open {
            draw(f, area, ctx, self.page);
        }
    }

    /// While open, any action closes it; while closed, [`Action::Help`] opens it.
    fn handle(&mut self, action: Action, _ctx: &Ctx, _out: &mut Vec<Effect>) -> Handled {
        if self.open || action == Action::Help {
            self.open = !self.open;
            self.page = 0;
            Handled::Yes
        } else {
            Handled::No
        }
    }

    fn commands(&self, _ctx: &Ctx) -> Vec<Action> {
        if self.open {
            Vec::new()
        } else {
            vec![Action::Help]
        }
    }
}

/// The widest a help column grows.
const COLUMN_WIDTH: u16 = 96;

/// `text` broken at spaces into lines of at most `width` characters (a longer word is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let current = lines.last_mut().expect("one line at least");
        let needed =
            current.chars().count() + usize::from(!current.is_empty()) + word.chars().count();
        if !current.is_empty() && needed > width {
            lines.push(String::new());
        }
        let current = lines.last_mut().expect("one line at least");
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines
        .into_iter()
        .map(|l| l.chars().take(width).collect())
        .collect()
}

/// The narrowest a help text may wrap to before the help takes fewer columns and more pages.
const MIN_TEXT_WIDTH: usize = 30;

/// One page of the help: its columns, each a list of lines (key label or blank, text).
type Page = Vec<Vec<(String, String)>>;

/// The help laid out for `area`: in as few columns as hold every row, up to as many as leave
/// each text [`MIN_TEXT_WIDTH`] characters; when those still do not hold them, the columns go on
/// further pages. Returns the pages (at least one) and the column width. Long texts wrap under
/// their own column.
fn layout(rows: &[(String, &str)], area: Rect) -> (Vec<Page>, u16) {
    let label = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let inner_height = usize::from(area.height.saturating_sub(2)).max(1);
    let width_of = |columns: u16| (area.width.saturating_sub(4) / columns).min(COLUMN_WIDTH);
    let text_of = |width: u16| usize::from(width).saturating_sub(label + 4);
    let most = (1..=3u16)
        .rev()
        .find(|&c| text_of(width_of(c)) >= MIN_TEXT_WIDTH)
        .unwrap_or(1);
    let mut best = None;
    for columns in 1..=most {
        let width = width_of(columns);
        let text_width = text_of(width);
        let mut cols: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, text) in rows {
            let wrapped = wrap(text, text_width);
            if cols
                .last()
                .is_some_and(|c| c.len() + wrapped.len() > inner_height)
                && !cols.last().is_some_and(Vec::is_empty)
            {
                cols.push(Vec::new());
            }
            let col = cols.last_mut().expect("one column at least");
            for (n, line) in wrapped.into_iter().enumerate() {
                let key = if n == 0 { k.clone() } else { String::new() };
                col.push((format!("{key:>label$}  "), line));
            }
        }
        let fits = cols.len() <= usize::from(columns);
        best = Some((cols, width, columns));
        if fits {
            break;
        }
    }
    let (cols, width, columns) = best.expect("one layout tried at least");
    let pages = cols
        .chunks(usize::from(columns))
        .map(<[_]>::to_vec)
        .collect();
    (pages, width)
}

fn draw(f: &mut Frame, area: Rect, ctx: &Ctx, page: usize) {
    let look = ctx.look;
    let rows = help_rows(ctx.keymap);
    let (pages, width) = layout(&rows, area);
    let count = pages.len();
    let page = page.min(count.saturating_sub(1));
    let columns = pages.into_iter().nth(page).unwrap_or_default();
    let tallest = columns.iter().map(Vec::len).max().unwrap_or(0);
    let w = (width * columns.len().max(1) as u16).min(area.width);
    let h = (tallest as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let accent = Style::default().fg(look.color(look.theme.accent));
    let fg = Style::default().fg(look.color(look.theme.foreground));
    f.render_widget(Clear, r);
    let title = if count > 1 && page + 1 < count {
        format!(
            " Keys {}/{count} (Space: next page, any other key closes) ",
            page + 1
        )
    } else if count > 1 {
        format!(" Keys {}/{count} (any key closes) ", page + 1)
    } else {
        " Keys (any key closes) ".to_string()
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(accent)
        .title(title);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let column_width = inner.width / columns.len().max(1) as u16;
    for (i, column) in columns.into_iter().enumerate() {
        let x = inner.x + column_width * i as u16;
        let lines: Vec<Line> = column
            .into_iter()
            .map(|(k, a)| Line::from(vec![Span::styled(k, accent), Span::styled(a, fg)]))
            .collect();
        f.render_widget(
            Paragraph::new(lines),
            Rect::new(x, inner.y, column_width, inner.height),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::keymap::Keymap;

    /// Each row's text read back from the laid-out lines: its key's line and the blank-keyed
    /// lines under it.
    fn texts(pages: &[Page]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (key, line) in pages.iter().flatten().flatten() {
            if key.trim().is_empty() {
                if let Some(last) = out.last_mut() {
                    last.push(' ');
                    last.push_str(line);
                }
            } else {
                out.push(line.clone());
            }
        }
        out
    }

    #[test]
    fn every_text_is_laid_out_whole_within_its_column() {
        let rows = help_rows(&Keymap::default());
        let want: Vec<String> = rows
            .iter()
            .map(|(_, t)| t.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        for (w, h, pages_expected) in [(120, 40, 2), (200, 60, 1), (80, 24, 3)] {
            let (pages, width) = layout(&rows, Rect::new(0, 0, w, h));
            assert_eq!(pages.len(), pages_expected, "{w}×{h}");
            assert_eq!(texts(&pages), want, "{w}×{h}");
            for (key, line) in pages.iter().flatten().flatten() {
                let used = key.chars().count() + line.chars().count();
                assert!(used + 2 <= usize::from(width), "{w}×{h}: {key}{line}");
            }
            for page in &pages {
                assert!(
                    page.iter().all(|c| c.len() <= usize::from(h - 2)),
                    "{w}×{h}"
                );
            }
        }
    }
}
