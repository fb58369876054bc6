//! The parts strip of the method pane in a conversation's later turn: the shown map's row split
//! over the image, this question, the earlier questions and answers and this answer so far
//! (the view's shares, from the catalogue), as one stacked bar with a legend, so a reader sees
//! at a glance when an answer rests on the conversation rather than on the image.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::Frame;

use crate::explain::catalogue::{PartSums, TextPart, TurnParts};
use crate::session::Session;
use crate::style::{part_glyph as glyph, Look};

use super::super::blocks::put;
use super::super::component::Ctx;

/// Lines the strip takes in a pane `width` cells wide: the bar and the legend, wrapped.
pub fn height(shares: &PartSums, width: u16) -> u16 {
    1 + legend(shares, width)
        .last()
        .map_or(0, |&(_, line, _)| line + 1)
}

/// The legend's entries `(part, line, x)`: a swatch, the part's name and its share, flowed
/// over lines `width` cells wide.
fn legend(shares: &PartSums, width: u16) -> Vec<(TextPart, u16, u16)> {
    let (mut line, mut x) = (0u16, 0u16);
    TextPart::ALL
        .iter()
        .map(|&part| {
            let w = entry(shares, part).chars().count() as u16 + 1;
            if x > 0 && x + w > width {
                (line, x) = (line + 1, 0);
            }
            let at = (part, line, x);
            x += w + 1;
            at
        })
        .collect()
}

/// The legend's text of a part after its swatch.
fn entry(shares: &PartSums, part: TextPart) -> String {
    format!(" {} {:.2}", part.name(), shares.get(part))
}

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

/// A word bar's label in a turn with earlier turns: the word tagged with its part's glyph
/// (the part of its first position), so the bars show which words come from earlier turns;
/// the word alone otherwise.
pub fn tagged(s: &Session, positions: &[usize], word: String) -> String {
    let parts = TurnParts::of(s);
    match positions.first() {
        Some(&p) if parts.has_history() => format!("{} {word}", glyph(parts.part(p))),
        _ => word,
    }
}

/// Draws the strip of the view's parts into `area` ([`height`] lines).
pub fn draw(f: &mut Frame, ctx: &Ctx, shares: &PartSums, area: Rect) {
    let look = ctx.look;
    let buf = f.buffer_mut();
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let used = put(buf, area, area.x, area.y, "parts ", fg);
    let width = area.width.saturating_sub(used) as usize;
    let mut x = area.x + used;
    let fill = |part: TextPart, w: usize| -> String {
        let c = if look.no_color() { glyph(part) } else { ' ' };
        std::iter::repeat_n(c, w).collect()
    };
    for (&part, w) in TextPart::ALL.iter().zip(widths(shares, width)) {
        let swatch = Style::default().bg(colour(look, part));
        put(buf, area, x, area.y, &fill(part, w), swatch);
        x += w as u16;
    }
    for (part, line, x) in legend(shares, area.width) {
        let (x, y) = (area.x + x, area.y + 1 + line);
        let swatch = Style::default().fg(colour(look, part));
        let w = put(buf, area, x, y, &glyph(part).to_string(), swatch);
        put(buf, area, x + w, y, &entry(shares, part), fg);
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

    #[test]
    fn the_legend_wraps_to_the_pane() {
        let shares = PartSums {
            image: 0.5,
            question: 0.5,
            ..PartSums::default()
        };
        // " image 0.50" and the swatch: 12 cells, then a gap
        assert_eq!(super::height(&shares, 200), 2);
        let narrow = super::legend(&shares, 30);
        assert_eq!((narrow[0].1, narrow[0].2), (0, 0));
        assert_eq!((narrow[1].1, narrow[1].2), (0, 13));
        assert_eq!(narrow[2].1, 1);
        assert!(super::height(&shares, 30) >= 3);
    }
}
