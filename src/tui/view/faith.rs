//! The faithfulness part of the model: what the app keeps of the drops measured for the open
//! session ([`FaithState`], owned by the method pane), and the block's rows for the current
//! token ([`FaithView`], part of the view). The maps come from the catalogue
//! ([`catalogue::compared_maps`]); the drops from model jobs (`explain::faithfulness`).

use std::collections::HashMap;

use crate::explain::catalogue;
use crate::explain::faithfulness::DEFAULT_DROP_FRACTION;
use crate::session::{RegionKind, Session};

use super::super::state::ShownRegion;
use super::ViewInput;

/// The name of the baseline map, which is never the "best" one.
pub const BASELINE: &str = "random";

/// How much the best map's drop must exceed the baseline's (and zero) to be called best: the
/// block's precision, so that a row of drops that all read +0.000 names no best map.
pub const BEST_MARGIN: f32 = 0.0005;

/// What the app keeps of faithfulness for the open session.
#[derive(Debug, Clone, PartialEq)]
pub struct FaithState {
    /// The block is shown (key `f`); missing numbers of the current token are computed.
    pub shown: bool,
    /// Fraction of patches removed.
    pub fraction: f32,
    /// Probability drop per (token, scored region, map name), with the map it was measured
    /// on; the region is `None` for a session with one region (every cell scored).
    pub drops: HashMap<(usize, Option<RegionKind>, String), (Vec<f32>, f32)>,
    /// Probability of each token with the original image.
    pub original: HashMap<usize, f32>,
    /// Seconds the latest measurement of each token took.
    pub seconds: HashMap<usize, f64>,
    /// Why numbers are not computed now (the last job failed or was cancelled); `f` retries.
    pub halted: Option<String>,
}

impl Default for FaithState {
    fn default() -> Self {
        Self {
            shown: false,
            fraction: DEFAULT_DROP_FRACTION,
            drops: HashMap::new(),
            original: HashMap::new(),
            seconds: HashMap::new(),
            halted: None,
        }
    }
}

impl FaithState {
    /// The state for a newly opened session: nothing measured, the block as it was.
    pub fn for_new_session(&self) -> Self {
        Self {
            shown: self.shown,
            fraction: self.fraction,
            ..Self::default()
        }
    }

    /// Stores the drops a faithfulness job measured on `maps` (the job's maps), deleting cells
    /// of `region`.
    pub fn store(
        &mut self,
        token: usize,
        region: Option<RegionKind>,
        maps: &[(String, Vec<f32>)],
        original: f32,
        drops: &[(String, f32)],
        seconds: f64,
    ) {
        for (name, map) in maps {
            match drops.iter().find(|(n, _)| n == name) {
                Some((_, d)) => {
                    self.drops
                        .insert((token, region, name.clone()), (map.clone(), *d));
                }
                None => {
                    self.halted = Some(format!("the model job measured no drop for {name}"));
                }
            }
        }
        self.original.insert(token, original);
        self.seconds.insert(token, seconds);
    }
}

/// One map in the block.
#[derive(Debug, Clone, PartialEq)]
pub struct FaithRow {
    /// The map's name (`attention.last.mean`, `relevancy.combined`, `causal`, ...).
    pub name: String,
    /// Its probability drop, once measured.
    pub drop: Option<f32>,
    /// It is the map the image pane shows.
    pub current: bool,
    /// It has the largest drop among the measured maps other than the random baseline, and
    /// that drop beats the baseline's (and zero) by at least [`BEST_MARGIN`].
    pub best: bool,
}

/// The block's numbers for the current token, recomputed with the view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaithView {
    /// The answer token measured (the first selected one).
    pub token: usize,
    /// The region whose cells the deletions remove: the image pane's, when the session has
    /// several; `None` for one region (every cell).
    pub region: Option<RegionKind>,
    /// Its probability with the original image, once measured.
    pub original: Option<f32>,
    /// Every map of the token, in the catalogue's order.
    pub rows: Vec<FaithRow>,
    /// The maps not measured yet (or changed since), named.
    pub missing: Vec<(String, Vec<f32>)>,
    /// Why the maps could not be read, if they could not.
    pub error: Option<String>,
}

impl FaithView {
    /// The drop of the map the image pane shows, once measured.
    pub fn current_drop(&self) -> Option<f32> {
        self.rows.iter().find(|r| r.current).and_then(|r| r.drop)
    }
}

/// The faithfulness numbers of the current token, when the block is shown or some are
/// known: the catalogue's comparison maps ([`catalogue::compared_maps`]) with the raw attention
/// of the current layer and the map the image pane shows among them.
pub(super) fn compute(input: &ViewInput, s: &Session) -> Option<FaithView> {
    let t = *input.tokens.first()?;
    let state = input.faith;
    let known = state.original.contains_key(&t);
    if !state.shown && !known {
        return None;
    }
    let region = ShownRegion::of(s, input.region).and_then(|r| r.scored_kind());
    let mut out = FaithView {
        token: t,
        region,
        original: state.original.get(&t).copied(),
        ..FaithView::default()
    };
    let layers = s.manifest.model.text_layers;
    let shown = [input.sel.attention_id(layers), input.sel.map_id(layers)];
    let maps = match catalogue::compared_maps(s, t, &shown, t as u64) {
        Ok(m) => m,
        Err(e) => {
            out.error = Some(e.to_string());
            return Some(out);
        }
    };
    // The map the image pane shows is the map of one token only when at most one is selected.
    let current = input
        .one_token
        .then(|| input.sel.map_id(layers).to_string());
    for (id, values) in maps {
        let name = id.to_string();
        let drop = state
            .drops
            .get(&(t, region, name.clone()))
            .filter(|(map, _)| *map == values)
            .map(|(_, d)| *d);
        if drop.is_none() {
            out.missing.push((name.clone(), values));
        }
        out.rows.push(FaithRow {
            current: current.as_deref() == Some(name.as_str()),
            name,
            drop,
            best: false,
        });
    }
    let baseline = out
        .rows
        .iter()
        .find(|r| r.name == BASELINE)
        .and_then(|r| r.drop)
        .unwrap_or(0.0)
        .max(0.0);
    let best = out
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.name != BASELINE)
        .filter_map(|(i, r)| r.drop.map(|d| (i, d)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
    if let Some((i, d)) = best {
        out.rows[i].best = d >= baseline + BEST_MARGIN;
    }
    Some(out)
}
