//! Views of stored relevancy rows (pure numbers, no terminal code): words merged from
//! sub-word pieces, the top input words against the image, and how much each answer token
//! relies on the image versus the text.

use std::ops::Range;

use super::math::residual_normalize_row;
use crate::session::{piece_text, Session};

/// LVLM-Interpret's `SEPARATORS_LIST`: tokens that never join a word.
pub const SEPARATORS: &[&str] = &[
    ".", ",", "?", "!", ":", ";", "</s>", "/", "(", ")", "[", "]", "{", "}", "<", ">", "|", "\\",
    "-", "_", "+", "=", "*", "&", "^", "%", "$", "#", "@", "~", "`", " ", "\t", "\n", "\r", "\x0b",
    "\x0c",
];

/// How a relevancy row is prepared before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Normalization {
    /// `r − e_q`: the identity's self term removed (LVLM-Interpret's `R − I` branch).
    #[default]
    SelfRemoved,
    /// LVLM-Interpret's residual normalisation `(r − e_q) / Σ(r − e_q) + e_q`.
    Residual,
}

impl Normalization {
    /// The other normalisation.
    pub fn toggle(self) -> Normalization {
        match self {
            Normalization::SelfRemoved => Normalization::Residual,
            Normalization::Residual => Normalization::SelfRemoved,
        }
    }

    /// Its name in titles and JSON: `self-removed` or `residual`.
    pub fn name(self) -> &'static str {
        match self {
            Normalization::SelfRemoved => "self-removed",
            Normalization::Residual => "residual",
        }
    }
}

/// Prepare row `q` of the relevancy matrix as `norm` says.
pub fn prepare_row(row: &[f32], q: usize, norm: Normalization) -> Vec<f32> {
    match norm {
        Normalization::Residual => residual_normalize_row(row, q),
        Normalization::SelfRemoved => {
            let mut out = row.to_vec();
            if let Some(v) = out.get_mut(q) {
                *v -= 1.0;
            }
            out
        }
    }
}

/// A word made of one or more consecutive token pieces.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// The pieces joined, the word-start marker turned into a space and trimmed.
    pub text: String,
    /// Absolute positions of its pieces.
    pub positions: Vec<usize>,
    /// Mean relevancy of its pieces (LVLM-Interpret averages the pieces of a word).
    pub value: f32,
}

fn is_separator(piece: &str) -> bool {
    SEPARATORS.contains(&piece)
}

/// A piece's text inside a word: byte-fallback pieces (`<0x0A>`) kept as spelled, as
/// LVLM-Interpret keeps them; every other piece as the text it stands for ([`piece_text`]).
fn word_text(piece: &str) -> String {
    if piece.starts_with("<0x") {
        piece.to_string()
    } else {
        piece_text(piece)
    }
}

/// Merge `(position, piece, value)` triples, in order, into words: a piece starts a new word
/// when its text begins with a space (`▁`, byte-level `Ġ`), when it is a separator, or when the piece before it was a
/// separator (separators stand alone); otherwise it extends the current word. A word's value
/// is the mean of its pieces. (LVLM-Interpret's `compute_word_rel_map` uses the same rule,
/// except that it lets a piece without `▁` extend a separator.)
pub fn merge_words(pieces: &[(usize, &str, f32)]) -> Vec<Word> {
    let mut words: Vec<(Word, usize)> = Vec::new();
    let mut prev_sep = true;
    for &(pos, piece, value) in pieces {
        let sep = is_separator(piece);
        let text = word_text(piece);
        let starts = prev_sep || sep || text.starts_with(' ');
        match words.last_mut() {
            Some((w, count)) if !starts => {
                w.text.push_str(&text);
                w.positions.push(pos);
                w.value += value;
                *count += 1;
            }
            _ => words.push((
                Word {
                    text,
                    positions: vec![pos],
                    value,
                },
                1,
            )),
        }
        prev_sep = sep;
    }
    words
        .into_iter()
        .map(|(mut w, count)| {
            w.value /= count as f32;
            w.text = w.text.trim().to_string();
            w
        })
        .collect()
}

/// Text relevancy of one answer token: the input words ranked by relevancy, and the image's
/// largest per-patch relevancy to compare them with.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRelevancy {
    /// Input words outside the image span (the query position itself left out), most relevant
    /// first, at most `top_k`.
    pub words: Vec<Word>,
    /// Largest relevancy of an image position.
    pub image_max: f32,
}

/// Rank the input words of a prepared relevancy row (see [`prepare_row`]).
/// `tokens`: the input token strings (length N); `image`: the image span; `q`: the query
/// position (left out: its value is the token's own residual stream).
pub fn text_relevancy(
    row: &[f32],
    tokens: &[String],
    image: Range<usize>,
    q: usize,
    top_k: usize,
) -> TextRelevancy {
    let pieces: Vec<(usize, &str, f32)> = tokens
        .iter()
        .enumerate()
        .filter(|(p, _)| !image.contains(p) && *p != q && *p < row.len())
        .map(|(p, s)| (p, s.as_str(), row[p]))
        .collect();
    let mut words = merge_words(&pieces);
    words.sort_by(|a, b| b.value.total_cmp(&a.value));
    words.truncate(top_k);
    let image_max = row
        .get(image.clone())
        .unwrap_or(&[])
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    TextRelevancy {
        words,
        image_max: if image_max.is_finite() {
            image_max
        } else {
            0.0
        },
    }
}

