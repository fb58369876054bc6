//! The strip between the sides: the tokens compared, A − B on one symmetric scale with
//! Spearman's ρ when both sessions saw the same pixels, and every answer token's image
//! reliance in A and in B side by side (relevancy's under the relevancy method when the session
//! holds it, else attention's), the compared tokens marked. Draws what
//! [`super::comparison`] returned: when no map can be
//! compared (a session lacks relevancy, say) the sentence why, and the reliance rows still.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::explain::compare::{Side, TokenReliance};
use crate::style::normalize;

use super::super::app::App;
use super::super::blocks::{display_token, half_blocks, pane_frame, pane_inner, put, Px};
use super::super::state::Method;
use super::ComparePane;

/// The shade of a share in [0, 1], one cell wide.
const SHADES: [&str; 9] = [" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];

/// Draws the strip of `c` into `area` (nothing when it is empty).
pub fn draw(f: &mut Frame, area: Rect, app: &App, c: &ComparePane) {
    if area.width < 12 || area.height < 4 {
        return;
    }
    let look = &app.look;
    let link = if c.linked { "linked" } else { "unlinked" };
    f.render_widget(pane_frame(look, false, format!("A − B · {link}")), area);
    let inner = pane_inner(area);
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let warn = Style::default().fg(look.color(look.theme.warning));
    let mut y = inner.y;
    let say = |f: &mut Frame, y: &mut u16, text: &str, style: Style| {
        for line in wrap(text, inner.width as usize) {
            if *y < inner.bottom() {
                put(f.buffer_mut(), inner, inner.x, *y, &line, style);
                *y += 1;
            }
        }
    };
    let cmp = match &c.result {
        Ok(cmp) => cmp,
        Err(e) => {
            say(f, &mut y, e, warn);
            return;
        }
    };
    let [ta, tb] = c.tokens;
    match &cmp.maps {
        Ok(m) => {
            let pair = format!(
                "A {ta} {:?} · B {tb} {:?}",
                display_token(&m.text[0]),
                display_token(&m.text[1])
            );
            say(f, &mut y, &pair, fg);
            match (m.rank_correlation, &m.difference) {
                (Some(r), Some(d)) => {
                    say(f, &mut y, &format!("Spearman ρ {r:.3}"), fg);
                    let reach = d
                        .iter()
                        .fold(0f32, |a, v| a.max(v.abs()))
                        .max(f32::MIN_POSITIVE);
                    say(f, &mut y, &format!("A − B (±{reach:.4})"), dim);
                    let [rows, cols] = m.grids[0];
                    let room = inner.bottom().saturating_sub(y) / 2;
                    let at = Rect::new(inner.x, y, inner.width, room);
                    y += grid(f, app, at, (rows, cols), d, (-reach, reach));
                }
                _ => say(f, &mut y, "different images: no difference map", dim),
            }
        }
        Err(e) => say(f, &mut y, e, warn),
    }
    if y + 2 >= inner.bottom() {
        return;
    }
    y += 1;
    let by_relevancy = app.doc.sel.method == Method::Relevancy;
    let what = if by_relevancy {
        "relevancy"
    } else {
        "attention"
    };
    say(f, &mut y, &format!("image share of {what}: A │ B"), dim);
    reliance_rows(
        f,
        Rect::new(inner.x, y, inner.width, inner.bottom() - y),
        app,
        &cmp.reliance,
        c.tokens,
        by_relevancy,
    );
}

/// One row per answer index: A's token and its image share, then B's; the compared tokens
/// reversed; scrolled so that A's compared token is in view.
fn reliance_rows(
    f: &mut Frame,
    area: Rect,
    app: &App,
    [a, b]: &[Side; 2],
    [ta, tb]: [usize; 2],
    by_relevancy: bool,
) {
    let look = &app.look;
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let n = a.tokens.len().max(b.tokens.len());
    let rows = area.height as usize;
    if rows == 0 || n == 0 {
        return;
    }
    let start = ta
        .min(n)
        .saturating_sub(rows / 2)
        .min(n.saturating_sub(rows));
    let half = (area.width.saturating_sub(1) / 2) as usize;
    let cell = |t: Option<&TokenReliance>| -> String {
        let Some(t) = t else {
            return " ".repeat(half);
        };
        let share = if by_relevancy {
            t.relevancy
        } else {
            t.attention
        };
        let text_w = half.saturating_sub(7);
        let mut text: String = display_token(&t.text).chars().take(text_w).collect();
        text.push_str(&" ".repeat(text_w.saturating_sub(text.chars().count())));
        match share {
            Some(v) => {
                let shade = SHADES[((v.clamp(0.0, 1.0) * 8.0).round() as usize).min(8)];
                format!("{text} {shade} {:>3.0}%", v * 100.0)
            }
            None => format!("{text}    — "),
        }
    };
    for (row, i) in (start..n).take(rows).enumerate() {
        let y = area.y + row as u16;
        let mark = |on: bool| {
            if on {
                fg.add_modifier(Modifier::REVERSED)
            } else {
                fg
            }
        };
        let buf = f.buffer_mut();
        let x = area.x;
        put(buf, area, x, y, &cell(a.tokens.get(i)), mark(i == ta));
        put(buf, area, x + half as u16, y, "│", dim);
        put(
            buf,
            area,
            x + half as u16 + 1,
            y,
            &cell(b.tokens.get(i)),
            mark(i == tb),
        );
    }
}

/// `text` broken at spaces into lines of at most `width` characters (a longer word cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let fits = line.chars().count() + 1 + word.chars().count() <= width;
        if !line.is_empty() && !fits {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > width {
            let rest: String = line.chars().skip(width).collect();
            lines.push(line.chars().take(width).collect());
            line = rest;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// One map drawn as a block grid into `area` (at most), each cell the same whole number of
/// columns and half-rows; returns the rows used.
fn grid(
    f: &mut Frame,
    app: &App,
    area: Rect,
    (rows, cols): (usize, usize),
    values: &[f32],
    range: (f32, f32),
) -> u16 {
    if rows * cols == 0 || values.len() < rows * cols || area.width == 0 || area.height == 0 {
        return 0;
    }
    let k = (area.width as usize / cols)
        .min(area.height as usize * 2 / rows)
        .max(1);
    let (w, h) = (
        (cols * k).min(area.width as usize),
        (rows * k).min(area.height as usize * 2),
    );
    let look = &app.look;
    half_blocks(
        f.buffer_mut(),
        look,
        (area.x, area.y),
        (w as u16, h as u16),
        |x, y| {
            let level = normalize(
                values[(y / k).min(rows - 1) * cols + (x / k).min(cols - 1)],
                range,
            );
            Px {
                rgb: look.map_rgb(level),
                level,
            }
        },
    );
    (h as u16).div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("", 5), Vec::<String>::new());
    }
}
