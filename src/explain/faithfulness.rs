//! Faithfulness of a per-patch map: does removing what the map points at change the answer?
//!
//! **Deletion curve** of output token t under a map over the image regions' cells (the
//! patches, in the order of `Session::cell_positions`): for each patch count k, the pixels of
//! the map's k highest patches (ties broken by patch index, lowest
//! first) are replaced by the image's mean colour (the per-channel mean of the normalised pixel
//! values, which is the mean colour in pixel space carried through the same affine
//! normalisation), the model re-reads `input_ids + output_ids[..t]` with that image, and the
//! curve records the softmax probability of `output_ids[t]` at position N − 1 + t. A faithful
//! map makes the probability fall fast: the normalised area under the curve ([`curve_area`])
//! is small.
//!
//! **Probability drop** ([`probability_drop`]): p(original image) − p(the map's top fraction of
//! patches removed), the one number a view shows next to a map; higher means more faithful.
//!
//! The modified images are run through the model in batches (one vision-tower pass and one
//! decoder pass per batch). A [`Deletion`] keeps the probability of every set of removed
//! patches it has computed, so curves of several maps of the same token share their common
//! points (k = 0 and k = P always, often more).
//!
//! **Regions.** Maps give one value per cell of every image region; a deletion scores the cells
//! of one region ([`Deletion::with_region`]; by default [`scored_region`]: LLaVA-NeXT /
//! OneVision's high-resolution grid) or of all. An anyres model reads the original image with
//! the cells' rectangles blanked ([`Deletion::on_picture`]), so both views see a deletion.

use std::collections::HashMap;
use std::ops::Range;

use crate::session::{Array, RegionKind, Session};

pub use scorer::PictureScorer;
pub use windows::{
    cell_windows, fill_patches, fill_windows, mean_colour, picture_windows, scored_region, Window,
};

mod scorer;
mod windows;

/// The fraction of patches [`probability_drop`] removes when a view has no other setting.
pub const DEFAULT_DROP_FRACTION: f32 = 0.2;

/// Images run through the model in one batch, by default.
pub const DEFAULT_BATCH: usize = 8;

/// Why a deletion curve could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum FaithfulnessError {
    /// The output token does not exist.
    #[error("output token {token} does not exist (the session has {count})")]
    Token {
        /// The requested index.
        token: usize,
        /// Number of output tokens.
        count: usize,
    },
    /// The map does not have one value per patch.
    #[error("the map has {got} values but the image grid has {expected} patches")]
    MapLength {
        /// Values in the map.
        got: usize,
        /// Patches in the grid.
        expected: usize,
    },
    /// A patch count past the grid.
    #[error("cannot remove {k} patches: the image grid has {patches}")]
    TooMany {
        /// The requested count.
        k: usize,
        /// Patches in the grid.
        patches: usize,
    },
    /// A patch index past the grid.
    #[error("patch {patch} does not exist (the image grid has {patches} patches)")]
    Patch {
        /// The patch index.
        patch: usize,
        /// Patches in the grid.
        patches: usize,
    },
    /// A fraction outside [0, 1].
    #[error("the fraction of patches to remove must be in [0, 1], got {0}")]
    Fraction(f32),
    /// The session's pixel values are not `[3, h, w]` or do not fit the grid.
    #[error("the session's pixel values have shape {shape:?}, which does not fit a {rows}x{cols} patch grid")]
    Pixels {
        /// Shape of `pixel_values`.
        shape: Vec<usize>,
        /// Grid rows.
        rows: usize,
        /// Grid columns.
        cols: usize,
    },
    /// The region to score is not one of the session's.
    #[error("the session has no {} image region to delete cells of", .0.name())]
    NoRegion(RegionKind),
    /// A picture given for the deletion is not `[3, h, w]` values.
    #[error("the picture to delete cells of has shape {0:?}, not [3, height, width]")]
    Picture(Vec<usize>),
    /// A token id in the session is negative or too large.
    #[error("the session holds token id {0}, which no model vocabulary can have")]
    BadId(i64),
    /// The model failed.
    #[error("the model failed while re-reading a modified image: {}", crate::model::error_message(.0))]
    Model(#[from] candle_core::Error),
}

/// Patches ordered by map value, highest first; ties by patch index (lowest first); NaN values
/// rank last.
pub fn patch_order(map: &[f32]) -> Vec<usize> {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| key(map[b]).total_cmp(&key(map[a])).then(a.cmp(&b)));
    order
}

