//! Localization heads (issue 16): the attention of a chosen set of decoder heads as one map,
//! and the scores that choose them.
//!
//! `lvlmscope eval --heads` scores every (layer, head) by the pointing game and the mass in
//! the object's mask over the ground-truth scenes and writes the scores as JSON
//! ([`HeadScore`] per head under `"heads"`). The map `attention.heads.l2h1+l2h3` is the mean of
//! the named heads' attention maps; `attention.heads.best` names the [`BEST_HEADS`] best heads
//! of a score file: on the embedded demo the catalogue knows them (the scores of
//! `assets/demo-heads.json`, written by `eval --heads --json`); for other models a presenter
//! resolves `best` from a score file first ([`HeadSel::resolve_with`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{CatalogueError, Explanation};
use crate::explain::attention as attn;
use crate::session::Session;

/// The most heads one map may name.
pub const MAX_HEADS: usize = 8;

/// How many of the best-scored heads `attention.heads.best` averages.
pub const BEST_HEADS: usize = 1;

/// The demo model's head scores (`lvlmscope eval --heads --seed 3 --scenes 100 --json`: scenes
/// the model never saw, and not the seed-2 scenes `eval` scores the maps on).
const DEMO_SCORES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/demo-heads.json"
));

/// A set of 1..=[`MAX_HEADS`] decoder heads `(layer, head)`, spelled `l2h1+l2h3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeadSet {
    len: u8,
    heads: [(u16, u16); MAX_HEADS],
}

/// Why a head set or a score file cannot be read; one sentence each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadsError {
    /// No head, too many, or a number past u16.
    #[error(
        "a head set names 1 to {MAX_HEADS} heads as l{{layer}}h{{head}} joined by '+', got {0:?}"
    )]
    Set(String),
    /// The score file is not what `eval --heads --json` writes.
    #[error("not a head score file of `lvlmscope eval --heads --json`: {0}")]
    File(String),
}

impl HeadSet {
    /// The set of `heads` (layer, head), in the order given, duplicates dropped.
    pub fn new(heads: &[(usize, usize)]) -> Result<HeadSet, HeadsError> {
        let mut out = HeadSet {
            len: 0,
            heads: [(0, 0); MAX_HEADS],
        };
        let err = || HeadsError::Set(spell(heads));
        for &(l, h) in heads {
            let pair = (
                u16::try_from(l).map_err(|_| err())?,
                u16::try_from(h).map_err(|_| err())?,
            );
            if out.heads[..out.len as usize].contains(&pair) {
                continue;
            }
            if out.len as usize == MAX_HEADS {
                return Err(err());
            }
            out.heads[out.len as usize] = pair;
            out.len += 1;
        }
        if out.len == 0 {
            return Err(err());
        }
        Ok(out)
    }

    /// The heads, `(layer, head)`.
    pub fn heads(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.heads[..self.len as usize]
            .iter()
            .map(|&(l, h)| (l as usize, h as usize))
    }

    /// The layer every head lies in, when they share one.
    pub fn layer(&self) -> Option<usize> {
        let mut it = self.heads();
        let (first, _) = it.next()?;
        it.all(|(l, _)| l == first).then_some(first)
    }
}

fn spell(heads: &[(usize, usize)]) -> String {
    heads
        .iter()
        .map(|(l, h)| format!("l{l}h{h}"))
        .collect::<Vec<_>>()
        .join("+")
}

impl fmt::Display for HeadSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spell(&self.heads().collect::<Vec<_>>()))
    }
}

impl FromStr for HeadSet {
    type Err = HeadsError;

    fn from_str(s: &str) -> Result<HeadSet, HeadsError> {
        let err = || HeadsError::Set(s.to_string());
        let heads = s
            .split('+')
            .map(|part| {
                let (l, h) = part.strip_prefix('l')?.split_once('h')?;
                Some((l.parse().ok()?, h.parse().ok()?))
            })
            .collect::<Option<Vec<(usize, usize)>>>()
            .ok_or_else(err)?;
        HeadSet::new(&heads)
    }
}

