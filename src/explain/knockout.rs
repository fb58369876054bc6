//! Attention knockout: re-run answer token t with the attention from chosen query positions to
//! chosen key positions blocked in a range of decoder layers ([`crate::model::interventions::Knockout`]:
//! those scores are −∞ before the softmax, so each query renormalises over the keys left, as
//! an additive mask in transformers' eager attention does), and compare the token's
//! probability and the greedy token with the plain forward.
//!
//! One forward covers positions `0..=q_t` (`input_ids + output_ids[..t]`, q_t = N − 1 + t);
//! the image features come from the session's pixel values. Key sets: the image features, the
//! question (the input positions that spell the current turn's prompt, [`question_positions`]),
//! a conversation's earlier turns or earlier answers ([`earlier_positions`],
//! [`earlier_answer_positions`]), chosen patches, or the top k % patches of a catalogue map. Query sets: the answer position
//! (default) or the last question token. Δp = p(knocked out) − p(original).

mod sets;

use std::ops::RangeInclusive;

pub use sets::{
    earlier_answer_positions, earlier_positions, parse_layers, question_positions, KeyBlock,
    QuerySet,
};

use candle_core::{Device, Tensor};

use crate::explain::attention::patch_positions;
use crate::explain::catalogue::{self, CatalogueError, MapIdError, Need, Options};
use crate::explain::faithfulness::{patch_order, softmax_at};
use crate::explain::relevancy::{self, RelevancyError};
use crate::model::interventions::Knockout;
use crate::model::tape::Tape;
use crate::model::{Llava, NoTape};
use crate::session::Session;

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

/// The key positions of `block` for answer token `t` (a map's top patches come from the
/// catalogue, which must be able to give the map: see [`prepare`]).
pub fn key_positions(s: &Session, t: usize, block: &KeyBlock) -> Result<Vec<usize>, KnockoutError> {
    let patches = patch_positions(s).map_err(CatalogueError::from)?;
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
            if let Some(&patch) = list.iter().find(|&&i| i >= patches.len()) {
                return Err(KnockoutError::Patch {
                    patch,
                    count: patches.len(),
                });
            }
            list.iter().map(|&i| patches.start + i).collect()
        }
        KeyBlock::Map { id, percent } => {
            let options = Options {
                seed: None,
                compute_causal: true,
            };
            let map = catalogue::explain_with(s, &[t], id, options)?;
            top_patches(&map.grid.values, *percent)
                .into_iter()
                .map(|i| patches.start + i)
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
pub fn prepare(model: &Llava, s: &mut Session, req: &KnockoutRequest) -> Result<(), KnockoutError> {
    if let KeyBlock::Map { id, .. } = &req.block {
        if let Need::Relevancy(todo) = catalogue::need(s, &[req.token], id) {
            relevancy::ensure(model, s, &todo, &mut |_| {})?;
        }
    }
    Ok(())
}

/// Embeddings `[1, q + 1, hidden]` of positions `0..=q_t` of answer token `t` and the ids.
pub(crate) fn sequence(
    model: &Llava,
    s: &Session,
    t: usize,
) -> Result<(Tensor, Vec<u32>), KnockoutError> {
    let to_u32 = |ids: &[i64]| -> Result<Vec<u32>, KnockoutError> {
        ids.iter()
            .map(|&i| u32::try_from(i).map_err(|_| KnockoutError::Session(format!("token id {i}"))))
            .collect()
    };
    let mut ids = to_u32(&s.input_ids)?;
    let n_input = ids.len();
    ids.extend(to_u32(&s.output_ids[..t])?);
    let px = &s.pixel_values;
    if px.shape.len() != 3 || px.shape[0] != 3 {
        return Err(KnockoutError::Session(format!(
            "pixel values of shape {:?}, expected [3, h, w]",
            px.shape
        )));
    }
    let pixels = Tensor::from_vec(px.data.clone(), px.shape.as_slice(), &Device::Cpu)?;
    let features = model.image_features(&pixels, &mut NoTape)?;
    let embeds = model.embed_sequence(&ids, n_input, Some(&features))?;
    Ok((embeds, ids))
}

fn last_logits(
    model: &Llava,
    embeds: &Tensor,
    tape: &mut dyn Tape,
) -> Result<Vec<f32>, KnockoutError> {
    let mut cache = model.new_cache();
    Ok(model
        .forward(embeds, 0, &mut cache, tape, false)?
        .flatten_all()?
        .to_vec1()?)
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
pub fn knockout(
    model: &Llava,
    s: &Session,
    req: &KnockoutRequest,
) -> Result<KnockoutResult, KnockoutError> {
    let q = check(s, req, model.num_layers())?;
    let queries = query_positions(s, req.token, req.query)?;
    let keys = key_positions(s, req.token, &req.block)?;
    for &p in &queries {
        let seen = keys.iter().filter(|&&k| k <= p).count();
        if seen == 0 {
            return Err(KnockoutError::EmptyKeys(req.block.to_string(), p));
        }
        if seen == p + 1 {
            return Err(KnockoutError::EveryKey(req.block.to_string(), p));
        }
    }
    let (embeds, ids) = sequence(model, s, req.token)?;
    if ids.len() != q + 1 {
        return Err(KnockoutError::Session(format!(
            "{} positions for the query at {q}",
            ids.len()
        )));
    }
    let target = s.output_ids[req.token] as u32;
    let plain = last_logits(model, &embeds, &mut NoTape)?;
    let mut tape = Knockout::new(req.layers.clone(), queries.clone(), keys.clone());
    let blocked = last_logits(model, &embeds, &mut tape)?;
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
