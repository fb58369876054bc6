//! Two sessions side by side (issue 16, "Prompt comparison", the MMVP case study): their
//! answers, each answer token's image-vs-text reliance, and for chosen tokens one catalogue
//! map of each with their cell-wise difference when both saw the same image. Pure functions of
//! the sessions; `lvlmscope compare` prints what they return.
//!
//! Reliance of token t: `attention` is the share of t's attention (mean over layers and heads)
//! on the image span ([`attn::image_share`]); `relevancy` the image share of t's self-removed
//! decoder relevancy row ([`views::reliance`]) when the session holds it.

use serde::Serialize;

use crate::explain::attention as attn;
use crate::explain::catalogue::{self, CatalogueError, MapId, Options};
use crate::explain::relevancy::views::{self, Normalization};
use crate::session::{piece_text, Session};

/// One answer token's reliance on the image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenReliance {
    /// The token index.
    pub token: usize,
    /// Its text.
    pub text: String,
    /// Share of its attention (all layers and heads) on the image, when attention was recorded.
    pub attention: Option<f32>,
    /// Image share of its decoder relevancy row, when the session holds one.
    pub relevancy: Option<f32>,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// The session's prompt.
    pub prompt: String,
    /// The image file the session names.
    pub image: String,
    /// The answer text.
    pub answer: String,
    /// Per answer token.
    pub tokens: Vec<TokenReliance>,
}

/// The map of one token in both sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenMaps {
    /// The token index (in both answers).
    pub token: usize,
    /// Its text in A and in B.
    pub text: [String; 2],
    /// `[rows, cols]` of A's and B's grids.
    pub grids: [[usize; 2]; 2],
    /// A's map, row-major.
    pub a: Vec<f32>,
    /// B's map.
    pub b: Vec<f32>,
    /// A − B cell by cell (same image only).
    pub difference: Option<Vec<f32>>,
    /// Spearman ρ of A and B (same image only).
    pub rank_correlation: Option<f32>,
}

/// A comparison of two sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Session A.
    pub a: Side,
    /// Session B.
    pub b: Side,
    /// Both saw the same pixels (then maps are differenced cell by cell).
    pub same_image: bool,
    /// The map compared.
    pub method: MapId,
    /// The chosen tokens' maps.
    pub maps: Vec<TokenMaps>,
}

/// Why two sessions cannot be compared; one sentence each.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    /// A token past one of the answers.
    #[error("token {token} does not exist in session {side} (its answer has {count} tokens)")]
    Token {
        /// A or B.
        side: char,
        /// The token.
        token: usize,
        /// Answer tokens of that session.
        count: usize,
    },
    /// A map could not be made.
    #[error("session {side}: {source}")]
    Map {
        /// A or B.
        side: char,
        /// Why.
        source: CatalogueError,
    },
}

/// One session's prompt, image, answer and every answer token's image reliance (the part of a
/// comparison that depends on that session alone).
pub fn side(s: &Session) -> Side {
    let answer = s.manifest.tokens.output.concat();
    let tokens = (0..s.num_output())
        .map(|t| TokenReliance {
            token: t,
            text: s.manifest.tokens.output.get(t).cloned().unwrap_or_default(),
            attention: attn::image_share(s, t, None).ok(),
            relevancy: views::session_row(s, t, Normalization::SelfRemoved).map(|row| {
                views::reliance(&row, s.image_range(), s.query_position(t)).image_share()
            }),
        })
        .collect();
    Side {
        prompt: s.manifest.prompt.clone(),
        image: s.manifest.image.path.clone(),
        answer,
        tokens,
    }
}

/// Whether `a` and `b` saw the same pixels on the same patch grid.
pub fn same_image(a: &Session, b: &Session) -> bool {
    a.manifest.model.image_grid == b.manifest.model.image_grid
        && a.pixel_values.shape == b.pixel_values.shape
        && a.pixel_values.data == b.pixel_values.data
}

/// Compares `a` and `b`: answers and reliance of every token, and map `method` of each of
/// `tokens` in both (causal results the sessions lack are computed from `attn.full`).
pub fn compare(
    a: &Session,
    b: &Session,
    tokens: &[usize],
    method: &MapId,
) -> Result<Comparison, CompareError> {
    let pairs: Vec<[usize; 2]> = tokens.iter().map(|&t| [t, t]).collect();
    compare_pairs(a, b, &pairs, method)
}

