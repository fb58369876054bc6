//! The logit lens as maps of the catalogue: `lens.l{L}` is, per image cell, the probability
//! that the patch's residual stream after decoder layer L, read out through the final norm and
//! the output head, gives the answer token ([`crate::explain::lens`]). The readings need the
//! model, so the map reads the ones cached in the session (`report --method lens --cache`
//! stores them); [`super::need`] names what is missing.

use super::{CatalogueError, Explanation};
use crate::explain::lens::cached;
use crate::session::Session;

/// The mean of the cached lens maps of `tokens` at `layer`.
pub(super) fn lens_map(
    s: &Session,
    tokens: &[usize],
    layer: usize,
    blank: Explanation,
) -> Result<Explanation, CatalogueError> {
    let mut out = blank;
    // Every region's cells (a LLaVA-NeXT / OneVision reading covers both grids).
    let patches = super::compute::cells(s)?.len();
    let n = tokens.len() as f32;
    let mut values = vec![0f32; patches];
    for &t in tokens {
        let lens = cached(s, t, layer).ok_or(CatalogueError::NoLens { token: t, layer })?;
        if lens.map.len() != patches {
            return Err(CatalogueError::NoLens { token: t, layer });
        }
        values
            .iter_mut()
            .zip(&lens.map)
            .for_each(|(o, v)| *o += v / n);
    }
    super::compute::set_values(&mut out, s, values);
    out.layer = Some(layer);
    out.title = format!(
        "logit lens · layer {layer} · p(answer token) per patch · {}",
        super::compute::tokens_label(tokens)
    );
    Ok(out)
}

/// The tokens of `tokens` whose lens at `layer` the session does not cache.
pub(super) fn missing(s: &Session, tokens: &[usize], layer: usize) -> Vec<usize> {
    tokens
        .iter()
        .copied()
        .filter(|&t| cached(s, t, layer).is_none())
        .collect()
}