/// Which heads an `attention.heads.*` map reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadSel {
    /// The best heads of a score file (`attention.heads.best`).
    Best,
    /// These heads (`attention.heads.l2h1+l2h3`).
    Set(HeadSet),
}

impl HeadSel {
    /// The heads this selection reads for session `s`: a set as named; `best` from the
    /// embedded demo's scores when `s` is the demo model's, refused otherwise.
    pub fn resolve(&self, s: &Session) -> Result<HeadSet, CatalogueError> {
        match self {
            HeadSel::Set(set) => Ok(*set),
            HeadSel::Best if is_demo_session(s) => Ok(demo_best()),
            HeadSel::Best => Err(CatalogueError::NoHeadScores),
        }
    }

    /// The selection with `best` replaced by the best heads of `scores`, when given.
    pub fn resolve_with(&self, scores: Option<&[HeadScore]>) -> HeadSel {
        match (self, scores) {
            (HeadSel::Best, Some(scores)) => best_of(scores).map_or(*self, HeadSel::Set),
            _ => *self,
        }
    }
}

/// One head's localization score over the scenes of `eval --heads`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadScore {
    /// Decoder layer.
    pub layer: usize,
    /// Head.
    pub head: usize,
    /// Share of scenes where the head's map points at the asked-about object.
    pub pointing: f32,
    /// Mean share of the head's image attention on the object.
    pub mass_in_mask: f32,
    /// Share of scenes where the head's highest patch is at least a quarter covered by the
    /// object (`eval::metrics::pointing_overlap`).
    #[serde(default)]
    pub pointing_overlap: f32,
    /// Share of scenes where the head's maximum point lies within Zhang et al.'s 15-pixel
    /// tolerance of the object, scaled to the image (`eval::metrics::pointing_tolerance`).
    #[serde(default)]
    pub pointing_tolerance: f32,
}

/// `scores` best first: pointing, then mass in mask, then layer and head (ascending).
pub fn ranked(scores: &[HeadScore]) -> Vec<HeadScore> {
    let mut out = scores.to_vec();
    out.sort_by(|a, b| {
        b.pointing
            .total_cmp(&a.pointing)
            .then(b.mass_in_mask.total_cmp(&a.mass_in_mask))
            .then((a.layer, a.head).cmp(&(b.layer, b.head)))
    });
    out
}

/// The [`BEST_HEADS`] best heads of `scores` (`None` when there are none).
pub fn best_of(scores: &[HeadScore]) -> Option<HeadSet> {
    let best: Vec<(usize, usize)> = ranked(scores)
        .iter()
        .take(BEST_HEADS)
        .map(|s| (s.layer, s.head))
        .collect();
    HeadSet::new(&best).ok()
}

#[derive(Deserialize)]
struct ScoreFile {
    heads: Vec<HeadScore>,
}

/// The head scores of a file written by `eval --heads --json`.
pub fn read_scores(text: &str) -> Result<Vec<HeadScore>, HeadsError> {
    let file: ScoreFile =
        serde_json::from_str(text).map_err(|e| HeadsError::File(e.to_string()))?;
    if file.heads.is_empty() {
        return Err(HeadsError::File("it scores no head".into()));
    }
    Ok(file.heads)
}

/// The embedded demo model's head scores.
pub fn demo_scores() -> Vec<HeadScore> {
    read_scores(DEMO_SCORES).unwrap_or_default()
}

fn demo_best() -> HeadSet {
    best_of(&demo_scores()).unwrap_or(HeadSet {
        len: 1,
        heads: [(0, 0); MAX_HEADS],
    })
}

/// Whether `s` was made by the embedded demo model ([`is_demo_model`]).
pub fn is_demo_session(s: &Session) -> bool {
    is_demo_model(&s.manifest.model.path)
}

/// Whether the model folder `path` is the embedded demo model's: its cache folder
/// `demo-<content hash>` or the source tree's `assets/demo-model`.
pub fn is_demo_model(path: &str) -> bool {
    let path = std::path::Path::new(path);
    let folder = format!("demo-{}", crate::demo::demo_model_hash());
    let named = path
        .file_name()
        .is_some_and(|name| name.to_string_lossy() == folder);
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-model");
    named || path == assets
}