/// Like [`compare`], with each map taken at A's token `pair[0]` and B's token `pair[1]` (two
/// answers that say the same word at different places); [`TokenMaps::token`] is A's.
pub fn compare_pairs(
    a: &Session,
    b: &Session,
    pairs: &[[usize; 2]],
    method: &MapId,
) -> Result<Comparison, CompareError> {
    let maps = token_maps(a, b, pairs, method, [0, 0])?;
    let [a_side, b_side] = sides(a, b);
    Ok(Comparison {
        a: a_side,
        b: b_side,
        same_image: same_image(a, b),
        method: *method,
        maps,
    })
}

/// A's and B's prompt, image, answer and every answer token's image reliance (the part of a
/// comparison that does not depend on the tokens or the map chosen).
pub fn sides(a: &Session, b: &Session) -> [Side; 2] {
    [side(a), side(b)]
}

/// Map `method` of A's token `pair[0]` and B's token `pair[1]` for each of `pairs`, over A's
/// image region `regions[0]` and B's `regions[1]` (the first region when past a session's;
/// [`compare`] takes the first), with their difference and ρ when both saw the same pixels.
pub fn token_maps(
    a: &Session,
    b: &Session,
    pairs: &[[usize; 2]],
    method: &MapId,
    regions: [usize; 2],
) -> Result<Vec<TokenMaps>, CompareError> {
    let same = same_image(a, b);
    let options = Options {
        seed: None,
        compute_causal: true,
    };
    let one = |side: char, s: &Session, t: usize| -> Result<(String, attn::Grid), CompareError> {
        let region = regions[usize::from(side == 'B')];
        if t >= s.num_output() {
            return Err(CompareError::Token {
                side,
                token: t,
                count: s.num_output(),
            });
        }
        let e = catalogue::explain_with(s, &[t], method, options)
            .map_err(|source| CompareError::Map { side, source })?;
        let grid = match e.regions.into_iter().nth(region) {
            Some(r) => r.grid,
            None => e.grid,
        };
        Ok((s.manifest.tokens.output[t].clone(), grid))
    };
    let mut maps = Vec::with_capacity(pairs.len());
    for &[t, u] in pairs {
        let (ta, ga) = one('A', a, t)?;
        let (tb, gb) = one('B', b, u)?;
        let comparable = same && ga.values.len() == gb.values.len();
        maps.push(TokenMaps {
            token: t,
            text: [ta, tb],
            grids: [[ga.rows, ga.cols], [gb.rows, gb.cols]],
            difference: comparable.then(|| {
                ga.values
                    .iter()
                    .zip(&gb.values)
                    .map(|(x, y)| x - y)
                    .collect()
            }),
            rank_correlation: comparable.then(|| spearman(&ga.values, &gb.values)),
            a: ga.values,
            b: gb.values,
        });
    }
    Ok(maps)
}

/// The token of answer `to` that matches token `t` of answer `from` (the split view's linked
/// token cursor): the nearest
/// token (by index, the earlier on a tie) reading the same as `from[t]`, else `t` clamped to
/// `to`'s tokens.
pub fn matching_token(from: &[String], t: usize, to: &[String]) -> usize {
    if to.is_empty() {
        return 0;
    }
    let norm = |s: &String| piece_text(s).trim().to_lowercase();
    let same = from.get(t).map(norm).and_then(|want| {
        (0..to.len())
            .filter(|&i| norm(&to[i]) == want)
            .min_by_key(|&i| i.abs_diff(t))
    });
    same.unwrap_or(t.min(to.len() - 1))
}

