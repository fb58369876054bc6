//! Per-patch maps of one output token, named, for comparing explanation methods: what
//! `lvlmscope eval` scores on synthetic scenes and what the app's faithfulness block measures.
//! Each is read from a session that holds the recorded attention (`attn.gen`), the relevancy
//! rows and the causal results of the explained token.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::explain::attention::{self, AttentionError, HeadAgg};
use crate::explain::causal;
use crate::session::{CausalToken, Session};

/// An explanation method with a fixed definition (what the benchmark and the app compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Raw attention of the last decoder layer, mean over heads.
    AttentionLastMean,
    /// Raw attention, mean over heads, then mean over every decoder layer.
    AttentionLayersMean,
    /// Raw attention of the last decoder layer, maximum over heads.
    AttentionLastMax,
    /// Decoder relevancy (`relevancy.llm`) over the image patches.
    RelevancyDecoder,
    /// Vision-tower relevancy (`relevancy.vit`).
    RelevancyVision,
    /// Decoder relevancy carried through the vision tower (`relevancy.combined`).
    RelevancyCombined,
    /// CLEANN: the image weights of the token's causal explanation summed over heads (zero on
    /// patches no head's explanation holds).
    Causal,
    /// A uniform random map, seeded per scene: the baseline every method should beat.
    Random,
}

impl Method {
    /// Every method, in the order of reports and views.
    pub const ALL: [Method; 8] = [
        Method::AttentionLastMean,
        Method::AttentionLayersMean,
        Method::AttentionLastMax,
        Method::RelevancyDecoder,
        Method::RelevancyVision,
        Method::RelevancyCombined,
        Method::Causal,
        Method::Random,
    ];

    /// The method's key in JSON, in the table and in the app's faithfulness block.
    pub fn key(self) -> &'static str {
        match self {
            Method::AttentionLastMean => "attention.last.mean",
            Method::AttentionLayersMean => "attention.layers.mean",
            Method::AttentionLastMax => "attention.last.max",
            Method::RelevancyDecoder => "relevancy.decoder",
            Method::RelevancyVision => "relevancy.vision",
            Method::RelevancyCombined => "relevancy.combined",
            Method::Causal => "causal",
            Method::Random => "random",
        }
    }
}

impl Method {
    /// Whether `s` holds what the method needs for output token `t`: the recorded attention,
    /// the token's relevancy rows, its causal result; the random map always.
    pub fn available(self, s: &Session, t: usize) -> bool {
        let relevancy = |table: &Option<crate::session::Array>| {
            table.is_some() && s.manifest.relevancy_tokens.contains(&t)
        };
        match self {
            Method::AttentionLastMean | Method::AttentionLayersMean | Method::AttentionLastMax => {
                s.attn_gen.is_some()
            }
            Method::RelevancyDecoder => relevancy(&s.relevancy_llm),
            Method::RelevancyVision => relevancy(&s.relevancy_vit),
            Method::RelevancyCombined => relevancy(&s.relevancy_combined),
            Method::Causal => causal_token(s, t).is_some(),
            Method::Random => true,
        }
    }
}

/// The session's causal result for output token `t`, if it holds one.
pub fn causal_token(s: &Session, t: usize) -> Option<&CausalToken> {
    s.manifest.causal.as_ref()?.tokens.get(&t)
}

/// The name of the raw-attention map of decoder layer `layer` under `agg`: the [`Method`] key
/// when it is one (`attention.last.mean`, `attention.last.max`), else `attention.l{layer}.mean`,
/// `attention.l{layer}.max` or `attention.l{layer}.h{head}`.
pub fn attention_key(s: &Session, layer: usize, agg: HeadAgg) -> String {
    let last = s.manifest.model.text_layers.saturating_sub(1);
    match agg {
        HeadAgg::Mean if layer == last => Method::AttentionLastMean.key().to_string(),
        HeadAgg::Max if layer == last => Method::AttentionLastMax.key().to_string(),
        HeadAgg::Mean => format!("attention.l{layer}.mean"),
        HeadAgg::Max => format!("attention.l{layer}.max"),
        HeadAgg::Head(h) => format!("attention.l{layer}.h{h}"),
    }
}

