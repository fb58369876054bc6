//! Chefer relevancy maps (decoder, vision tower, combined), computed on demand per output token
//! and cached in the session.
//!
//! Definitions (Chefer et al., ICCV 2021, rules 5 and 6, as LVLM-Interpret applies them to
//! LLaVA). One forward pass over the S = N + T − 1 positions `input_ids + output_ids[..T−1]`
//! keeps every attention probability `A_l` `[H, S, S]`; for output token t, `y` is the logit of
//! `output_ids[t]` at position `q = N − 1 + t` (causal masking makes it depend on positions
//! ≤ q only, so one forward serves every token), and for each layer
//! `Ā_l = mean_heads(clamp(∂y/∂A_l ⊙ A_l, min = 0))`.
//!
//! - **`relevancy.llm[t]`** `[S]`: row q of `R = (I + Ā_L) ⋯ (I + Ā_1)` (that is, `R = I`,
//!   then `R ← R + Ā_l R` for l = 1..L), computed as the vector–matrix chain
//!   `e_qᵀ (I + Ā_L) ⋯ (I + Ā_1)` from the last layer down: O(L·S²) per token.
//! - **`relevancy.vit[t]`** `[P]`: the same rules over the vision layers that feed the
//!   projector (LLaVA: all but the last; hidden state k is the output of layer k − 1, and the
//!   layers 0..k−1 below the deepest feature layer k run), with the gradients of the same `y`:
//!   `R_v = (I + Ā_v,k) ⋯ (I + Ā_v,1)` over the P + 1 vision tokens (CLS first); the stored row
//!   is the CLS row without its CLS column, `R_v[0, 1..]`.
//! - **`relevancy.combined[t]`** `[P]`: the decoder's relevancy of the image features carried
//!   through the vision tower to the image patches:
//!   `combined[t] = (u R_v)[1..]`, `u = Σ_j llm[t][p_j] e_{v(j)}`, where `p_j` is the input
//!   position of image feature j and `v(j)` the vision token it is computed from (strategy
//!   `default`: patch j, i.e. token j + 1; `full`: token j, so the CLS feature's relevancy goes
//!   through the CLS row). With the `default` strategy this is
//!   `combined[t] = llm[t][image span] · R_v[1.., 1..]`, the patch-to-patch block of the vision
//!   relevancy matrix. It is the chain rule of relevancy: a patch is relevant as much as the
//!   image features it contributes to are. (LVLM-Interpret's "all" map is a different
//!   product, `R_v[0, 1..] · R[image, image]`, the decoder's image-to-image block; its
//!   first-token decoder row coincides with ours.)
//!
//! LVLM-Interpret reuses, for the rows of earlier positions, the gradients of earlier steps;
//! here every token's relevancy is exact.

pub mod math;
pub mod memory;
pub mod views;

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::model::tracked::TrackedPass;
use crate::model::Llava;
use crate::session::{Array, Session};

pub use memory::{estimate_tracked_bytes, MemoryPlan};

/// Why relevancy could not be computed or stored.
#[derive(Debug, thiserror::Error)]
pub enum RelevancyError {
    /// The session has no generated token.
    #[error("the session has no output tokens, so there is no relevancy to compute")]
    NoOutput,
    /// A requested output token does not exist.
    #[error("output token {token} does not exist (the session has {count})")]
    TokenOutOfRange {
        /// The requested index.
        token: usize,
        /// Number of output tokens.
        count: usize,
    },
    /// A token id in the session is negative or too large.
    #[error("the session holds token id {0}, which no model vocabulary can have")]
    BadId(i64),
    /// The session's pixel values are not `[3, h, w]`.
    #[error("the session's pixel values have shape {0:?}, expected [3, h, w]")]
    PixelShape(Vec<usize>),
    /// The tracked pass would not fit in memory.
    #[error("relevancy needs about {needed} of memory for {positions} positions but only {available} is available")]
    OutOfMemory {
        /// Estimated need, human readable.
        needed: String,
        /// What the system reports available, human readable.
        available: String,
        /// Sequence length S.
        positions: usize,
    },
    /// The model's forward or backward failed.
    #[error("the gradient pass failed: {0}")]
    Model(String),
    /// Maps whose sizes do not fit the session.
    #[error("relevancy rows do not fit the session: {0}")]
    Shape(String),
}

