//! The parts strip of the method pane in a conversation's later turn: the shown map's row split
//! over the image, this question, the earlier questions and answers and this answer so far
//! (the view's shares, from the catalogue), as one stacked bar with a legend, so a reader sees
//! at a glance when an answer rests on the conversation rather than on the image.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::Frame;

use crate::explain::catalogue::{PartSums, TextPart};
use crate::style::Look;

use super::super::blocks::put;
use super::super::component::Ctx;

/// Lines the strip takes: the bar and the legend.
pub const HEIGHT: u16 = 2;

/// The colour of a part: the theme's accent for the image, ordinary text for this question,
/// the warning colour for earlier answers, the focused border's for earlier questions, dim
/// for this answer so far.
fn colour(look: &Look, part: TextPart) -> Color {
    let t = &look.theme;
    look.color(match part {
        TextPart::Image => t.accent,
        TextPart::Question => t.foreground,
        TextPart::EarlierAnswers => t.warning,
        TextPart::EarlierQuestions => t.border_focus,
        TextPart::Answer => t.dim,
    })
}

/// The character a part fills the bar with without colours (and its legend's swatch).
fn glyph(part: TextPart) -> char {
    match part {
        TextPart::Image => '█',
        TextPart::Question => '▓',
        TextPart::EarlierAnswers => '▒',
        TextPart::EarlierQuestions => '░',
        TextPart::Answer => '·',
    }
}

/// Cell widths of the parts in a bar `width` cells wide (largest remainders, so the widths sum
/// to `width` when the shares sum to 1).
pub fn widths(shares: &PartSums, width: usize) -> Vec<usize> {
    let exact: Vec<f32> = TextPart::ALL
        .iter()
        .map(|&p| shares.get(p).max(0.0) * width as f32)
        .collect();
    let mut out: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let total: f32 = exact.iter().sum();
    let target = (total.round() as usize).min(width);
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for &i in order
        .iter()
        .cycle()
        .take(target.saturating_sub(out.iter().sum()))
    {
        out[i] += 1;
    }
    out
}

/// Draws the strip of the view's parts into the first [`HEIGHT`] lines of `area`.
pub fn draw(f: &mut Frame, ctx: &Ctx, shares: &PartSums, area: Rect) {
    let look = ctx.look;
    let buf = f.buffer_mut();
    let label = "parts ";
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let used = put(buf, area, area.x, area.y, label, fg);
    let width = area.width.saturating_sub(used) as usize;
    let mut x = area.x + used;
    for (&part, w) in TextPart::ALL.iter().zip(widths(shares, width)) {
        let text: String = if look.no_color() {
            std::iter::repeat_n(glyph(part), w).collect()
        } else {
            " ".repeat(w)
        };
        put(
            buf,
            area,
            x,
            area.y,
            &text,
            Style::default().bg(colour(look, part)),
        );
        x += w as u16;
    }
    let mut x = area.x;
    for &part in &TextPart::ALL {
        let swatch = if look.no_color() {
            glyph(part).to_string()
        } else {
            " ".into()
        };
        x += put(
            buf,
            area,
            x,
            area.y + 1,
            &swatch,
            Style::default().bg(colour(look, part)),
        );
        let text = format!(" {} {:.2}  ", part.name(), shares.get(part));
        x += put(buf, area, x, area.y + 1, &text, fg);
    }
}

#[cfg(test)]
mod tests {
    use super::widths;
    use crate::explain::catalogue::PartSums;

    #[test]
    fn widths_fill_the_bar_by_share() {
        let shares = PartSums {
            image: 0.5,
            question: 0.25,
            earlier_questions: 0.125,
            earlier_answers: 0.125,
            answer: 0.0,
        };
        // the order of TextPart::ALL: image, question, earlier answers, earlier questions, answer
        assert_eq!(widths(&shares, 16), vec![8, 4, 2, 2, 0]);
        let thirds = PartSums {
            image: 1.0 / 3.0,
            question: 1.0 / 3.0,
            earlier_answers: 1.0 / 3.0,
            ..PartSums::default()
        };
        assert_eq!(widths(&thirds, 10).iter().sum::<usize>(), 10);
        assert_eq!(widths(&PartSums::default(), 10), vec![0; 5]);
    }
}