/// Spearman's rank correlation of `a` and `b` (ties take their mean rank; non-finite values
/// count as 0). Two constant maps are the same ranking (1); a constant map against a varying
/// one shares no ranking (0).
pub fn spearman(a: &[f32], b: &[f32]) -> f32 {
    fn ranks(v: &[f32]) -> Vec<f64> {
        let clean: Vec<f32> = v
            .iter()
            .map(|&x| if x.is_finite() { x } else { 0.0 })
            .collect();
        let mut order: Vec<usize> = (0..clean.len()).collect();
        order.sort_by(|&i, &j| clean[i].total_cmp(&clean[j]));
        let mut out = vec![0f64; clean.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && clean[order[j + 1]] == clean[order[i]] {
                j += 1;
            }
            let mean = (i + j) as f64 / 2.0;
            for &k in &order[i..=j] {
                out[k] = mean;
            }
            i = j + 1;
        }
        out
    }
    let n = a.len().min(b.len());
    let (ra, rb) = (ranks(&a[..n]), ranks(&b[..n]));
    let mean = |r: &[f64]| r.iter().sum::<f64>() / n.max(1) as f64;
    let (ma, mb) = (mean(&ra), mean(&rb));
    let (mut cov, mut va, mut vb) = (0f64, 0f64, 0f64);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    match (va > 0.0, vb > 0.0) {
        (true, true) => (cov / (va.sqrt() * vb.sqrt())) as f32,
        (false, false) => 1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::synthetic::{synthetic_session, SyntheticSpec};

    #[test]
    fn spearman_of_rankings() {
        let a = [0.1, 0.4, 0.2, 0.9];
        assert!((spearman(&a, &a) - 1.0).abs() < 1e-6);
        assert!((spearman(&a, &[9.0, 1.0, 5.0, 0.0]) + 1.0).abs() < 1e-6);
        // monotone transforms keep the ranking
        let b: Vec<f32> = a.iter().map(|x| x * x * 10.0 + 3.0).collect();
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-6);
        // ties: [1, 1, 2] ranks (0.5, 0.5, 2) against (0, 1, 2)
        let r = spearman(&[1.0, 1.0, 2.0], &[0.0, 1.0, 2.0]);
        assert!((r - 0.866_025_4).abs() < 1e-5, "{r}");
        assert_eq!(spearman(&[0.0; 4], &[0.0; 4]), 1.0);
        assert_eq!(spearman(&[0.0; 4], &a), 0.0);
        assert_eq!(spearman(&[f32::NAN, 1.0], &[0.0, 1.0]), 1.0);
    }

    #[test]
    fn a_session_against_itself_differs_nowhere() {
        let s = synthetic_session(&SyntheticSpec::tiny());
        let id: MapId = "attention.last.mean".parse().unwrap();
        let c = compare(&s, &s, &[0, 1], &id).unwrap();
        assert!(c.same_image);
        assert_eq!(c.a, c.b);
        assert_eq!(c.maps.len(), 2);
        for m in &c.maps {
            assert!(m.difference.as_ref().unwrap().iter().all(|&d| d == 0.0));
            assert!((m.rank_correlation.unwrap() - 1.0).abs() < 1e-6);
        }
        assert!(c.a.tokens.iter().all(|t| t.attention.is_some()));
    }

    #[test]
    fn another_image_is_shown_side_by_side_only() {
        let s = synthetic_session(&SyntheticSpec::tiny());
        let mut other = s.clone();
        other.pixel_values.data[0] += 1.0;
        if let Some(a) = other.attn_gen.as_mut() {
            a.data.iter_mut().for_each(|x| *x *= 0.5);
        }
        let id: MapId = "attention.last.mean".parse().unwrap();
        let c = compare(&s, &other, &[0], &id).unwrap();
        assert!(!c.same_image);
        assert!(c.maps[0].difference.is_none());
        assert_eq!(c.maps[0].a.len(), c.maps[0].b.len());
        let share = |c: &Side| c.tokens[0].attention.unwrap();
        assert!((share(&c.a) * 0.5 - share(&c.b)).abs() < 1e-5);
    }

    #[test]
    fn a_token_past_an_answer_is_refused() {
        let s = synthetic_session(&SyntheticSpec::tiny());
        let id: MapId = "attention.last.mean".parse().unwrap();
        let e = compare(&s, &s, &[99], &id).unwrap_err();
        assert!(
            e.to_string()
                .contains("token 99 does not exist in session A"),
            "{e}"
        );
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(|w| format!("▁{w}")).collect()
    }

    #[test]
    fn tokens_match_by_text_nearest_the_index_else_by_index() {
        let a = words("The cat is red");
        let b = words("A red cat sits on the mat");
        assert_eq!(matching_token(&a, 1, &b), 2, "cat");
        assert_eq!(matching_token(&a, 3, &b), 1, "red");
        assert_eq!(matching_token(&a, 0, &b), 5, "the, case aside");
        assert_eq!(matching_token(&a, 2, &b), 2, "no 'is' in B: the same index");
        let short = words("Red");
        assert_eq!(matching_token(&a, 2, &short), 0, "clamped");
        assert_eq!(matching_token(&a, 2, &[]), 0);
        let twice = words("red and red");
        assert_eq!(matching_token(&a, 3, &twice), 2, "the nearer of two");
    }
}
