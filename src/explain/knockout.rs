//! Attention knockout: re-run answer token t with the attention from chosen query positions to
//! chosen key positions blocked in a range of decoder layers ([`crate::model::interventions::Knockout`]:
//! those scores are −∞ before the softmax, so each query renormalises over the keys left, as
//! an additive mask in transformers' eager attention does), and compare the token's
//! probability and the greedy token with the plain forward.
//!
//! One forward covers positions `0..=q_t` (`input_ids + output_ids[..t]`, q_t = N − 1 + t),
//! rebuilt by the session's pipeline ([`Replayer`]: LLaVA-style, Qwen2-VL / Qwen2.5-VL,
//! LLaVA-NeXT / OneVision). Key sets: the image (every position of the image span: every
//! region's cells and the anyres newline separators, which after the first layer carry what
//! they read from the cells), the question (the input positions that spell the current turn's
//! prompt, [`question_positions`]), a conversation's earlier turns or earlier answers
//! ([`earlier_positions`], [`earlier_answer_positions`]), chosen patches, or the top k % patches
//! of a catalogue map. Patches and maps count the cells of the request's region (every region's
//! cells in input order when it names none). Query sets: the answer position (default) or the
//! last question token. Δp = p(knocked out) − p(original).

mod replay;
mod sets;

use std::ops::RangeInclusive;

pub use replay::{sequence_ids, Replay, Replayer};
pub use sets::{
    earlier_answer_positions, earlier_positions, parse_layers, question_positions, KeyBlock,
    QuerySet,
};

use candle_core::Tensor;

use crate::explain::attention::AttentionError;
use crate::explain::catalogue::{self, CatalogueError, MapIdError, Need, Options};
use crate::explain::faithfulness::{patch_order, softmax_at};
use crate::explain::relevancy::{self, RelevancyError};
use crate::model::interventions::Knockout;
use crate::model::{Llava, NoTape};
use crate::session::{RegionKind, Session};

/// Why a knockout cannot be run; each is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum KnockoutError {
    /// The session has no answer.
    #[error("the session has no output tokens, so there is nothing to knock out")]
    NoOutput,
    /// An answer token past the answer.
    #[error("output token {token} does not exist (the answer has {count} tokens)")]
    Token {
        /// The requested index.
        token: usize,
        /// Answer tokens.
        count: usize,
    },
    /// A `--block` that names no key set.
    #[error("unknown key set {0:?} (choose image, question, earlier, answers, map:NAME:PCT such as map:relevancy.combined:10, or patches:LIST such as patches:0,1,5-7)")]
    Block(String),
    /// A `--query` that names no query set.
    #[error("unknown query set {0:?} (choose answer or last-question)")]
    Query(String),
    /// A `--layers` that is no range.
    #[error("layers {0:?} are not a range such as 0-3 or 2")]
    LayersSyntax(String),
    /// A layer range outside the model.
    #[error("layers {first}-{last} are outside the model's decoder layers 0-{}", .count.saturating_sub(1))]
    Layers {
        /// First layer asked for.
        first: usize,
        /// Last layer asked for.
        last: usize,
        /// Decoder layers of the model.
        count: usize,
    },
    /// A patch index past the grid.
    #[error("patch {patch} does not exist (the image has {count} patches)")]
    Patch {
        /// The index.
        patch: usize,
        /// Patches of the grid.
        count: usize,
    },
    /// A map percentage outside (0, 100].
    #[error("the map percentage {0} is not in (0, 100]")]
    Percent(f32),
    /// The key set names no position at all.
    #[error("the key set {0:?} is empty")]
    NoKeys(String),
    /// The key set holds no position the queries can see.
    #[error("the key set {0} holds no position the query at {1} can attend to")]
    EmptyKeys(String, usize),
    /// Every key of a query would be blocked.
    #[error("blocking {0} leaves the query at position {1} nothing to attend to")]
    EveryKey(String, usize),
    /// A patch index past the chosen region's cells.
    #[error("patch {patch} does not exist (the {region} region has {count} cells)")]
    RegionPatch {
        /// The index.
        patch: usize,
        /// The region's kind name.
        region: &'static str,
        /// Cells of the region.
        count: usize,
    },
    /// The request names a region the session lacks.
    #[error("the session has no {asked} image region (it has {has})")]
    Region {
        /// The kind asked for.
        asked: &'static str,
        /// The kinds it has, comma-separated (`none` without an image).
        has: String,
    },
    /// The session has no question tokens.
    #[error("the session has no question tokens after the image")]
    NoQuestion,
    /// A conversation key set on a turn without earlier turns.
    #[error("the key set {0} blocks the earlier turns of a conversation, and this turn has none (choose image or question)")]
    NoHistory(String),
    /// The key set names an unknown map.
    #[error(transparent)]
    MapName(#[from] MapIdError),
    /// The map of the key set cannot be given.
    #[error(transparent)]
    Map(#[from] CatalogueError),
    /// The map needed relevancy, which failed.
    #[error(transparent)]
    Relevancy(#[from] RelevancyError),
    /// The session's ids or pixels do not fit the model.
    #[error("the session does not fit the model: {0}")]
    Session(String),
    /// The session's original image cannot be read back, or is not the session's (LLaVA-NeXT
    /// / OneVision sessions are re-read from it).
    #[error("{0}")]
    Image(String),
    /// The model's forward failed.
    #[error("the knockout forward failed: {0}")]
    Model(String),
}

impl From<candle_core::Error> for KnockoutError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(crate::model::error_message(&e))
    }
}

