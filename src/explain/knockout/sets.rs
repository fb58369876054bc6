//! The key and query sets of a knockout and their command-line spellings.

use std::ops::RangeInclusive;
use std::str::FromStr;

use super::KnockoutError;
use crate::explain::attention::question_range;
use crate::explain::catalogue::MapId;
use crate::session::Session;

/// The key positions to block.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyBlock {
    /// Every image feature position.
    Image,
    /// The question's positions ([`question_positions`]).
    Question,
    /// The top `percent` % patches of a catalogue map of the same token.
    Map {
        /// The map.
        id: MapId,
        /// Share of the patches, in (0, 100].
        percent: f32,
    },
    /// Patches by index in the grid (row-major).
    Patches(Vec<usize>),
    /// A conversation's earlier turns after the image: their questions and answers
    /// ([`earlier_positions`]).
    Earlier,
    /// A conversation's earlier answers ([`earlier_answer_positions`]).
    Answers,
}

impl std::fmt::Display for KeyBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyBlock::Image => write!(f, "image"),
            KeyBlock::Question => write!(f, "question"),
            KeyBlock::Map { id, percent } => write!(f, "map:{id}:{percent}"),
            KeyBlock::Patches(p) => {
                let list: Vec<String> = p.iter().map(|i| i.to_string()).collect();
                write!(f, "patches:{}", list.join(","))
            }
            KeyBlock::Earlier => write!(f, "earlier"),
            KeyBlock::Answers => write!(f, "answers"),
        }
    }
}

/// More patches than any image grid holds: a range reaching past this cannot be valid, so only
/// its end is kept (the grid check then names it) instead of billions of indices.
const MAX_PATCHES: usize = 1 << 20;

fn parse_patches(list: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b {
                    return None;
                }
                if b >= MAX_PATCHES {
                    out.push(b);
                } else {
                    out.extend(a..=b);
                }
            }
            None => out.push(part.parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

impl FromStr for KeyBlock {
    type Err = KnockoutError;

    fn from_str(s: &str) -> Result<Self, KnockoutError> {
        let err = || KnockoutError::Block(s.to_string());
        let s = s.trim();
        match s {
            "image" => return Ok(KeyBlock::Image),
            "question" => return Ok(KeyBlock::Question),
            "earlier" => return Ok(KeyBlock::Earlier),
            "answers" => return Ok(KeyBlock::Answers),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("patches:") {
            if rest.trim().is_empty() {
                return Err(KnockoutError::NoKeys(s.to_string()));
            }
            return parse_patches(rest).map(KeyBlock::Patches).ok_or_else(err);
        }
        if let Some(rest) = s.strip_prefix("map:") {
            let (name, pct) = rest.rsplit_once(':').ok_or_else(err)?;
            let id: MapId = name.parse()?;
            let percent: f32 = pct.trim_end_matches('%').parse().map_err(|_| err())?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(KnockoutError::Percent(percent));
            }
            return Ok(KeyBlock::Map { id, percent });
        }
        Err(err())
    }
}

/// The query positions whose attention is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuerySet {
    /// The position that produced the answer token (N − 1 + t).
    #[default]
    Answer,
    /// The last question token ([`question_positions`]).
    LastQuestion,
}

impl FromStr for QuerySet {
    type Err = KnockoutError;

    fn from_str(s: &str) -> Result<Self, KnockoutError> {
        match s.trim() {
            "answer" => Ok(QuerySet::Answer),
            "last-question" => Ok(QuerySet::LastQuestion),
            other => Err(KnockoutError::Query(other.to_string())),
        }
    }
}

impl std::fmt::Display for QuerySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuerySet::Answer => "answer",
            QuerySet::LastQuestion => "last-question",
        })
    }
}

/// Parses `A-B` (inclusive) or `A` into a layer range (checked against a model later).
pub fn parse_layers(s: &str) -> Result<RangeInclusive<usize>, KnockoutError> {
    let err = || KnockoutError::LayersSyntax(s.to_string());
    let (a, b) = match s.trim().split_once('-') {
        Some((a, b)) => (
            a.trim().parse().map_err(|_| err())?,
            b.trim().parse().map_err(|_| err())?,
        ),
        None => {
            let a = s.trim().parse().map_err(|_| err())?;
            (a, a)
        }
    };
    if a > b {
        return Err(err());
    }
    Ok(a..=b)
}

/// The input positions that spell the user's prompt: the tokens after the image whose
/// characters (word markers `▁`/`Ġ` read as spaces, whitespace ignored) cover the prompt's
/// characters at their first occurrence. When the prompt cannot be found (a template that
/// rewrites it), the positions after the image up to the last input token, that token (the
/// template's tail) left out.
pub fn question_positions(s: &Session) -> Vec<usize> {
    let range = question_range(s);
    let mut chars: Vec<(char, usize)> = Vec::new();
    for p in range.clone() {
        let piece = s.token_at(p);
        if piece.starts_with('<') && piece.ends_with('>') {
            continue;
        }
        chars.extend(
            piece
                .chars()
                .filter(|c| !c.is_whitespace() && !matches!(c, '▁' | 'Ġ' | 'Ċ'))
                .map(|c| (c, p)),
        );
    }
    let want: Vec<char> = s
        .manifest
        .prompt
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if !want.is_empty() && want.len() <= chars.len() {
        for start in 0..=chars.len() - want.len() {
            if chars[start..start + want.len()]
                .iter()
                .zip(&want)
                .all(|((c, _), w)| c == w)
            {
                let mut out: Vec<usize> = chars[start..start + want.len()]
                    .iter()
                    .map(|&(_, p)| p)
                    .collect();
                out.dedup();
                return out;
            }
        }
    }
    let end = range.end.saturating_sub(1).max(range.start);
    (range.start..end).collect()
}

/// The positions of a conversation's earlier turns in the current turn's input: from the
/// image's end to where this turn's question starts (the earlier questions, the earlier
/// answers and the template between them; the template before the image, BOS and system
/// prompt, is left out). Empty in a conversation's first turn and a session without turns.
pub fn earlier_positions(s: &Session) -> Vec<usize> {
    let start = s.current_turn().map_or(0, |t| t.question_start);
    let image = s.image_range();
    (image.end..start).filter(|p| !image.contains(p)).collect()
}

/// The positions of a conversation's earlier answers in the current turn's input (each as the
/// chat template spells it again). Empty without earlier turns.
pub fn earlier_answer_positions(s: &Session) -> Vec<usize> {
    s.current_turn().map_or_else(Vec::new, |t| {
        t.earlier_answers
            .iter()
            .flat_map(|&[start, len]| start..start + len)
            .collect()
    })
}
