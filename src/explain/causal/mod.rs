//! CLEANN causal explanations (Rohekar et al., NeurIPS 2023) of attention heads, exact to Intel
//! Labs' causality-lab (`CLEANN` + `LearnStructOrderedICD(is_selection_bias=False)`) with the
//! per-head node selection of LVLM-Interpret.
//!
//! Per head, with the head's attention matrix `A` and the explained position `target`:
//! 1. nodes: the `k = min(max(2, #{row weights > att_th}), max_image_tokens)` image positions the
//!    target attends to most, the positions after the image and before the target whose
//!    attention exceeds `att_th`, and the target;
//! 2. a PAG over the nodes by ordered ICD (order = position), with a Fisher-z partial
//!    correlation test on the normalised `A·Aᵀ` ([`citest`], [`icd`]);
//! 3. explanation: the possible-d-separation tree of the target up to `search_radius`
//!    ([`pds_tree`]);
//! 4. head importance `max(image attention) / max(attention after the image)`, and for each
//!    explaining image position `1 − p` of its test against the target given the other
//!    explaining image positions.
//!
//! causality-lab iterates Python sets in several places where the order changes the result;
//! [`pyset`] reproduces CPython's set order so that the results match it exactly.

pub mod citest;
pub mod icd;
mod orient;
pub mod pag;
mod params;
pub mod pds_tree;
pub mod pyset;
mod shown;

use std::collections::BTreeMap;

use crate::session::{Array, CausalHead, CausalResults, CausalToken, Session};

pub use params::{
    causal_for_token, compute_token, default_params, explain_checked, head_tree, stored_token,
    CausalParams, CausalUnavailable, ParamStep, MAX_ALPHA, MAX_SEARCH_RADIUS,
};
pub use pds_tree::PdsTree;
pub use shown::{effective_radius, heads_by_importance, set_up_to, shown_head};

/// Why a causal explanation could not be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CausalError {
    /// The session lacks the full attention of the requested layer.
    #[error("the session holds no full attention for layer {0} (record it with --causal)")]
    MissingLayer(usize),
    /// The full attention tensor is not `[H, S, S]`.
    #[error("the full attention of layer {layer} has shape {shape:?}, expected [heads, S, S]")]
    BadShape {
        /// The layer.
        layer: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// An output token index has no attention row.
    #[error("output token {token} has no attention row (the session has {positions} positions)")]
    TokenOutOfRange {
        /// The output token index.
        token: usize,
        /// Positions with an attention row.
        positions: usize,
    },
    /// The image span does not fit before the explained position.
    #[error("image span {start}+{len} does not lie before position {target}")]
    BadImageSpan {
        /// First image position.
        start: usize,
        /// Number of image positions.
        len: usize,
        /// The explained position.
        target: usize,
    },
}

/// Explains one head from its `seq_len × seq_len` attention (row-major, f32).
pub fn explain_head(
    attention: &[f32],
    seq_len: usize,
    image_span: (usize, usize),
    target: usize,
    head: usize,
    params: &CausalParams,
) -> CausalHead {
    explain_head_with_tree(attention, seq_len, image_span, target, head, params).0
}

/// Explains one head from its `seq_len × seq_len` attention (row-major, f64).
pub fn explain_head_f64(
    attention: &[f64],
    seq_len: usize,
    image_span: (usize, usize),
    target: usize,
    head: usize,
    params: &CausalParams,
) -> CausalHead {
    explain_head_with_tree(attention, seq_len, image_span, target, head, params).0
}

