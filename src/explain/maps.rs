//! The maps a comparison holds (the faithfulness block, `eval`) under their catalogue names, the
//! form model jobs carry them in: [`super::catalogue::compared_maps`] with the shown raw
//! attention given as a layer and a head aggregation.

use crate::explain::attention::HeadAgg;
use crate::explain::catalogue::{self, CatalogueError, MapId};
use crate::session::Session;

/// The maps of output token `t` a view compares, named by their [`MapId`] spelling: first the
/// raw attention of the layer and head aggregation in `shown` when it is not a standard map,
/// then every standard map the session can give for the token; the random map (seeded with
/// `rng_seed`) is always there, as the baseline.
pub fn token_maps(
    s: &Session,
    t: usize,
    shown: Option<(usize, HeadAgg)>,
    rng_seed: u64,
) -> Result<Vec<(String, Vec<f32>)>, CatalogueError> {
    let layers = s.manifest.model.text_layers;
    let shown: Vec<MapId> = shown
        .map(|(layer, agg)| MapId::attention(layer, layers, agg))
        .into_iter()
        .collect();
    Ok(catalogue::compared_maps(s, t, &shown, rng_seed)?
        .into_iter()
        .map(|(id, values)| (id.to_string(), values))
        .collect())
}
