//! The one place views obtain a causal (CLEANN) explanation: from the session when it holds one,
//! else computed from `attn.full` of the causal layer.

use crate::session::{Array, CausalParams, CausalToken, Session};

/// Why no causal explanation can be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CausalUnavailable {
    /// The token index is past the answer.
    #[error("output token {0} does not exist (the answer has {1} tokens)")]
    Token(usize, usize),
    /// Neither a stored result nor the full attention it needs.
    #[error("no causal explanation for token {0}, and no attn.full.{1} to compute it from (run with --causal)")]
    NoFullAttention(usize, usize),
    /// The CLEANN implementation is not linked into this build yet.
    #[error("causal explanations cannot be computed in this build (CLEANN is not wired in)")]
    NeedsCausal,
}

/// Computes CLEANN for one target position from one layer's full attention `[H, S, S]`.
///
/// INTEGRATION POINT: this is the single call site of `crate::explain::causal::explain_token`.
/// Until that function lands, it reports [`CausalUnavailable::NeedsCausal`]; the integrator
/// replaces the body with `Ok(crate::explain::causal::explain_token(full, image_span, target,
/// params))`.
pub fn explain_token(
    full: &Array,
    image_span: (usize, usize),
    target: usize,
    params: &CausalParams,
) -> Result<CausalToken, CausalUnavailable> {
    let _ = (full, image_span, target, params);
    Err(CausalUnavailable::NeedsCausal)
}

/// The default parameters for this session: DESIGN.md's defaults on the last decoder layer.
pub fn default_params(s: &Session) -> CausalParams {
    CausalParams {
        layer: s.manifest.model.text_layers.saturating_sub(1),
        ..CausalParams::default()
    }
}

/// The causal explanation of output token `t`: the stored one, else computed from
/// `attn.full.{layer}` with the session's (or the default) parameters.
pub fn causal_for_token(s: &Session, t: usize) -> Result<CausalToken, CausalUnavailable> {
    if t >= s.num_output() {
        return Err(CausalUnavailable::Token(t, s.num_output()));
    }
    if let Some(ct) = s.manifest.causal.as_ref().and_then(|c| c.tokens.get(&t)) {
        return Ok(ct.clone());
    }
    let params = s
        .manifest
        .causal
        .as_ref()
        .map(|c| c.params.clone())
        .unwrap_or_else(|| default_params(s));
    let full = s
        .attn_full
        .get(&params.layer)
        .ok_or(CausalUnavailable::NoFullAttention(t, params.layer))?;
    let [start, len] = s.manifest.image_span;
    explain_token(full, (start, len), s.query_position(t), &params)
}