/// The positions taken as graph nodes, in LVLM-Interpret's insertion order: image positions by
/// descending attention (ties: later position first), then text positions after the image
/// whose attention exceeds `att_th`, then the target.
pub fn select_nodes(
    row: &[f64],
    image_span: (usize, usize),
    target: usize,
    params: &CausalParams,
) -> Vec<usize> {
    let (start, len) = image_span;
    let end = (start + len).min(target).min(row.len());
    let high = row.iter().filter(|&&w| w > params.att_th).count().max(2);
    let candidates: Vec<usize> = (start.min(end)..end).collect();
    let k = high.min(params.max_image_tokens).min(candidates.len());
    // numpy: argsort ascending, then reversed
    let mut sorted = candidates;
    sorted.sort_by(|&i, &j| row[i].total_cmp(&row[j]).then(i.cmp(&j)));
    let mut nodes: Vec<usize> = sorted.iter().rev().take(k).copied().collect();
    let text_start = start + len;
    nodes.extend((text_start..target.min(row.len())).filter(|&p| row[p] > params.att_th));
    nodes.push(target);
    nodes
}

/// `max(image attention) / max(attention after the image)` of the target's row.
pub fn head_importance(row: &[f64], image_span: (usize, usize)) -> f64 {
    let (start, len) = image_span;
    let end = (start + len).min(row.len());
    let img = row[start.min(end)..end]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let after = row[end..].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !img.is_finite() || !after.is_finite() || after == 0.0 {
        return 0.0;
    }
    img / after
}

/// [`explain_head`] (f32 or f64 attention; computed in f64) that also returns the
/// possible-d-separation tree of the target (see [`tree_rows`]).
pub fn explain_head_with_tree<T: Copy + Into<f64>>(
    attention: &[T],
    seq_len: usize,
    image_span: (usize, usize),
    target: usize,
    head: usize,
    params: &CausalParams,
) -> (CausalHead, PdsTree) {
    if attention.len() < seq_len * seq_len {
        return empty_head(head, target);
    }
    let row = |p: usize| -> Vec<f64> {
        attention[p * seq_len..(p + 1) * seq_len]
            .iter()
            .map(|&v| v.into())
            .collect()
    };
    explain_rows(&row, seq_len, image_span, target, head, params)
}

/// The result for a head that cannot be explained (no attention row for the target).
fn empty_head(head: usize, target: usize) -> (CausalHead, PdsTree) {
    let tree = PdsTree {
        nodes: vec![pds_tree::TreeNode {
            position: target,
            depth: 0,
            children: Vec::new(),
        }],
    };
    let head = CausalHead {
        head,
        nodes: Vec::new(),
        explanation: Vec::new(),
        per_radius: BTreeMap::new(),
        importance: 0.0,
        image_weights: BTreeMap::new(),
    };
    (head, tree)
}

/// The one implementation behind the entry points: `row_of(p)` gives the attention row of
/// position `p` (`seq_len` values).
fn explain_rows(
    row_of: &dyn Fn(usize) -> Vec<f64>,
    seq_len: usize,
    image_span: (usize, usize),
    target: usize,
    head: usize,
    params: &CausalParams,
) -> (CausalHead, PdsTree) {
    if target >= seq_len {
        return empty_head(head, target);
    }
    let target_row = row_of(target);
    let row = target_row.as_slice();
    let selected = select_nodes(row, image_span, target, params);
    let node_set: pyset::PySet = selected.iter().copied().collect();
    let mut order = node_set.to_vec();
    order.sort_unstable();

    let rows: Vec<Vec<f64>> = order
        .iter()
        .map(|&p| {
            if p == target {
                target_row.clone()
            } else {
                row_of(p)
            }
        })
        .collect();
    let mut ci = citest::ParCorrTest::from_rows(&rows, seq_len, &order, params.dof, params.alpha);
    let graph = icd::learn(node_set, &order, &mut ci, icd::IcdOptions::default());
    let (tree, pds) = pds_tree::create_pds_tree(&graph, target, None, Some(params.search_radius));

    let mut explanation = pds.to_vec();
    explanation.sort_unstable();
    let per_radius: BTreeMap<usize, Vec<usize>> = tree
        .per_depth()
        .into_iter()
        .enumerate()
        .map(|(d, v)| (d + 1, v))
        .collect();

    let (start, len) = image_span;
    let image: Vec<usize> = explanation
        .iter()
        .copied()
        .filter(|&p| p >= start && p < start + len)
        .collect();
    let image_set: pyset::PySet = image.iter().copied().collect();
    let mut image_weights = BTreeMap::new();
    for &tok in &image {
        let cond = image_set.minus(&[tok]).to_vec();
        let p = ci.p_value(tok, target, &cond).min(1.0);
        let w = 1.0 - p;
        image_weights.insert(tok, if w.is_finite() { w } else { 0.0 });
    }

    let head = CausalHead {
        head,
        nodes: order,
        explanation,
        per_radius,
        importance: head_importance(row, image_span),
        image_weights,
    };
    (head, tree)
}

