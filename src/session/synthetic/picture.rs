//! The synthetic picture and where its cells lie: a sky-to-grass gradient with a red disc and a
//! yellow square, one grid of cells over it, or a base grid and a stitched high-resolution grid
//! with separators (two regions).

use super::SyntheticSpec;
use crate::session::{Array, ImageRegion, RegionKind};

/// The two objects of the picture, in fractions of the image side: (centre x, centre y, size).
const DISC: (f32, f32, f32) = (0.3, 0.32, 0.2);
const SQUARE: (f32, f32, f32) = (0.7, 0.68, 0.16);

fn in_disc(x: f32, y: f32) -> bool {
    let (cx, cy, r) = DISC;
    (x - cx).powi(2) + (y - cy).powi(2) <= r * r
}

fn in_square(x: f32, y: f32) -> bool {
    let (cx, cy, h) = SQUARE;
    (x - cx).abs() <= h && (y - cy).abs() <= h
}

/// Patches (row-major indices) whose centre lies on object 0 (disc) or 1 (square).
fn object_patches(grid: [usize; 2], object: usize) -> Vec<usize> {
    let [rows, cols] = grid;
    let mut out = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let x = (c as f32 + 0.5) / cols as f32;
            let y = (r as f32 + 0.5) / rows as f32;
            let hit = if object == 0 {
                in_disc(x, y)
            } else {
                in_square(x, y)
            };
            if hit {
                out.push(r * cols + c);
            }
        }
    }
    if out.is_empty() {
        // A grid too coarse to hit the object: take the patch under its centre.
        let (cx, cy, _) = if object == 0 { DISC } else { SQUARE };
        let r = ((cy * rows as f32) as usize).min(rows - 1);
        let c = ((cx * cols as f32) as usize).min(cols - 1);
        out.push(r * cols + c);
    }
    out
}

/// Input positions of the image: the base grid, then the high-resolution rows, each closed by
/// a separator.
pub(super) fn image_len(spec: &SyntheticSpec) -> usize {
    let base = spec.grid[0] * spec.grid[1];
    base + spec.highres.map_or(0, |[rows, cols]| rows * (cols + 1))
}

/// Where the cells of a synthetic image lie inside its span of input positions.
pub(super) struct ImageLayout {
    /// Offsets of the cells inside the span, region by region, each row-major.
    pub(super) cells: Vec<usize>,
    /// Offsets of the cells on object 0 (disc) and 1 (square), in every region.
    pub(super) objects: [Vec<usize>; 2],
    /// The regions over a picture of `size` (`[width, height]`) when there are two; empty for
    /// one (the manifest's image span and grid describe it).
    pub(super) regions: Vec<ImageRegion>,
}

pub(super) fn image_layout(spec: &SyntheticSpec, start: usize, size: [usize; 2]) -> ImageLayout {
    let base = spec.grid[0] * spec.grid[1];
    let mut cells: Vec<usize> = (0..base).collect();
    let mut objects = [object_patches(spec.grid, 0), object_patches(spec.grid, 1)];
    let mut regions = Vec::new();
    if let Some(hi) = spec.highres {
        let [rows, cols] = hi;
        let offset = |i: usize| base + (i / cols) * (cols + 1) + i % cols;
        cells.extend((0..rows * cols).map(offset));
        for (o, object) in objects.iter_mut().enumerate() {
            object.extend(object_patches(hi, o).into_iter().map(offset));
        }
        let rect = [0.0, 0.0, size[0] as f64, size[1] as f64];
        regions = vec![
            ImageRegion {
                kind: RegionKind::Base,
                span: [start, base],
                grid: spec.grid,
                rect,
                separators: Vec::new(),
            },
            ImageRegion {
                kind: RegionKind::Highres,
                span: [start + base, rows * (cols + 1)],
                grid: hi,
                rect,
                separators: (0..rows)
                    .map(|r| start + offset(r * cols + cols - 1) + 1)
                    .collect(),
            },
        ];
    }
    ImageLayout {
        cells,
        objects,
        regions,
    }
}

/// CLIP's normalisation constants (mean, std) per channel.
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

pub(super) fn picture(size: usize) -> Array {
    let mut px = Array::zeros(&[3, size, size]);
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (
                (x as f32 + 0.5) / size as f32,
                (y as f32 + 0.5) / size as f32,
            );
            let rgb = if in_disc(fx, fy) {
                [0.85, 0.12, 0.1]
            } else if in_square(fx, fy) {
                [0.95, 0.85, 0.15]
            } else if fy < 0.55 {
                [0.35 + 0.3 * fy, 0.55 + 0.3 * fy, 0.95]
            } else {
                [0.2, 0.45 + 0.3 * (1.0 - fy), 0.2]
            };
            for (ch, v) in rgb.iter().enumerate() {
                px.data[(ch * size + y) * size + x] = (v - CLIP_MEAN[ch]) / CLIP_STD[ch];
            }
        }
    }
    px
}

/// A non-square picture: the square one, resampled to the grid's aspect.
pub(super) fn rect_picture(grid: [usize; 2], patch_px: usize) -> Array {
    let (h, w) = (grid[0] * patch_px, grid[1] * patch_px);
    let side = h.max(w);
    let square = picture(side);
    let mut px = Array::zeros(&[3, h, w]);
    for ch in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y * side / h, x * side / w);
                px.data[(ch * h + y) * w + x] = square.data[(ch * side + sy) * side + sx];
            }
        }
    }
    px
}