/// Patch counts of a curve in `steps` equal steps of the fraction removed:
/// `round(i · patches / steps)` for i = 0..=steps, duplicates dropped (0 first, `patches` last).
pub fn fraction_ks(patches: usize, steps: usize) -> Vec<usize> {
    let steps = steps.max(1);
    let mut ks: Vec<usize> = (0..=steps)
        .map(|i| ((i * patches) as f64 / steps as f64).round() as usize)
        .collect();
    ks.dedup();
    ks
}

/// Normalised area under a deletion curve: the trapezoid integral of probability over the
/// fraction removed (`k / patches`), divided by the span of fractions the curve covers, so a
/// curve of probabilities in [0, 1] has an area in [0, 1]. A curve of one point (or a zero
/// span) gives that point's mean probability; an empty curve gives 0. Pairs are taken in the
/// given order; `ks` should increase.
pub fn curve_area(ks: &[usize], probs: &[f32], patches: usize) -> f32 {
    let n = ks.len().min(probs.len());
    if n == 0 {
        return 0.0;
    }
    let p = patches.max(1) as f64;
    let x = |i: usize| ks[i] as f64 / p;
    let span = x(n - 1) - x(0);
    if n == 1 || span <= 0.0 {
        return (probs[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
    }
    let area: f64 = (1..n)
        .map(|i| (x(i) - x(i - 1)) * (probs[i] as f64 + probs[i - 1] as f64) / 2.0)
        .sum();
    (area / span) as f32
}

/// Deletion experiments on one output token of one session, with a cache of every set of
/// removed patches already evaluated.
pub struct Deletion<'a> {
    model: &'a dyn PictureScorer,
    ids: Vec<u32>,
    n_input: usize,
    target: u32,
    pixels: Array,
    windows: Vec<Window>,
    regions: Vec<(RegionKind, Range<usize>)>,
    scope: Range<usize>,
    colour: [f32; 3],
    batch: usize,
    known: HashMap<Vec<usize>, f32>,
    passes: usize,
}

impl<'a> Deletion<'a> {
    /// Prepares deletion experiments on output token `token` of `session`.
    pub fn new(
        model: &'a dyn PictureScorer,
        session: &Session,
        token: usize,
    ) -> Result<Self, FaithfulnessError> {
        let (ids, target) = token_ids(session, token)?;
        let grid = session.manifest.model.image_grid;
        let px = &session.pixel_values;
        let fits = px.shape.len() == 3
            && px.shape[0] == 3
            && grid[0] > 0
            && grid[1] > 0
            && px.shape[1] >= grid[0]
            && px.shape[2] >= grid[1];
        if !fits {
            return Err(FaithfulnessError::Pixels {
                shape: px.shape.clone(),
                rows: grid[0],
                cols: grid[1],
            });
        }
        let windows = cell_windows(session, px.shape[1], px.shape[2]);
        Ok(Self::build(
            model,
            session,
            ids,
            target,
            px.clone(),
            windows,
        ))
    }

    /// Deletion experiments on output token `token` of `session` whose cells are removed from
    /// `picture`, `[3, h, w]` values of the rectangle `rect` (`[x0, y0, x1, y1]`, pixels) of the
    /// original image, rather than from the session's pixel values: each cell's window is its
    /// rectangle ([`crate::session::ImageRegion::cell_rect`]) carried onto the picture. The
    /// model then reads such pictures (LLaVA-NeXT / OneVision read the original image and run
    /// the whole anyres processor, so every view sees a deletion).
    pub fn on_picture(
        model: &'a dyn PictureScorer,
        session: &Session,
        token: usize,
        picture: Array,
        rect: [f64; 4],
    ) -> Result<Self, FaithfulnessError> {
        let (ids, target) = token_ids(session, token)?;
        let fits = picture.shape.len() == 3
            && picture.shape[0] == 3
            && picture.shape[1] > 0
            && picture.shape[2] > 0
            && picture.data.len() == picture.shape.iter().product::<usize>();
        if !fits {
            return Err(FaithfulnessError::Picture(picture.shape.clone()));
        }
        let windows = picture_windows(session, rect, picture.shape[1], picture.shape[2]);
        Ok(Self::build(model, session, ids, target, picture, windows))
    }

    fn build(
        model: &'a dyn PictureScorer,
        session: &Session,
        ids: Vec<u32>,
        target: u32,
        pixels: Array,
        windows: Vec<Window>,
    ) -> Self {
        let mut regions = Vec::new();
        let mut start = 0;
        for r in session.regions().iter() {
            regions.push((r.kind, start..start + r.cells()));
            start += r.cells();
        }
        Self {
            model,
            n_input: session.input_ids.len(),
            ids,
            target,
            colour: mean_colour(&pixels),
            pixels,
            scope: 0..windows.len(),
            windows,
            regions,
            batch: DEFAULT_BATCH,
            known: HashMap::new(),
            passes: 0,
        }
    }

    /// Scores only the cells of the image region `region` (maps still give one value per cell of
    /// every region; only this region's values rank the cells removed); `None` scores every
    /// cell, as [`Deletion::new`] does.
    pub fn with_region(mut self, region: Option<RegionKind>) -> Result<Self, FaithfulnessError> {
        self.scope = match region {
            None => 0..self.windows.len(),
            Some(kind) => self
                .regions
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, r)| r.clone())
                .filter(|r| r.end <= self.windows.len())
                .ok_or(FaithfulnessError::NoRegion(kind))?,
        };
        Ok(self)
    }

    /// Sets how many images go through the model at once (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Number of patches P the deletion scores: the cells of every image region, or of the
    /// region chosen with [`Deletion::with_region`].
    pub fn patches(&self) -> usize {
        self.scope.len()
    }

    /// Number of values a map has: one per cell of every image region.
    pub fn cells(&self) -> usize {
        self.windows.len()
    }

    /// Number of modified images the model has read so far.
    pub fn images_run(&self) -> usize {
        self.passes
    }

    /// The image's mean colour in normalised pixel values.
    pub fn colour(&self) -> [f32; 3] {
        self.colour
    }

    fn check_map(&self, map: &[f32]) -> Result<(), FaithfulnessError> {
        if map.len() != self.cells() {
            return Err(FaithfulnessError::MapLength {
                got: map.len(),
                expected: self.cells(),
            });
        }
        Ok(())
    }

    fn check_k(&self, k: usize) -> Result<(), FaithfulnessError> {
        if k > self.patches() {
            return Err(FaithfulnessError::TooMany {
                k,
                patches: self.patches(),
            });
        }
        Ok(())
    }

    /// Probabilities of the target token with each set of patches removed (a set is any
    /// collection of cell indices, over every region's cells; order and repeats do not matter).
    pub fn probabilities(&mut self, sets: &[Vec<usize>]) -> Result<Vec<f32>, FaithfulnessError> {
        let keys: Vec<Vec<usize>> = sets
            .iter()
            .map(|s| {
                let mut k = s.clone();
                k.sort_unstable();
                k.dedup();
                k
            })
            .collect();
        if let Some(&p) = keys.iter().flatten().find(|&&p| p >= self.cells()) {
            return Err(FaithfulnessError::Patch {
                patch: p,
                patches: self.cells(),
            });
        }
        let mut todo: Vec<Vec<usize>> = Vec::new();
        for k in &keys {
            if !self.known.contains_key(k) && !todo.contains(k) {
                todo.push(k.clone());
            }
        }
        for chunk in todo.chunks(self.batch) {
            let probs = self.run(chunk)?;
            for (k, p) in chunk.iter().zip(probs) {
                self.known.insert(k.clone(), p);
            }
        }
        Ok(keys.iter().map(|k| self.known[k]).collect())
    }

    /// The probability with the original image (k = 0).
    pub fn original(&mut self) -> Result<f32, FaithfulnessError> {
        Ok(self.probabilities(&[Vec::new()])?[0])
    }

    /// The deletion curve of `map`: one probability per entry of `ks` (patch counts).
    pub fn curve(&mut self, map: &[f32], ks: &[usize]) -> Result<Vec<f32>, FaithfulnessError> {
        Ok(self.curves(&[map.to_vec()], ks)?.remove(0))
    }

    /// Deletion curves of several maps, their images batched together.
    #[tracing::instrument(name = "faithfulness", skip_all, fields(maps = maps.len(), ks = ks.len()))]
    pub fn curves(
        &mut self,
        maps: &[Vec<f32>],
        ks: &[usize],
    ) -> Result<Vec<Vec<f32>>, FaithfulnessError> {
        for &k in ks {
            self.check_k(k)?;
        }
        let mut sets = Vec::with_capacity(maps.len() * ks.len());
        for map in maps {
            self.check_map(map)?;
            let order: Vec<usize> = patch_order(&map[self.scope.clone()])
                .into_iter()
                .map(|p| p + self.scope.start)
                .collect();
            sets.extend(ks.iter().map(|&k| order[..k].to_vec()));
        }
        let probs = self.probabilities(&sets)?;
        Ok(probs.chunks(ks.len().max(1)).map(<[f32]>::to_vec).collect())
    }

    /// p(original) − p(the map's top `fraction` of patches removed, rounded to a whole count).
    pub fn probability_drop(
        &mut self,
        map: &[f32],
        fraction: f32,
    ) -> Result<f32, FaithfulnessError> {
        Ok(self.probability_drops(&[map.to_vec()], fraction)?[0])
    }

    /// [`Deletion::probability_drop`] of several maps, their images batched together.
    pub fn probability_drops(
        &mut self,
        maps: &[Vec<f32>],
        fraction: f32,
    ) -> Result<Vec<f32>, FaithfulnessError> {
        let k = drop_count(self.patches(), fraction)?;
        Ok(self
            .curves(maps, &[0, k])?
            .iter()
            .map(|curve| curve[0] - curve[1])
            .collect())
    }

    /// Runs the model on the images with the given patch sets removed, all in one batch.
    fn run(&mut self, sets: &[Vec<usize>]) -> Result<Vec<f32>, FaithfulnessError> {
        let hw = (self.pixels.shape[1], self.pixels.shape[2]);
        let pictures: Vec<Vec<f32>> = sets
            .iter()
            .map(|set| fill_windows(&self.pixels, &self.windows, set, self.colour).data)
            .collect();
        let rows = self
            .model
            .next_token_logits(&self.ids, self.n_input, &pictures, hw)?;
        self.passes += sets.len();
        Ok(rows
            .iter()
            .map(|row| softmax_at(row, self.target as usize))
            .collect())
    }
}

