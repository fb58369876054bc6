//! Pure localisation metrics of a per-patch map against an object mask: the pointing game and
//! the mass inside the mask. No model, no terminal.
//!
//! Both work at the level of the vision tower's patch grid. A mask is brought to that grid as
//! its *coverage*: for each patch, the fraction of the patch's pixels that belong to the object
//! ([`patch_coverage`]).
//!
//! - **Pointing game** ([`pointing_hit`]): the map's highest patch must lie on the object. A
//!   patch counts as on the object when at least half of its pixels are the object's
//!   (coverage ≥ 0.5), and, so that a small object that covers no patch by half still has a
//!   target, the patch(es) of the object's largest coverage count too ([`target_patches`]).
//!   The map's highest patch is its first maximum in patch order; a map with no positive finite
//!   value points nowhere and misses.
//! - **Pointing game with a tolerance** ([`pointing_tolerance`]), as Zhang et al. (ECCV 2016,
//!   "Top-down neural attention by excitation backprop") define it: a hit when the map's
//!   maximum point lies within [`ZHANG_TOLERANCE_PX`] pixels of the object, at their image
//!   scale (see [`zhang_tolerance`] for how it is carried to our image and patch size).
//! - **Mass in mask** ([`mass_in_mask`]): the share of the map's non-negative mass that falls on
//!   the object, each patch's mass weighted by its coverage: `Σ max(m,0)·cov / Σ max(m,0)`. It
//!   is 1 when all the mass lies on patches the object covers entirely, and at most the largest
//!   coverage of any patch in general; a map with no positive mass scores 0.

use crate::demo::Mask;
use crate::session::ImageRegion;

/// Coverage of each cell of a `rows × cols` grid (row-major) by `mask`: the fraction of the
/// cell's pixels that are in the mask, in [0, 1]. Cells split the image as evenly as integer
/// pixel bounds allow (`r·h/rows .. (r+1)·h/rows`); a cell without pixels has coverage 0.
pub fn patch_coverage(mask: &Mask, rows: usize, cols: usize) -> Vec<f32> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let mut cover = vec![0f32; rows * cols];
    for r in 0..rows {
        let (y0, y1) = (r * h / rows, (r + 1) * h / rows);
        for c in 0..cols {
            let (x0, x1) = (c * w / cols, (c + 1) * w / cols);
            let area = (y1 - y0) * (x1 - x0);
            if area == 0 {
                continue;
            }
            let inside = (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| mask.get(x as u32, y as u32))
                .count();
            cover[r * cols + c] = inside as f32 / area as f32;
        }
    }
    cover
}

/// Coverage of every cell of `regions` (region by region, each row-major) by `mask`, a mask of
/// the whole `original` (`[width, height]`) image: each cell's rectangle of the original image
/// carried onto the mask's pixels (integer bounds, floored), the fraction of its pixels in the
/// mask; parts of a cell outside the image (a padded view) count as not in the mask. For one
/// region over the whole image this is [`patch_coverage`].
pub fn region_coverage(mask: &Mask, regions: &[ImageRegion], original: [u32; 2]) -> Vec<f32> {
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let sx = w as f64 / original[0].max(1) as f64;
    let sy = h as f64 / original[1].max(1) as f64;
    let px = |v: f64, scale: f64| (v * scale + 1e-9).floor() as i64;
    let mut cover = Vec::new();
    for r in regions {
        for (row, col) in (0..r.grid[0]).flat_map(|row| (0..r.grid[1]).map(move |c| (row, c))) {
            let [x0, y0, x1, y1] = r.cell_rect(row, col);
            let (x0, x1, y0, y1) = (px(x0, sx), px(x1, sx), px(y0, sy), px(y1, sy));
            let area = (x1 - x0).max(0) * (y1 - y0).max(0);
            if area == 0 {
                cover.push(0.0);
                continue;
            }
            let (cx0, cx1) = (x0.clamp(0, w), x1.clamp(0, w));
            let (cy0, cy1) = (y0.clamp(0, h), y1.clamp(0, h));
            let inside = (cy0..cy1)
                .flat_map(|y| (cx0..cx1).map(move |x| (x, y)))
                .filter(|&(x, y)| mask.get(x as u32, y as u32))
                .count();
            cover.push(inside as f32 / area as f32);
        }
    }
    cover
}

/// The patches that count as on the object for the pointing game: coverage ≥ 0.5, plus every
/// patch of the largest (non-zero) coverage. Empty when the coverage is zero everywhere.
pub fn target_patches(coverage: &[f32]) -> Vec<usize> {
    let best = coverage.iter().copied().fold(0f32, f32::max);
    if best <= 0.0 {
        return Vec::new();
    }
    coverage
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c >= 0.5 || c == best)
        .map(|(i, _)| i)
        .collect()
}