impl From<candle_core::Error> for RelevancyError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(crate::model::error_message(&e))
    }
}

/// Relevancy rows of some output tokens.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RelevancyMaps {
    /// Output token indices, in the order computed (sorted, unique).
    pub tokens: Vec<usize>,
    /// `relevancy.llm` rows `[S]`, one per token.
    pub llm: Vec<Vec<f32>>,
    /// `relevancy.vit` rows `[P]`.
    pub vit: Vec<Vec<f32>>,
    /// `relevancy.combined` rows `[P]`.
    pub combined: Vec<Vec<f32>>,
    /// Wall-clock seconds of the computation.
    pub seconds: f64,
}

/// Options of [`relevancy_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct RelevancyOptions {
    /// Most output tokens carried by one backward.
    pub max_chunk: usize,
    /// Bytes the pass may use; `None`: `MemAvailable` on CPU, 4 GiB on a GPU (not checked).
    pub memory_budget: Option<u64>,
}

impl Default for RelevancyOptions {
    fn default() -> Self {
        Self {
            max_chunk: 8,
            memory_budget: None,
        }
    }
}

/// Relevancy of output tokens `tokens` of `session` (duplicates ignored), with default options.
/// `on_progress(done)` is called with the number of tokens finished.
pub fn relevancy(
    model: &Llava,
    session: &Session,
    tokens: &[usize],
    on_progress: &mut dyn FnMut(usize),
) -> Result<RelevancyMaps, RelevancyError> {
    relevancy_with(
        model,
        session,
        tokens,
        &RelevancyOptions::default(),
        on_progress,
    )
}

fn ids_u32(ids: &[i64]) -> Result<Vec<u32>, RelevancyError> {
    ids.iter()
        .map(|&i| u32::try_from(i).map_err(|_| RelevancyError::BadId(i)))
        .collect()
}

/// [`relevancy`] with explicit options.
#[tracing::instrument(name = "relevancy", skip_all, fields(tokens = tokens.len()))]
pub fn relevancy_with(
    model: &Llava,
    session: &Session,
    tokens: &[usize],
    opts: &RelevancyOptions,
    on_progress: &mut dyn FnMut(usize),
) -> Result<RelevancyMaps, RelevancyError> {
    let start = Instant::now();
    let count = session.num_output();
    if count == 0 {
        return Err(RelevancyError::NoOutput);
    }
    let mut tokens = tokens.to_vec();
    tokens.sort_unstable();
    tokens.dedup();
    if let Some(&token) = tokens.iter().find(|&&t| t >= count) {
        return Err(RelevancyError::TokenOutOfRange { token, count });
    }
    if tokens.is_empty() {
        return Ok(RelevancyMaps::default());
    }
    let input = ids_u32(&session.input_ids)?;
    let output = ids_u32(&session.output_ids)?;
    let px = &session.pixel_values;
    if px.shape.len() != 3 || px.shape[0] != 3 {
        return Err(RelevancyError::PixelShape(px.shape.clone()));
    }
    let pixel_values = Tensor::from_vec(px.data.clone(), px.shape.as_slice(), &Device::Cpu)?;
    let positions = session.num_positions();
    let plan = memory::plan(model.config(), positions, model.dtype());
    // The budget: what the caller gives, else the device's free memory (system memory on the
    // CPU, the driver's free memory on a GPU), checked before anything is allocated.
    let available = opts
        .memory_budget
        .or_else(|| memory::available_bytes(model.device()));
    let chunk = match available {
        Some(available) => plan.chunk_for(available, opts.max_chunk).ok_or_else(|| {
            RelevancyError::OutOfMemory {
                needed: memory::human_bytes(plan.peak(1)),
                available: memory::human_bytes(available),
                positions,
            }
        })?,
        None => plan.chunk_for(4 << 30, opts.max_chunk).unwrap_or(1),
    };
    let pass = TrackedPass::forward(model, &input, &output, &pixel_values)?;
    let mut done = 0;
    let rows = pass.relevancy(&tokens, chunk, &mut |_| {
        done += 1;
        on_progress(done);
    })?;
    let mut maps = RelevancyMaps::default();
    for row in rows {
        maps.tokens.push(row.token);
        maps.vit.push(row.vit_patches().to_vec());
        maps.combined.push(row.combined_patches().to_vec());
        maps.llm.push(row.llm);
    }
    maps.seconds = start.elapsed().as_secs_f64();
    Ok(maps)
}

