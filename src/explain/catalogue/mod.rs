//! The explanation catalogue: every map lvlmscope shows, named by one typed [`MapId`], and the
//! one function, [`explain`], that turns a session, the explained answer tokens and a map id
//! into the map over the image regions (one grid of cells each, with the rectangle of the
//! image it covers) and the text positions, with its title. The app, `report`,
//! `eval` and the faithfulness block all call it, so one id always gives the same numbers
//! (docs/design.md, "The catalogue").
//!
//! Several tokens give the mean of their maps. A map that needs a result the session lacks
//! (relevancy rows, a causal result) is an error that says so; [`need`] tells a caller what to
//! compute first (relevancy with the model, on the job worker; causal from `attn.full`), and
//! [`Options::compute_causal`] lets a caller without a worker compute causal results inline.

mod compute;
pub mod heads;
mod id;
mod lens;
pub mod parts;
mod vision;

use std::collections::BTreeMap;

use crate::explain::attention::{AttentionError, Grid};
use crate::explain::causal::CausalUnavailable;
use crate::session::{CausalToken, RegionKind, Session};

pub use heads::{HeadScore, HeadSel, HeadSet};
pub use id::{CausalHeads, Family, Layers, MapId, MapIdError, RelevancySource};
pub use parts::{attention_part_sums, part_sums, value_part_sums, PartSums, TextPart, TurnParts};

/// One map of the catalogue for some answer tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The map's id.
    pub id: MapId,
    /// The explained answer tokens (the map is the mean of theirs).
    pub tokens: Vec<usize>,
    /// What the map is, for titles (`attention · layer 3 · mean of heads · token 0`).
    pub title: String,
    /// The map over the first image region's grid (the whole image map when the session has
    /// one region, as LLaVA-1.5 and Qwen2-VL sessions do).
    pub grid: Grid,
    /// The map over every image region, in input order: cells only, separators excluded.
    pub regions: Vec<RegionMap>,
    /// Values over text positions (absolute positions outside the image span, up to the last
    /// explained token's query position); empty for maps without a text part.
    pub text: BTreeMap<usize, f32>,
    /// The decoder layer the map reads (attention of one layer, causal).
    pub layer: Option<usize>,
    /// The head the map reads, when it reads one.
    pub head: Option<usize>,
    /// The causal result of the first explained token (causal maps).
    pub causal: Option<CausalToken>,
    /// The map's row over the parts of the turn (image, this question, earlier questions and
    /// answers, this answer so far), raw sums, mean over the tokens: every attention map's
    /// whole row (the query's own position in its part), relevancy's decoder rows as prepared
    /// (positions before the query), causal's own values; `None` for maps without a text
    /// part (random, lens, relevancy without the decoder's table). Views show
    /// [`PartSums::shares`].
    pub parts: Option<PartSums>,
}

/// A map over one image region: its rows × cols grid of cell values and the rectangle of the
/// original image it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionMap {
    /// Which view of the image the region is.
    pub kind: RegionKind,
    /// `[x0, y0, x1, y1]` of the original image the grid covers.
    pub rect: [f64; 4],
    /// The values, one per cell, row-major.
    pub grid: Grid,
}

impl RegionMap {
    /// Width / height of the rectangle the region covers (its true aspect ratio).
    pub fn aspect(&self) -> f64 {
        let [x0, y0, x1, y1] = self.rect;
        let (w, h) = (x1 - x0, y1 - y0);
        if w > 0.0 && h > 0.0 {
            w / h
        } else {
            1.0
        }
    }
}

impl Explanation {
    /// Every region's values concatenated in input order (one per cell of the session, the
    /// order of [`Session::cell_positions`]): what faithfulness and `eval` score.
    pub fn cells(&self) -> Vec<f32> {
        self.regions
            .iter()
            .flat_map(|r| r.grid.values.iter().copied())
            .collect()
    }
}

/// Why a map cannot be given; each is one sentence.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogueError {
    /// No answer token was asked for.
    #[error("no output token is selected")]
    NoTokens,
    /// An answer token past the answer.
    #[error("output token {0} does not exist (the answer has {1} tokens)")]
    Token(usize, usize),
    /// The attention views failed.
    #[error(transparent)]
    Attention(#[from] AttentionError),
    /// The session holds no relevancy rows for the token.
    #[error("no relevancy for token {0} in this session")]
    NoRelevancy(usize),
    /// The session lacks the relevancy table.
    #[error("no {0} in this session")]
    NoTable(&'static str),
    /// The relevancy table's rows do not fit the image.
    #[error("{name} has {width} columns, fewer than the image needs ({needed})")]
    TableWidth {
        /// The table.
        name: &'static str,
        /// Its columns.
        width: usize,
        /// Columns the image needs.
        needed: usize,
    },
    /// The session holds no causal result for the token (and none was to be computed).
    #[error("no causal explanation for token {0} in this session")]
    NoCausal(usize),
    /// `attention.heads.best` on a model whose head scores are not known.
    #[error("the best localization heads of this model are not known: score them with `lvlmscope eval --heads --json FILE --model M` and pass the file with --heads FILE, or name the heads (attention.heads.l2h1+l2h3)")]
    NoHeadScores,
    /// The session caches no logit lens of the token at the layer.
    #[error("no logit lens for token {token} at layer {layer} in this session: compute it with `lvlmscope report FILE --method lens --token {token} --layer {layer} --cache`")]
    NoLens {
        /// The answer token.
        token: usize,
        /// The layer.
        layer: usize,
    },
    /// No causal result can be had.
    #[error(transparent)]
    Causal(#[from] CausalUnavailable),
    /// The session stores no vision-tower attention.
    #[error("this session holds no vision-tower attention (attn.vit); LLaVA-NeXT and OneVision runs record it")]
    NoVisionAttention,
    /// A vision layer the session did not record.
    #[error("vision layer {0} was not recorded (the session holds {1} vision layers)")]
    VisionLayer(usize, usize),
    /// A head past the vision tower's.
    #[error("vision head {0} does not exist (the tower has {1} heads)")]
    VisionHead(usize, usize),
    /// Vision attention that does not fit the image's cells.
    #[error("the vision attention of shape {0:?} does not fit the image's {1} cells")]
    VisionCells(Vec<usize>, usize),
}

/// How [`explain_with`] may obtain what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// The seed of the random map (default: the first explained token).
    pub seed: Option<u64>,
    /// Compute a missing causal result from `attn.full` with the session's (or the default)
    /// parameters, instead of refusing.
    pub compute_causal: bool,
}

/// What must be computed before a map can be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: [`explain`] answers from the session.
    Ready,
    /// The relevancy rows of these tokens (computed with the session's model).
    Relevancy(Vec<usize>),
    /// The causal results of these tokens (computed from `attn.full`).
    Causal(Vec<usize>),
    /// The logit lens of these tokens at a layer (computed with the session's model).
    Lens {
        /// The tokens.
        tokens: Vec<usize>,
        /// The layer.
        layer: usize,
    },
}