/// The map's highest patch: its first maximum in patch order, or `None` when no value is
/// positive and finite.
pub fn map_argmax(map: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in map.iter().enumerate() {
        if v.is_finite() && v > 0.0 && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Pointing game: whether the map's highest patch is one of the object's [`target_patches`]
/// (`coverage` from [`patch_coverage`], same length as `map`).
pub fn pointing_hit(map: &[f32], coverage: &[f32]) -> bool {
    match map_argmax(map) {
        Some(top) => target_patches(coverage).contains(&top),
        None => false,
    }
}

/// The share of its pixels an object must cover in a patch for [`pointing_overlap`]: the
/// "object patches" of `tools/probe_demo.py`.
pub const OVERLAP_COVER: f32 = 0.25;

/// A looser pointing game: whether the map's highest patch is at least [`OVERLAP_COVER`]
/// covered by the object (a head that looks at an object's edge, where its colour is, hits).
pub fn pointing_overlap(map: &[f32], coverage: &[f32]) -> bool {
    map_argmax(map)
        .and_then(|top| coverage.get(top))
        .is_some_and(|&c| c >= OVERLAP_COVER)
}

/// Share of the map's non-negative mass on the object, each patch weighted by its coverage, in
/// [0, 1]; 0 when the map has no positive finite mass. Non-finite values count as 0.
pub fn mass_in_mask(map: &[f32], coverage: &[f32]) -> f32 {
    let mut total = 0f64;
    let mut inside = 0f64;
    for (&m, &c) in map.iter().zip(coverage) {
        let m = if m.is_finite() {
            m.max(0.0) as f64
        } else {
            0.0
        };
        total += m;
        inside += m * c.clamp(0.0, 1.0) as f64;
    }
    if total > 0.0 {
        (inside / total).clamp(0.0, 1.0) as f32
    } else {
        0.0
    }
}

/// The tolerance of Zhang et al.'s pointing game, in pixels of their images.
pub const ZHANG_TOLERANCE_PX: f64 = 15.0;

/// The long side of the images Zhang et al. point on: their maps are resized to the PASCAL
/// VOC 2007 / COCO test image (at most 500 px on the long side) before the maximum is taken.
pub const ZHANG_IMAGE_SIDE_PX: f64 = 500.0;

/// The 15-pixel tolerance carried to an image whose long side is `long_side` pixels: the same
/// share of the long side (15 / 500 = 3 %). For the demo's 64-px scenes that is 1.92 px, a
/// quarter of an 8-px patch; for LLaVA-1.5's 336-px input 10.1 px, 0.72 of a 14-px patch.
pub fn zhang_tolerance(long_side: u32) -> f64 {
    ZHANG_TOLERANCE_PX * long_side as f64 / ZHANG_IMAGE_SIDE_PX
}

/// Pointing game with a tolerance (Zhang et al. 2016): whether the map's maximum point lies
/// within `tolerance` pixels of the object of `mask`. The map is a `rows × cols` grid over the
/// mask's image (cells split as [`patch_coverage`] splits them); its maximum point is the
/// centre of its highest cell ([`map_argmax`]), where a bilinearly upsampled map peaks. The
/// distance is measured to the nearest object pixel, a pixel being the unit square it covers
/// (so a point on the object is at distance 0). A map that points nowhere misses.
pub fn pointing_tolerance(map: &[f32], mask: &Mask, grid: [usize; 2], tolerance: f64) -> bool {
    let [rows, cols] = grid;
    let Some(top) = map_argmax(map).filter(|&i| rows * cols > 0 && i < rows * cols) else {
        return false;
    };
    let (w, h) = (mask.width() as f64, mask.height() as f64);
    let (r, c) = (top / cols, top % cols);
    let px = (c as f64 + 0.5) * w / cols as f64;
    let py = (r as f64 + 0.5) * h / rows as f64;
    near_object(mask, px, py, tolerance)
}

/// [`pointing_tolerance`] of a map over the cells of `region` (one value per cell, row-major),
/// `mask` a mask of the whole `original` (`[width, height]`) image: the map's maximum point is
/// the centre of its highest cell's rectangle ([`ImageRegion::cell_rect`]) carried onto the
/// mask's pixels. For a region over the whole image this is [`pointing_tolerance`].
pub fn pointing_tolerance_in(
    map: &[f32],
    mask: &Mask,
    region: &ImageRegion,
    original: [u32; 2],
    tolerance: f64,
) -> bool {
    let [rows, cols] = region.grid;
    let Some(top) = map_argmax(map).filter(|&i| rows * cols > 0 && i < rows * cols) else {
        return false;
    };
    let sx = mask.width() as f64 / original[0].max(1) as f64;
    let sy = mask.height() as f64 / original[1].max(1) as f64;
    let [x0, y0, x1, y1] = region.rect;
    let (r, c) = (top / cols, top % cols);
    let px = x0 * sx + (c as f64 + 0.5) * ((x1 - x0) * sx) / cols as f64;
    let py = y0 * sy + (r as f64 + 0.5) * ((y1 - y0) * sy) / rows as f64;
    near_object(mask, px, py, tolerance)
}

/// Whether an object pixel of `mask` (a unit square) lies within `tolerance` of the point
/// (`px`, `py`).
fn near_object(mask: &Mask, px: f64, py: f64, tolerance: f64) -> bool {
    let reach = tolerance.max(0.0);
    let x0 = (px - reach - 1.0).floor().max(0.0) as u32;
    let x1 = ((px + reach + 1.0).ceil().max(0.0) as u32).min(mask.width());
    let y0 = (py - reach - 1.0).floor().max(0.0) as u32;
    let y1 = ((py + reach + 1.0).ceil().max(0.0) as u32).min(mask.height());
    (y0..y1).any(|y| {
        (x0..x1).any(|x| {
            if !mask.get(x, y) {
                return false;
            }
            let dx = (x as f64 - px).max(px - (x as f64 + 1.0)).max(0.0);
            let dy = (y as f64 - py).max(py - (y as f64 + 1.0)).max(0.0);
            dx.hypot(dy) <= reach
        })
    })
}