/// Output tokens among `tokens` whose relevancy the session does not hold yet.
pub fn missing_tokens(session: &Session, tokens: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = tokens
        .iter()
        .copied()
        .filter(|t| !session.manifest.relevancy_tokens.contains(t))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn table(existing: Option<Array>, rows: usize, cols: usize) -> Array {
    match existing {
        Some(a) if a.shape == [rows, cols] => a,
        _ => Array::zeros(&[rows, cols]),
    }
}

/// Store `maps` in the session: `relevancy_llm` `[T, S]`, `relevancy_vit` and
/// `relevancy_combined` `[T, P]` (rows of tokens never computed stay zero; rows already there
/// for other tokens are kept), `manifest.relevancy_tokens` (sorted, unique) and the
/// `relevancy` timing (seconds, accumulated).
pub fn store(session: &mut Session, maps: &RelevancyMaps) -> Result<(), RelevancyError> {
    let t_len = session.num_output();
    let s = session.num_positions();
    let p = maps
        .vit
        .first()
        .map(Vec::len)
        .or_else(|| session.relevancy_vit.as_ref().map(|a| a.shape[1]))
        .unwrap_or(0);
    let n = maps.tokens.len();
    if maps.llm.len() != n || maps.vit.len() != n || maps.combined.len() != n {
        return Err(RelevancyError::Shape(
            "the maps hold different numbers of rows".into(),
        ));
    }
    let mut llm = table(session.relevancy_llm.take(), t_len, s);
    let mut vit = table(session.relevancy_vit.take(), t_len, p);
    let mut comb = table(session.relevancy_combined.take(), t_len, p);
    let mut result = Ok(());
    for (i, &t) in maps.tokens.iter().enumerate() {
        if t >= t_len {
            result = Err(RelevancyError::TokenOutOfRange {
                token: t,
                count: t_len,
            });
            break;
        }
        if maps.llm[i].len() != s || maps.vit[i].len() != p || maps.combined[i].len() != p {
            result = Err(RelevancyError::Shape(format!(
                "token {t}: rows of {}, {}, {} values for S = {s}, P = {p}",
                maps.llm[i].len(),
                maps.vit[i].len(),
                maps.combined[i].len()
            )));
            break;
        }
        llm.row_mut(&[t]).copy_from_slice(&maps.llm[i]);
        vit.row_mut(&[t]).copy_from_slice(&maps.vit[i]);
        comb.row_mut(&[t]).copy_from_slice(&maps.combined[i]);
    }
    if result.is_ok() {
        let known = &mut session.manifest.relevancy_tokens;
        known.extend_from_slice(&maps.tokens);
        known.sort_unstable();
        known.dedup();
        *session
            .manifest
            .timings
            .entry("relevancy".to_string())
            .or_insert(0.0) += maps.seconds;
    }
    session.relevancy_llm = Some(llm);
    session.relevancy_vit = Some(vit);
    session.relevancy_combined = Some(comb);
    result
}

/// Compute the relevancy of the tokens among `tokens` the session does not hold yet and store
/// it; returns how many were computed.
pub fn ensure(
    model: &Llava,
    session: &mut Session,
    tokens: &[usize],
    on_progress: &mut dyn FnMut(usize),
) -> Result<usize, RelevancyError> {
    let todo = missing_tokens(session, tokens);
    if todo.is_empty() {
        return Ok(0);
    }
    let maps = relevancy(model, session, &todo, on_progress)?;
    store(session, &maps)?;
    Ok(todo.len())
}