/// What to knock out.
#[derive(Debug, Clone, PartialEq)]
pub struct KnockoutRequest {
    /// The answer token.
    pub token: usize,
    /// The keys blocked.
    pub block: KeyBlock,
    /// The queries blocked.
    pub query: QuerySet,
    /// Decoder layers where the block holds.
    pub layers: RangeInclusive<usize>,
    /// The image region whose cells `patches:LIST` and `map:ID:PCT` count; `None`: every
    /// region's cells in input order (the one region of LLaVA-1.5 and Qwen2-VL sessions).
    pub region: Option<RegionKind>,
}

/// What a knockout changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KnockoutResult {
    /// The answer token.
    pub token: usize,
    /// Its id.
    pub token_id: u32,
    /// Query positions blocked.
    pub queries: Vec<usize>,
    /// Key positions blocked.
    pub keys: Vec<usize>,
    /// First and last decoder layer of the block.
    pub layers: [usize; 2],
    /// p(token) of the plain forward.
    pub p_original: f32,
    /// p(token) with the block.
    pub p_knockout: f32,
    /// p_knockout − p_original.
    pub delta_p: f32,
    /// The plain forward's greedy token id.
    pub greedy_original: u32,
    /// The greedy token id with the block.
    pub greedy_knockout: u32,
}

/// Checks `req` against the session and the model's layer count; returns the token's query
/// position.
fn check(s: &Session, req: &KnockoutRequest, layers: usize) -> Result<usize, KnockoutError> {
    let count = s.num_output();
    if count == 0 {
        return Err(KnockoutError::NoOutput);
    }
    if req.token >= count {
        return Err(KnockoutError::Token {
            token: req.token,
            count,
        });
    }
    if *req.layers.end() >= layers {
        return Err(KnockoutError::Layers {
            first: *req.layers.start(),
            last: *req.layers.end(),
            count: layers,
        });
    }
    Ok(s.query_position(req.token))
}

/// The query positions of `query` for answer token `t`.
pub fn query_positions(
    s: &Session,
    t: usize,
    query: QuerySet,
) -> Result<Vec<usize>, KnockoutError> {
    match query {
        QuerySet::Answer => Ok(vec![s.query_position(t)]),
        QuerySet::LastQuestion => question_positions(s)
            .last()
            .map(|&p| vec![p])
            .ok_or(KnockoutError::NoQuestion),
    }
}

