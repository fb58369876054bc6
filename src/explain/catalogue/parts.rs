//! The parts of a turn's sequence that the text views separate: the image, the current
//! question, the earlier questions and the earlier answers of a conversation, and the answer so
//! far (docs/design.md, "Conversations"). A session without turns is one turn whose whole
//! input outside the image is its question.

use std::ops::Range;

use crate::session::Session;

/// What one position of a turn's sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPart {
    /// An image feature.
    Image,
    /// This turn's question (with the chat template's markers around it).
    Question,
    /// An earlier turn's question (and the template's text before the first question).
    EarlierQuestions,
    /// An earlier turn's answer.
    EarlierAnswers,
    /// This turn's answer tokens before the explained one.
    Answer,
}

impl TextPart {
    /// Every part, in the order the views list them.
    pub const ALL: [TextPart; 5] = [
        TextPart::Image,
        TextPart::Question,
        TextPart::EarlierAnswers,
        TextPart::EarlierQuestions,
        TextPart::Answer,
    ];

    /// The part's name in views and JSON.
    pub fn name(self) -> &'static str {
        match self {
            TextPart::Image => "image",
            TextPart::Question => "question",
            TextPart::EarlierQuestions => "earlier questions",
            TextPart::EarlierAnswers => "earlier answers",
            TextPart::Answer => "answer",
        }
    }

    /// The part's key in JSON objects.
    pub fn key(self) -> &'static str {
        match self {
            TextPart::Image => "image",
            TextPart::Question => "question",
            TextPart::EarlierQuestions => "earlier_questions",
            TextPart::EarlierAnswers => "earlier_answers",
            TextPart::Answer => "answer",
        }
    }
}

/// Where the parts lie in the current turn of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnParts {
    image: Range<usize>,
    question_start: usize,
    earlier_answers: Vec<Range<usize>>,
    input_len: usize,
}

impl TurnParts {
    /// The parts of `s`'s current turn (its standard fields).
    pub fn of(s: &Session) -> Self {
        let (question_start, earlier_answers) = match s.current_turn() {
            Some(t) => (
                t.question_start,
                t.earlier_answers.iter().map(|&[a, l]| a..a + l).collect(),
            ),
            None => (0, Vec::new()),
        };
        Self {
            image: s.image_range(),
            question_start,
            earlier_answers,
            input_len: s.num_input(),
        }
    }

    /// The part position `p` belongs to.
    pub fn part(&self, p: usize) -> TextPart {
        if self.image.contains(&p) {
            TextPart::Image
        } else if p >= self.input_len {
            TextPart::Answer
        } else if p >= self.question_start {
            TextPart::Question
        } else if self.earlier_answers.iter().any(|r| r.contains(&p)) {
            TextPart::EarlierAnswers
        } else {
            TextPart::EarlierQuestions
        }
    }

    /// Whether the turn has earlier turns (so the earlier parts can be non-empty).
    pub fn has_history(&self) -> bool {
        self.question_start > 0
    }
}

/// A row's sums over the parts of a turn.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PartSums {
    /// Σ over the image positions.
    pub image: f32,
    /// Σ over this turn's question.
    pub question: f32,
    /// Σ over the earlier questions.
    pub earlier_questions: f32,
    /// Σ over the earlier answers.
    pub earlier_answers: f32,
    /// Σ over this turn's answer before the query.
    pub answer: f32,
}

impl PartSums {
    /// The sum of one part.
    pub fn get(&self, part: TextPart) -> f32 {
        match part {
            TextPart::Image => self.image,
            TextPart::Question => self.question,
            TextPart::EarlierQuestions => self.earlier_questions,
            TextPart::EarlierAnswers => self.earlier_answers,
            TextPart::Answer => self.answer,
        }
    }

    /// The sum of every part.
    pub fn total(&self) -> f32 {
        TextPart::ALL.iter().map(|&p| self.get(p)).sum()
    }

    /// Adds `w ×` each of `other`'s sums (the mean of several rows).
    pub fn add_scaled(&mut self, other: &PartSums, w: f32) {
        self.image += w * other.image;
        self.question += w * other.question;
        self.earlier_questions += w * other.earlier_questions;
        self.earlier_answers += w * other.earlier_answers;
        self.answer += w * other.answer;
    }

    /// Adds `v` to `part`'s sum.
    pub fn add(&mut self, part: TextPart, v: f32) {
        match part {
            TextPart::Image => self.image += v,
            TextPart::Question => self.question += v,
            TextPart::EarlierQuestions => self.earlier_questions += v,
            TextPart::EarlierAnswers => self.earlier_answers += v,
            TextPart::Answer => self.answer += v,
        }
    }

    /// Each part's share of the total (all 0 when the total is 0).
    pub fn shares(&self) -> PartSums {
        let total = self.total();
        let f = |v: f32| if total > 0.0 { v / total } else { 0.0 };
        PartSums {
            image: f(self.image),
            question: f(self.question),
            earlier_questions: f(self.earlier_questions),
            earlier_answers: f(self.earlier_answers),
            answer: f(self.answer),
        }
    }
}

/// Sums of a prepared row (relevancy, attention) over the parts, positions before the query
/// `q` (the image also past it, as [`crate::explain::relevancy::views::reliance`] counts it).
pub fn part_sums(parts: &TurnParts, row: &[f32], q: usize) -> PartSums {
    let mut out = PartSums::default();
    for (p, &v) in row.iter().enumerate() {
        let part = parts.part(p);
        if p < q || part == TextPart::Image {
            out.add(part, v);
        }
    }
    out
}

/// Sums of an attention row of the query at `q` over the parts, the query's own position
/// counted in its part: a softmax row's parts then sum to 1, the whole attention mass.
pub fn attention_part_sums(parts: &TurnParts, row: &[f32], q: usize) -> PartSums {
    part_sums(parts, row, q + 1)
}

/// Sums of a map's own values over the parts: `image` (the sum over its cells) and its text
/// values by position (what the causal map gives: image weights and the explaining text
/// positions' importances).
pub fn value_part_sums(
    parts: &TurnParts,
    image: f32,
    text: &std::collections::BTreeMap<usize, f32>,
) -> PartSums {
    let mut out = PartSums {
        image,
        ..PartSums::default()
    };
    for (&p, &v) in text {
        out.add(parts.part(p), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> TurnParts {
        // image 1..3, first answer 5..7, this question from 8, input 10 positions
        let first_answer = 5..7;
        TurnParts {
            image: 1..3,
            question_start: 8,
            earlier_answers: Vec::from([first_answer]),
            input_len: 10,
        }
    }

    #[test]
    fn positions_fall_in_their_parts() {
        let p = parts();
        let got: Vec<TextPart> = (0..12).map(|i| p.part(i)).collect();
        use TextPart::*;
        assert_eq!(
            got,
            vec![
                EarlierQuestions,
                Image,
                Image,
                EarlierQuestions,
                EarlierQuestions,
                EarlierAnswers,
                EarlierAnswers,
                EarlierQuestions,
                Question,
                Question,
                Answer,
                Answer
            ]
        );
        assert!(p.has_history());
    }

    #[test]
    fn sums_split_the_row_before_the_query() {
        let row: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let s = part_sums(&parts(), &row, 11);
        assert_eq!(s.image, 3.0);
        assert_eq!(s.earlier_answers, 11.0);
        assert_eq!(s.earlier_questions, 0.0 + 3.0 + 4.0 + 7.0);
        assert_eq!(s.question, 17.0);
        assert_eq!(s.answer, 10.0);
        let shares = s.shares();
        assert!((shares.total() - 1.0).abs() < 1e-6);
    }
}
