//! Answer → prompt-word attention: sub-word pieces merged into words.

use super::{combined_row, AttentionError, HeadAgg};
use crate::session::{piece_text, Session};

/// One prompt word: the text pieces merged and the input positions they occupy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word as shown (the `▁` word marker removed).
    pub text: String,
    /// Its input positions, ascending.
    pub positions: Vec<usize>,
}

fn is_special(piece: &str) -> bool {
    piece.len() > 2 && piece.starts_with('<') && piece.ends_with('>')
}

/// The prompt's words: input tokens outside the image span, a piece whose text starts with a
/// space (`▁`, `Ġ`) or a special token such as `<s>` starting a new word.
pub fn prompt_words(s: &Session) -> Vec<Word> {
    let image = s.image_range();
    let mut words: Vec<Word> = Vec::new();
    let mut prev_special = true;
    for (p, piece) in s.manifest.tokens.input.iter().enumerate() {
        if image.contains(&p) {
            prev_special = true;
            continue;
        }
        let special = is_special(piece);
        let text = if special {
            piece.to_string()
        } else {
            piece_text(piece)
        };
        let starts = special || prev_special || text.starts_with(' ') || words.is_empty();
        if starts {
            words.push(Word {
                text: text.trim_start().to_string(),
                positions: vec![p],
            });
        } else if let Some(w) = words.last_mut() {
            w.text.push_str(&text);
            w.positions.push(p);
        }
        prev_special = special;
    }
    words
}

/// For the prompt's words, the attention the selected answer `tokens` give to each (summed over
/// the word's pieces, averaged over the tokens), at layer `l` with heads combined by `agg`.
pub fn word_attention(
    s: &Session,
    tokens: &[usize],
    l: usize,
    agg: HeadAgg,
) -> Result<Vec<(Word, f32)>, AttentionError> {
    if tokens.is_empty() {
        return Err(AttentionError::NoTokens);
    }
    let mut mean_row: Vec<f32> = Vec::new();
    for &t in tokens {
        let row = combined_row(s, t, l, agg)?;
        if mean_row.is_empty() {
            mean_row = vec![0.0; row.len()];
        }
        for (o, v) in mean_row.iter_mut().zip(&row) {
            *o += v / tokens.len() as f32;
        }
    }
    Ok(prompt_words(s)
        .into_iter()
        .map(|w| {
            let v = w.positions.iter().filter_map(|&p| mean_row.get(p)).sum();
            (w, v)
        })
        .collect())
}
