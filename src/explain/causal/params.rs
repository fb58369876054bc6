//! CLEANN's parameters, their defaults for a session, the steps the app's keys take, and the
//! one way a view obtains a token's causal explanation: the session's stored result, else one
//! computed from `attn.full` of the causal layer (docs/design.md, "Causal explanation").

use serde::{Deserialize, Serialize};

use crate::session::{Array, CausalToken, Session};

/// CLEANN parameters (docs/design.md, "Causal explanation"), stored with every causal result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalParams {
    /// Significance level of the conditional-independence test.
    pub alpha: f64,
    /// Number of records assumed by the Fisher z test.
    pub dof: usize,
    /// Attention threshold for selecting nodes.
    pub att_th: f64,
    /// Most image positions taken as nodes.
    pub max_image_tokens: usize,
    /// Maximum radius of the possible-d-separation tree.
    pub search_radius: usize,
    /// Decoder layer whose full attention is explained.
    pub layer: usize,
}

impl Default for CausalParams {
    fn default() -> Self {
        Self {
            alpha: 1e-5,
            dof: 128,
            att_th: 0.01,
            max_image_tokens: 50,
            search_radius: 3,
            layer: 0,
        }
    }
}

/// The largest α a parameter step reaches.
pub const MAX_ALPHA: f64 = 0.5;

/// The largest search radius a parameter step reaches.
pub const MAX_SEARCH_RADIUS: usize = 16;

/// One step of a CLEANN parameter, as the app's keys take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamStep {
    /// α halved.
    AlphaDown,
    /// α doubled (at most [`MAX_ALPHA`]).
    AlphaUp,
    /// The attention threshold halved.
    ThresholdDown,
    /// The attention threshold doubled (at most 1).
    ThresholdUp,
    /// The search radius one less (at least 1).
    RadiusDown,
    /// The search radius one more (at most [`MAX_SEARCH_RADIUS`]).
    RadiusUp,
}

impl CausalParams {
    /// The default parameters for `s`: these defaults on its last decoder layer.
    pub fn for_session(s: &Session) -> CausalParams {
        CausalParams {
            layer: s.manifest.model.text_layers.saturating_sub(1),
            ..CausalParams::default()
        }
    }

    /// The parameters the session's results were computed with, else [`Self::for_session`].
    pub fn of_session(s: &Session) -> CausalParams {
        s.manifest
            .causal
            .as_ref()
            .map(|c| c.params.clone())
            .unwrap_or_else(|| Self::for_session(s))
    }

    /// These parameters after one `step`.
    pub fn stepped(&self, step: ParamStep) -> CausalParams {
        let mut next = self.clone();
        match step {
            ParamStep::AlphaDown => next.alpha = self.alpha / 2.0,
            ParamStep::AlphaUp => next.alpha = (self.alpha * 2.0).min(MAX_ALPHA),
            ParamStep::ThresholdDown => next.att_th = self.att_th / 2.0,
            ParamStep::ThresholdUp => next.att_th = (self.att_th * 2.0).min(1.0),
            ParamStep::RadiusDown => {
                next.search_radius = self.search_radius.saturating_sub(1).max(1)
            }
            ParamStep::RadiusUp => {
                next.search_radius = (self.search_radius + 1).min(MAX_SEARCH_RADIUS)
            }
        }
        next
    }

    /// `α … · att_th … · radius …`, for notices and titles.
    pub fn label(&self) -> String {
        format!(
            "α {:.0e} · att_th {} · radius {}",
            self.alpha, self.att_th, self.search_radius
        )
    }
}

/// The default parameters for this session (see [`CausalParams::for_session`]).
pub fn default_params(s: &Session) -> CausalParams {
    CausalParams::for_session(s)
}

/// Why no causal explanation can be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CausalUnavailable {
    /// The token index is past the answer.
    #[error("output token {0} does not exist (the answer has {1} tokens)")]
    Token(usize, usize),
    /// Neither a stored result nor the full attention it needs.
    #[error("no causal explanation for token {0}, and no attn.full.{1} to compute it from (run with --causal)")]
    NoFullAttention(usize, usize),
    /// The full attention does not cover the target position.
    #[error("attn.full has shape {0:?}, which does not cover target position {1}")]
    Shape(Vec<usize>, usize),
}

/// The session's stored causal result of output token `t`, if it holds one.
pub fn stored_token(s: &Session, t: usize) -> Option<&CausalToken> {
    s.manifest.causal.as_ref()?.tokens.get(&t)
}

/// Computes CLEANN for one target position from one layer's full attention `[H, S, S]`,
/// checking the shape first.
pub fn explain_checked(
    full: &Array,
    image_span: (usize, usize),
    target: usize,
    params: &CausalParams,
) -> Result<CausalToken, CausalUnavailable> {
    match full.shape.as_slice() {
        [_, s, s2] if s == s2 && target < *s => {
            Ok(super::explain_token(full, image_span, target, params))
        }
        _ => Err(CausalUnavailable::Shape(full.shape.clone(), target)),
    }
}

/// Computes the causal explanation of answer token `t` with `params` from the session's
/// `attn.full.{params.layer}` (what the app's worker runs).
pub fn compute_token(
    s: &Session,
    t: usize,
    params: &CausalParams,
) -> Result<CausalToken, CausalUnavailable> {
    if t >= s.num_output() {
        return Err(CausalUnavailable::Token(t, s.num_output()));
    }
    let full = s
        .attn_full
        .get(&params.layer)
        .ok_or(CausalUnavailable::NoFullAttention(t, params.layer))?;
    let [start, len] = s.manifest.image_span;
    explain_checked(full, (start, len), s.query_position(t), params)
}

/// The causal explanation of output token `t`: the stored one, else computed from
/// `attn.full.{layer}` with the session's (or the default) parameters.
pub fn causal_for_token(s: &Session, t: usize) -> Result<CausalToken, CausalUnavailable> {
    if t >= s.num_output() {
        return Err(CausalUnavailable::Token(t, s.num_output()));
    }
    if let Some(ct) = stored_token(s, t) {
        return Ok(ct.clone());
    }
    compute_token(s, t, &CausalParams::of_session(s))
}

/// The possible-d-separation tree of one head for `target`, as `(depth, position)` rows in
/// depth-first order (root first), from the session's `attn.full.{params.layer}`; `None` when
/// the session lacks that attention or the head.
pub fn head_tree(
    s: &Session,
    target: usize,
    head: usize,
    params: &CausalParams,
) -> Option<Vec<(usize, usize)>> {
    let full = s.attn_full.get(&params.layer)?;
    let [_, n, n2] = full.shape.as_slice() else {
        return None;
    };
    let (n, n2) = (*n, *n2);
    let a = full.data.get(head * n * n2..(head + 1) * n * n2)?;
    let [start, len] = s.manifest.image_span;
    let (_, tree) = super::explain_head_with_tree(a, n, (start, len), target, head, params);
    Some(super::tree_rows(&tree))
}