/// The ids a deletion of output token `token` re-reads (the prompt, then the answer before the
/// token) and the token's id.
fn token_ids(session: &Session, token: usize) -> Result<(Vec<u32>, u32), FaithfulnessError> {
    let count = session.num_output();
    if token >= count {
        return Err(FaithfulnessError::Token { token, count });
    }
    let to_u32 = |&i: &i64| u32::try_from(i).map_err(|_| FaithfulnessError::BadId(i));
    let mut ids: Vec<u32> = session
        .input_ids
        .iter()
        .map(to_u32)
        .collect::<Result<_, _>>()?;
    for id in &session.output_ids[..token] {
        ids.push(to_u32(id)?);
    }
    let target = to_u32(&session.output_ids[token])?;
    Ok((ids, target))
}

/// The number of patches a probability drop removes: `round(fraction · patches)`; `fraction`
/// must lie in [0, 1].
pub fn drop_count(patches: usize, fraction: f32) -> Result<usize, FaithfulnessError> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(FaithfulnessError::Fraction(fraction));
    }
    Ok((fraction as f64 * patches as f64).round() as usize)
}

/// Softmax probability of entry `i` of a row of logits (0 when `i` is out of range).
pub fn softmax_at(logits: &[f32], i: usize) -> f32 {
    let Some(&li) = logits.get(i) else {
        return 0.0;
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    ((li as f64 - max).exp() / total) as f32
}

/// The deletion curve of `map` (one value per patch, grid order) for output token `token`:
/// the probability of `output_ids[token]` with the map's top-k patches replaced by the mean
/// colour, for each k of `ks` (in that order; k = 0 is the original image).
pub fn deletion_curve(
    model: &dyn PictureScorer,
    session: &Session,
    token: usize,
    map: &[f32],
    ks: &[usize],
) -> Result<Vec<f32>, FaithfulnessError> {
    Deletion::new(model, session, token)?.curve(map, ks)
}

/// Faithfulness of `map` for output token `token`: p(original image) − p(the map's top
/// `fraction` of patches replaced by the mean colour), in [−1, 1]; higher is more faithful.
/// `fraction` must lie in [0, 1] ([`DEFAULT_DROP_FRACTION`] is the usual choice); the number of
/// patches removed is `round(fraction · P)`.
pub fn probability_drop(
    model: &dyn PictureScorer,
    session: &Session,
    token: usize,
    map: &[f32],
    fraction: f32,
) -> Result<f32, FaithfulnessError> {
    Deletion::new(model, session, token)?.probability_drop(map, fraction)
}