/// What must be computed before `id` can be given for `tokens` from `s`.
pub fn need(s: &Session, tokens: &[usize], id: &MapId) -> Need {
    match id.family() {
        Family::Relevancy => {
            let todo = crate::explain::relevancy::missing_tokens(s, tokens);
            if todo.is_empty() {
                Need::Ready
            } else {
                Need::Relevancy(todo)
            }
        }
        Family::Causal => {
            let todo: Vec<usize> = tokens
                .iter()
                .copied()
                .filter(|&t| crate::explain::causal::stored_token(s, t).is_none())
                .collect();
            if todo.is_empty() {
                Need::Ready
            } else {
                Need::Causal(todo)
            }
        }
        Family::Lens => match id {
            MapId::Lens(layer) => {
                let todo = lens::missing(s, tokens, *layer);
                if todo.is_empty() {
                    Need::Ready
                } else {
                    Need::Lens {
                        tokens: todo,
                        layer: *layer,
                    }
                }
            }
            _ => Need::Ready,
        },
        Family::Attention | Family::Random => Need::Ready,
    }
}

/// The map `id` of `tokens` from what `s` holds (the random map seeded with the first token).
pub fn explain(s: &Session, tokens: &[usize], id: &MapId) -> Result<Explanation, CatalogueError> {
    explain_with(s, tokens, id, Options::default())
}

/// [`explain`] with options: the random map's seed, and whether to compute a missing causal
/// result.
pub fn explain_with(
    s: &Session,
    tokens: &[usize],
    id: &MapId,
    options: Options,
) -> Result<Explanation, CatalogueError> {
    let Some(&first) = tokens.first() else {
        return Err(CatalogueError::NoTokens);
    };
    if let Some(&t) = tokens.iter().find(|&&t| t >= s.num_output()) {
        return Err(CatalogueError::Token(t, s.num_output()));
    }
    let seed = options.seed.unwrap_or(first as u64);
    compute::explain(s, tokens, id, options.compute_causal, seed)
}

/// Whether `s` holds what map `id` needs for answer token `t`.
pub fn available(s: &Session, t: usize, id: &MapId) -> bool {
    match id {
        MapId::Attention { .. } => s.attn_gen.is_some(),
        MapId::Heads(sel) => s.attn_gen.is_some() && sel.resolve(s).is_ok(),
        MapId::Relevancy { source, .. } => {
            compute::table(s, *source).is_some() && s.manifest.relevancy_tokens.contains(&t)
        }
        MapId::Causal(_) => crate::explain::causal::stored_token(s, t).is_some(),
        MapId::Random => true,
        MapId::Lens(layer) => crate::explain::lens::cached(s, t, *layer).is_some(),
        MapId::Vision { .. } => s.attn_vit.is_some(),
    }
}

/// The maps of answer token `t` a comparison holds (the faithfulness block, `eval`): the maps
/// of `shown` that are not standard (attention ones first, the others just before the random
/// baseline), and every [`MapId::STANDARD`] map the session can give for the token; the random
/// map, seeded with `seed`, is always there.
pub fn compared_maps(
    s: &Session,
    t: usize,
    shown: &[MapId],
    seed: u64,
) -> Result<Vec<(MapId, Vec<f32>)>, CatalogueError> {
    let extra = |attention: bool| {
        shown.iter().copied().filter(move |id| {
            !id.is_standard()
                && (id.family() == Family::Attention) == attention
                && available(s, t, id)
        })
    };
    let mut ids: Vec<MapId> = Vec::new();
    for id in extra(true) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for id in MapId::STANDARD {
        if id == MapId::Random {
            for x in extra(false) {
                if !ids.contains(&x) {
                    ids.push(x);
                }
            }
        }
        if available(s, t, &id) {
            ids.push(id);
        }
    }
    let options = Options {
        seed: Some(seed),
        compute_causal: false,
    };
    ids.into_iter()
        .map(|id| explain_with(s, &[t], &id, options).map(|e| (id, e.cells())))
        .collect()
}

#[cfg(test)]
mod tests;