/// The maps of output token `t` a view compares, named: first the raw attention of the layer
/// and head aggregation in `shown` (the map a view shows) when it is not one of the methods,
/// then every [`Method`] of [`Method::ALL`] the session can give for the token, under its key;
/// the random map (seeded with `rng_seed`) is always there, as the baseline.
pub fn token_maps(
    s: &Session,
    t: usize,
    shown: Option<(usize, HeadAgg)>,
    rng_seed: u64,
) -> Result<Vec<(String, Vec<f32>)>, MapError> {
    let mut out = Vec::new();
    if let Some((layer, agg)) = shown.filter(|_| s.attn_gen.is_some()) {
        let key = attention_key(s, layer, agg);
        if !Method::ALL.iter().any(|m| m.key() == key) {
            out.push((key, attention::image_map(s, t, layer, agg)?.values));
        }
    }
    for method in Method::ALL {
        if method.available(s, t) {
            let map = method_map(s, t, method, causal_token(s, t), rng_seed)?;
            out.push((method.key().to_string(), map));
        }
    }
    Ok(out)
}

/// Why a map could not be read from a session.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The attention views failed.
    #[error(transparent)]
    Attention(#[from] AttentionError),
    /// The session lacks a relevancy table or its row does not fit the grid.
    #[error("the session holds no {0} row of the right size for the explained token")]
    Relevancy(&'static str),
}

/// The map of `method` for output token `t`, one value per patch of the image grid.
/// `causal` is the token's causal explanation (if any); `rng_seed` seeds the random map.
pub fn method_map(
    s: &Session,
    t: usize,
    method: Method,
    causal: Option<&CausalToken>,
    rng_seed: u64,
) -> Result<Vec<f32>, MapError> {
    let last = s.manifest.model.text_layers.saturating_sub(1);
    let [rows, cols] = s.manifest.model.image_grid;
    let patches = rows * cols;
    let patch_span = attention::patch_positions(s)?;
    Ok(match method {
        Method::AttentionLastMean => attention::image_map(s, t, last, HeadAgg::Mean)?.values,
        Method::AttentionLastMax => attention::image_map(s, t, last, HeadAgg::Max)?.values,
        Method::AttentionLayersMean => {
            let layers = s.manifest.model.text_layers.max(1);
            let mut out = vec![0f32; patches];
            for l in 0..layers {
                let g = attention::image_map(s, t, l, HeadAgg::Mean)?;
                out.iter_mut()
                    .zip(&g.values)
                    .for_each(|(o, v)| *o += v / layers as f32);
            }
            out
        }
        Method::RelevancyDecoder => {
            let row = relevancy_row(s.relevancy_llm.as_ref(), t, "relevancy.llm")?;
            row.get(patch_span)
                .ok_or(MapError::Relevancy("relevancy.llm"))?
                .to_vec()
        }
        Method::RelevancyVision => sized(
            relevancy_row(s.relevancy_vit.as_ref(), t, "relevancy.vit")?,
            patches,
        )
        .ok_or(MapError::Relevancy("relevancy.vit"))?,
        Method::RelevancyCombined => sized(
            relevancy_row(s.relevancy_combined.as_ref(), t, "relevancy.combined")?,
            patches,
        )
        .ok_or(MapError::Relevancy("relevancy.combined"))?,
        Method::Causal => {
            let span = s.manifest.image_span;
            let weights = causal
                .map(|c| causal::total_image_weights(c, (span[0], span[1])))
                .unwrap_or_else(|| vec![0.0; span[1]]);
            // With a CLS feature first in the span, the patches are the rest.
            let skip = patch_span.start - span[0];
            weights.iter().skip(skip).map(|&w| w as f32).collect()
        }
        Method::Random => {
            let mut rng = StdRng::seed_from_u64(rng_seed);
            (0..patches).map(|_| rng.gen::<f32>()).collect()
        }
    })
}

fn relevancy_row<'a>(
    table: Option<&'a crate::session::Array>,
    t: usize,
    name: &'static str,
) -> Result<&'a [f32], MapError> {
    match table {
        Some(a) if a.shape.len() == 2 && t < a.shape[0] => Ok(a.row(&[t])),
        _ => Err(MapError::Relevancy(name)),
    }
}

fn sized(row: &[f32], patches: usize) -> Option<Vec<f32>> {
    (row.len() == patches).then(|| row.to_vec())
}