/// The input positions of the cells of `region` (`None`: every region's cells, region by
/// region, each row-major), or why the session has none.
pub fn region_cells(s: &Session, region: Option<RegionKind>) -> Result<Vec<usize>, KnockoutError> {
    let regions = s.regions();
    let cells: Vec<usize> = match region {
        None => regions.iter().flat_map(|r| r.cell_positions()).collect(),
        Some(kind) => match regions.iter().find(|r| r.kind == kind) {
            Some(r) => r.cell_positions(),
            None => {
                let has: Vec<&str> = regions.iter().map(|r| r.kind.name()).collect();
                return Err(KnockoutError::Region {
                    asked: kind.name(),
                    has: if has.is_empty() {
                        "none".into()
                    } else {
                        has.join(", ")
                    },
                });
            }
        },
    };
    if cells.is_empty() {
        let [_, len] = s.manifest.image_span;
        let [rows, cols] = s.manifest.model.image_grid;
        return Err(CatalogueError::from(AttentionError::Grid(len, rows, cols)).into());
    }
    Ok(cells)
}

/// The values of map `ex` over the cells of `region` (`None`: every region's, in input order).
fn region_values(ex: &catalogue::Explanation, region: Option<RegionKind>) -> Vec<f32> {
    match region {
        _ if ex.regions.is_empty() => ex.grid.values.clone(),
        None => ex.cells(),
        Some(kind) => ex
            .regions
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| r.grid.values.clone())
            .unwrap_or_default(),
    }
}

/// The key positions of `block` for answer token `t`, patches and maps counting every
/// region's cells ([`key_positions_in`] with no region).
pub fn key_positions(s: &Session, t: usize, block: &KeyBlock) -> Result<Vec<usize>, KnockoutError> {
    key_positions_in(s, t, block, None)
}

/// The key positions of `block` for answer token `t`, patches and maps counting the cells of
/// `region` (a map's top patches come from the catalogue, which must be able to give the map:
/// see [`prepare`]); `image` and `question` do not depend on it, but a region the session
/// lacks is refused for them too.
pub fn key_positions_in(
    s: &Session,
    t: usize,
    block: &KeyBlock,
    region: Option<RegionKind>,
) -> Result<Vec<usize>, KnockoutError> {
    if region.is_some() {
        // a region the session lacks is named whatever the key set
        region_cells(s, region)?;
    }
    Ok(match block {
        KeyBlock::Image => s.image_range().collect(),
        KeyBlock::Question => question_positions(s),
        KeyBlock::Earlier | KeyBlock::Answers => {
            let keys = match block {
                KeyBlock::Earlier => earlier_positions(s),
                _ => earlier_answer_positions(s),
            };
            if keys.is_empty() {
                return Err(KnockoutError::NoHistory(block.to_string()));
            }
            keys
        }
        KeyBlock::Patches(list) => {
            let cells = region_cells(s, region)?;
            if let Some(&patch) = list.iter().find(|&&i| i >= cells.len()) {
                return Err(match region {
                    Some(kind) if s.regions().len() > 1 => KnockoutError::RegionPatch {
                        patch,
                        region: kind.name(),
                        count: cells.len(),
                    },
                    _ => KnockoutError::Patch {
                        patch,
                        count: cells.len(),
                    },
                });
            }
            list.iter().map(|&i| cells[i]).collect()
        }
        KeyBlock::Map { id, percent } => {
            let cells = region_cells(s, region)?;
            let options = Options {
                seed: None,
                compute_causal: true,
            };
            let map = catalogue::explain_with(s, &[t], id, options)?;
            let values = region_values(&map, region);
            if values.len() != cells.len() {
                return Err(KnockoutError::Session(format!(
                    "the map {id} has {} values for {} cells",
                    values.len(),
                    cells.len()
                )));
            }
            top_patches(&values, *percent)
                .into_iter()
                .map(|i| cells[i])
                .collect()
        }
    })
}