/// The possible-d-separation tree as `(depth, position)` rows in depth-first order, root first
/// (depth 0), for drawing as an indented tree.
pub fn tree_rows(tree: &PdsTree) -> Vec<(usize, usize)> {
    tree.rows()
}

/// Explains `target` in every head of `full` (`[H, S, S]`), heads in parallel.
pub fn explain_token(
    full: &Array,
    image_span: (usize, usize),
    target: usize,
    params: &CausalParams,
) -> CausalToken {
    let (heads, seq_len) = match full.shape.as_slice() {
        [h, s, s2] if s == s2 => (*h, *s),
        _ => (0, 0),
    };
    let stride = seq_len * seq_len;
    let one = |h: usize| match full.data.get(h * stride..(h + 1) * stride) {
        Some(a) => explain_head(a, seq_len, image_span, target, h, params),
        None => empty_head(h, target).0,
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(heads.max(1));
    let mut results: Vec<Option<CausalHead>> = vec![None; heads];
    if workers <= 1 {
        for (h, slot) in results.iter_mut().enumerate() {
            *slot = Some(one(h));
        }
    } else {
        std::thread::scope(|s| {
            let chunks: Vec<_> = results
                .chunks_mut(heads.div_ceil(workers))
                .enumerate()
                .map(|(c, chunk)| {
                    let first = c * heads.div_ceil(workers);
                    let one = &one;
                    s.spawn(move || {
                        for (i, slot) in chunk.iter_mut().enumerate() {
                            *slot = Some(one(first + i));
                        }
                    })
                })
                .collect();
            for c in chunks {
                let _ = c.join();
            }
        });
    }
    CausalToken {
        target,
        heads: results.into_iter().flatten().collect(),
    }
}

/// Explains the given output tokens of a session with the full attention of `params.layer`
/// (target of token `t` = N − 1 + t).
#[tracing::instrument(name = "causal", skip_all, fields(tokens = tokens.len()))]
pub fn explain_session(
    session: &Session,
    tokens: &[usize],
    params: &CausalParams,
) -> Result<CausalResults, CausalError> {
    let full = session
        .attn_full
        .get(&params.layer)
        .ok_or(CausalError::MissingLayer(params.layer))?;
    let seq_len = match full.shape.as_slice() {
        [_, s, s2] if s == s2 => *s,
        _ => {
            return Err(CausalError::BadShape {
                layer: params.layer,
                shape: full.shape.clone(),
            })
        }
    };
    let [start, len] = session.manifest.image_span;
    let mut out = BTreeMap::new();
    for &t in tokens {
        let target = (session.num_input() + t).saturating_sub(1);
        if target >= seq_len {
            return Err(CausalError::TokenOutOfRange {
                token: t,
                positions: seq_len,
            });
        }
        if start + len > target {
            return Err(CausalError::BadImageSpan { start, len, target });
        }
        out.insert(t, explain_token(full, (start, len), target, params));
    }
    Ok(CausalResults {
        params: params.clone(),
        tokens: out,
    })
}

/// Sum over heads of each image patch's weight (`image_len` entries, patch order).
pub fn total_image_weights(token: &CausalToken, image_span: (usize, usize)) -> Vec<f64> {
    let (start, len) = image_span;
    let mut total = vec![0.0; len];
    for h in &token.heads {
        for (&p, &w) in &h.image_weights {
            if p >= start && p < start + len {
                total[p - start] += w;
            }
        }
    }
    total
}