/// The mean of the image maps (and text rows) of the heads of `set` for `tokens`.
pub(super) fn heads_map(
    s: &Session,
    tokens: &[usize],
    set: HeadSet,
    blank: Explanation,
) -> Result<Explanation, CatalogueError> {
    let mut out = blank;
    let image = s.image_range();
    let upto = tokens
        .iter()
        .map(|&t| s.query_position(t) + 1)
        .max()
        .unwrap_or(0);
    let n = (tokens.len() * set.len as usize) as f32;
    let cells = super::compute::cells(s)?;
    let mut values = vec![0f32; cells.len()];
    let mut text = BTreeMap::new();
    let turn = super::parts::TurnParts::of(s);
    let mut parts = super::parts::PartSums::default();
    for &t in tokens {
        for (l, h) in set.heads() {
            let row = attn::attention_row(s, t, l, h)?;
            let sums = super::parts::attention_part_sums(&turn, row, s.query_position(t));
            parts.add_scaled(&sums, 1.0 / n);
            for (o, &p) in values.iter_mut().zip(&cells) {
                *o += row.get(p).copied().unwrap_or(0.0) / n;
            }
            for (p, v) in row.iter().enumerate().take(upto) {
                if !image.contains(&p) {
                    *text.entry(p).or_insert(0.0) += v / n;
                }
            }
        }
    }
    super::compute::set_values(&mut out, s, values);
    out.text = text;
    out.parts = Some(parts);
    out.layer = set.layer();
    out.head = match set.len {
        1 => set.heads().next().map(|(_, h)| h),
        _ => None,
    };
    out.title = format!(
        "attention of heads {set} · {}",
        super::compute::tokens_label(tokens)
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_sets_round_trip_and_refuse_nonsense() {
        let set: HeadSet = "l2h1+l0h3".parse().unwrap();
        assert_eq!(set.to_string(), "l2h1+l0h3");
        assert_eq!(set.heads().collect::<Vec<_>>(), vec![(2, 1), (0, 3)]);
        assert_eq!(set.layer(), None);
        assert_eq!("l2h1+l2h1".parse::<HeadSet>().unwrap().to_string(), "l2h1");
        assert_eq!("l2h1+l2h3".parse::<HeadSet>().unwrap().layer(), Some(2));
        for bad in [
            "",
            "l2",
            "h1",
            "l2h",
            "2h1",
            "l2h1+",
            "l1h0+l1h1+l1h2+l1h3+l2h0+l2h1+l2h2+l2h3+l3h0",
        ] {
            let e = bad.parse::<HeadSet>().unwrap_err();
            assert!(e.to_string().contains("1 to 8 heads"), "{bad}: {e}");
        }
    }

    #[test]
    fn best_heads_rank_pointing_then_mass() {
        let score = |layer, head, pointing, mass_in_mask| HeadScore {
            layer,
            head,
            pointing,
            mass_in_mask,
            pointing_overlap: pointing,
            pointing_tolerance: pointing,
        };
        let scores = [
            score(0, 0, 0.5, 0.9),
            score(2, 1, 0.9, 0.4),
            score(2, 3, 0.9, 0.6),
            score(1, 0, 0.1, 0.1),
        ];
        let r = ranked(&scores);
        assert_eq!((r[0].layer, r[0].head), (2, 3));
        assert_eq!((r[1].layer, r[1].head), (2, 1));
        assert_eq!(best_of(&scores).unwrap().to_string(), "l2h3");
        assert_eq!(best_of(&[]), None);
        let sel = HeadSel::Best.resolve_with(Some(&scores));
        assert_eq!(sel, HeadSel::Set("l2h3".parse().unwrap()));
    }

    #[test]
    fn score_files_are_checked() {
        assert!(read_scores("{}").is_err());
        assert!(read_scores(r#"{"heads": []}"#).is_err());
        let ok = read_scores(
            r#"{"heads": [{"layer": 1, "head": 2, "pointing": 1.0, "mass_in_mask": 0.5}]}"#,
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert!(!demo_scores().is_empty(), "the embedded demo scores parse");
    }
}