/// The top `percent` % of a map's patches (at least one), ascending: the patches a
/// `map:ID:PCT` key set blocks, the map's highest values first as the deletion curves order
/// them ([`patch_order`]).
pub fn top_patches(values: &[f32], percent: f32) -> Vec<usize> {
    let n = values.len();
    let k = ((percent as f64 / 100.0 * n as f64).ceil() as usize).clamp(1, n.max(1));
    let mut top: Vec<usize> = patch_order(values).into_iter().take(k).collect();
    top.sort_unstable();
    top
}

/// Computes with `model` what the key set's map needs (relevancy rows) and stores it in `s`.
pub fn prepare(
    model: &dyn Replayer,
    s: &mut Session,
    req: &KnockoutRequest,
) -> Result<(), KnockoutError> {
    if let KeyBlock::Map { id, .. } = &req.block {
        if let Need::Relevancy(todo) = catalogue::need(s, &[req.token], id) {
            let todo = relevancy::missing_tokens(s, &todo);
            if !todo.is_empty() {
                let maps = model.relevancy(s, &todo)?;
                relevancy::store(s, &maps)?;
            }
        }
    }
    Ok(())
}

/// Embeddings `[1, q + 1, hidden]` of positions `0..=q_t` of answer token `t` and the ids
/// (LLaVA-style models).
pub(crate) fn sequence(
    model: &Llava,
    s: &Session,
    t: usize,
) -> Result<(Tensor, Vec<u32>), KnockoutError> {
    let (ids, _) = sequence_ids(s, t)?;
    Ok((model.replay(s, t)?.embeds, ids))
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Runs the knockout `req` of session `s` with `model` (what a map key set needs must be in
/// `s` already: [`prepare`]).
#[tracing::instrument(name = "knockout", skip_all, fields(token = req.token))]
pub fn knockout(
    model: &dyn Replayer,
    s: &Session,
    req: &KnockoutRequest,
) -> Result<KnockoutResult, KnockoutError> {
    let q = check(s, req, model.num_layers())?;
    let queries = query_positions(s, req.token, req.query)?;
    let keys = key_positions_in(s, req.token, &req.block, req.region)?;
    for &p in &queries {
        let seen = keys.iter().filter(|&&k| k <= p).count();
        if seen == 0 {
            return Err(KnockoutError::EmptyKeys(req.block.to_string(), p));
        }
        if seen == p + 1 {
            return Err(KnockoutError::EveryKey(req.block.to_string(), p));
        }
    }
    let replay = model.replay(s, req.token)?;
    if replay.len() != q + 1 {
        return Err(KnockoutError::Session(format!(
            "{} positions for the query at {q}",
            replay.len()
        )));
    }
    let target = s.output_ids[req.token] as u32;
    let decoder = model.decoder();
    let plain = replay.last_logits(decoder, &mut NoTape)?;
    let mut tape = Knockout::new(req.layers.clone(), queries.clone(), keys.clone());
    let blocked = replay.last_logits(decoder, &mut tape)?;
    if tape.applied() == 0 {
        return Err(KnockoutError::Model("the block was never applied".into()));
    }
    if target as usize >= plain.len() {
        return Err(KnockoutError::Session(format!(
            "token id {target} is past the vocabulary of {}",
            plain.len()
        )));
    }
    let p_original = softmax_at(&plain, target as usize);
    let p_knockout = softmax_at(&blocked, target as usize);
    if p_knockout.is_nan() {
        // a sliding window had already hidden every key the block left
        return Err(KnockoutError::EveryKey(req.block.to_string(), queries[0]));
    }
    Ok(KnockoutResult {
        token: req.token,
        token_id: target,
        queries,
        keys,
        layers: [*req.layers.start(), *req.layers.end()],
        p_original,
        p_knockout,
        delta_p: p_knockout - p_original,
        greedy_original: argmax(&plain),
        greedy_knockout: argmax(&blocked),
    })
}