/// How much one answer token's relevancy falls on the image versus on the text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reliance {
    /// Sum of the relevancy of the image positions.
    pub image: f32,
    /// Sum of the relevancy of every other position before the query (prompt text and
    /// earlier answer tokens).
    pub text: f32,
}

impl Reliance {
    /// `image / (image + text)`, 0 when both are 0.
    pub fn image_share(&self) -> f32 {
        let total = self.image + self.text;
        if total > 0.0 {
            self.image / total
        } else {
            0.0
        }
    }
}

/// Image-vs-text reliance of a prepared row `row` (see [`prepare_row`]) of query position
/// `q`: image = Σ row[image span], text = Σ row[p] over p < q outside the image span.
pub fn reliance(row: &[f32], image: Range<usize>, q: usize) -> Reliance {
    let mut out = Reliance {
        image: 0.0,
        text: 0.0,
    };
    for (p, &v) in row.iter().enumerate().take(q) {
        if image.contains(&p) {
            out.image += v;
        } else {
            out.text += v;
        }
    }
    // image positions at or past q cannot occur for a causal decoder, but count them anyway
    for p in image.clone().filter(|&p| p >= q && p < row.len()) {
        out.image += row[p];
    }
    out
}

/// The `relevancy.llm` row of output token `t` prepared as `norm` says (at its query position),
/// when the session holds it.
pub fn session_row(s: &Session, t: usize, norm: Normalization) -> Option<Vec<f32>> {
    if !s.manifest.relevancy_tokens.contains(&t) {
        return None;
    }
    let a = s.relevancy_llm.as_ref()?;
    if a.shape.len() != 2 || t >= a.shape[0] {
        return None;
    }
    Some(prepare_row(a.row(&[t]), s.query_position(t), norm))
}

/// [`text_relevancy`] of output token `t` of the session, when it holds the row.
pub fn session_text_relevancy(
    s: &Session,
    t: usize,
    norm: Normalization,
    top_k: usize,
) -> Option<TextRelevancy> {
    let row = session_row(s, t, norm)?;
    let q = s.query_position(t);
    Some(text_relevancy(
        &row,
        &s.manifest.tokens.input,
        s.image_range(),
        q,
        top_k,
    ))
}

/// [`reliance`] of every output token of the session (`None` where it holds no row).
pub fn answer_reliance(s: &Session, norm: Normalization) -> Vec<Option<Reliance>> {
    (0..s.num_output())
        .map(|t| {
            session_row(s, t, norm).map(|row| reliance(&row, s.image_range(), s.query_position(t)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_merge_pieces_and_keep_separators_alone() {
        let pieces = [
            (0, "▁W", 1.0),
            (1, "hat", 3.0),
            (2, "▁is", 2.0),
            (3, "?", 5.0),
            (4, "A", 1.0),
            (5, "▁pic", 4.0),
            (6, "ture", 0.0),
        ];
        let words = merge_words(&pieces);
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["What", "is", "?", "A", "picture"]);
        assert_eq!(words[0].positions, vec![0, 1]);
        assert_eq!(words[0].value, 2.0);
        assert_eq!(words[4].value, 2.0);
        assert_eq!(words[2].value, 5.0);
    }

    #[test]
    fn text_relevancy_ranks_words_and_skips_image_and_query() {
        let tokens: Vec<String> = ["<s>", "▁U", "SER", "<image>", "<image>", "▁cat", "?", ":"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let row = [0.1, 0.2, 0.4, 0.9, 0.7, 0.5, 0.05, 1.3];
        let tr = text_relevancy(&row, &tokens, 3..5, 7, 2);
        assert_eq!(tr.image_max, 0.9);
        assert_eq!(tr.words.len(), 2);
        assert_eq!(tr.words[0].text, "cat");
        assert_eq!(tr.words[1].text, "USER");
        assert!((tr.words[1].value - 0.3).abs() < 1e-6);
    }

    #[test]
    fn reliance_splits_image_and_text() {
        let row = prepare_row(&[0.5, 1.0, 3.0, 0.5, 1.25], 4, Normalization::SelfRemoved);
        let r = reliance(&row, 1..3, 4);
        assert_eq!(r.image, 4.0);
        assert_eq!(r.text, 1.0);
        assert!((r.image_share() - 0.8).abs() < 1e-6);
        let zero = Reliance {
            image: 0.0,
            text: 0.0,
        };
        assert_eq!(zero.image_share(), 0.0);
    }
}
