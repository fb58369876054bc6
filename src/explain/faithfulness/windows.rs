//! Where each cell of a session's image regions lies in the picture a deletion modifies, the
//! picture's mean colour and the filling of those windows.

use crate::session::{Array, ImageRegion, RegionKind, Session};

/// Pixel rows (or columns) of grid row (column) `i` of `n` over `len` pixels.
fn cell_range(i: usize, n: usize, len: usize) -> std::ops::Range<usize> {
    i * len / n..(i + 1) * len / n
}

/// The pixel window of one cell: rows `.0`, columns `.1` of the `[3, h, w]` picture.
pub type Window = (std::ops::Range<usize>, std::ops::Range<usize>);

/// The windows of a `[rows, cols]` grid that splits an `h`×`w` picture evenly, row-major.
fn grid_windows(grid: [usize; 2], h: usize, w: usize) -> Vec<Window> {
    let [rows, cols] = grid;
    (0..rows * cols)
        .map(|p| (cell_range(p / cols, rows, h), cell_range(p % cols, cols, w)))
        .collect()
}

/// The windows of `region`'s cells, row-major, in an `h`×`w` picture that shows the rectangle
/// `rect` (`[x0, y0, x1, y1]`, original-image pixels) of the image: each cell's rectangle
/// carried onto the picture, its edges floored (and clamped to the picture).
fn region_windows(region: &ImageRegion, rect: [f64; 4], h: usize, w: usize) -> Vec<Window> {
    let [bx0, by0, bx1, by1] = rect;
    let to_px = |v: f64, lo: f64, hi: f64, len: usize| {
        let x = (v - lo) / (hi - lo) * len as f64;
        ((x + 1e-9).floor().max(0.0) as usize).min(len)
    };
    let [rows, cols] = region.grid;
    (0..rows)
        .flat_map(|row| (0..cols).map(move |col| (row, col)))
        .map(|(row, col)| {
            let [x0, y0, x1, y1] = region.cell_rect(row, col);
            (
                to_px(y0, by0, by1, h)..to_px(y1, by0, by1, h),
                to_px(x0, bx0, bx1, w)..to_px(x1, bx0, bx1, w),
            )
        })
        .collect()
}

/// The pixel window of every cell of `session`'s image regions (in the order of
/// [`Session::cell_positions`]) in its `h`×`w` picture: the first region's grid splits the
/// picture evenly; a later region's cells are their rectangles of the original image carried
/// through the first region's rectangle onto the picture.
pub fn cell_windows(session: &Session, h: usize, w: usize) -> Vec<Window> {
    let regions = session.regions();
    let Some(first) = regions.first() else {
        return Vec::new();
    };
    let mut out = grid_windows(first.grid, h, w);
    for r in regions.iter().skip(1) {
        out.extend(region_windows(r, first.rect, h, w));
    }
    out
}

/// The pixel window of every cell of `session`'s image regions (in the order of
/// [`Session::cell_positions`]) in an `h`×`w` picture of the rectangle `rect` of the original
/// image (`[0, 0, width, height]` for the whole image): every region's cells carried through
/// `rect` ([`ImageRegion::cell_rect`]).
pub fn picture_windows(session: &Session, rect: [f64; 4], h: usize, w: usize) -> Vec<Window> {
    session
        .regions()
        .iter()
        .flat_map(|r| region_windows(r, rect, h, w))
        .collect()
}

/// Per-channel mean of `[3, h, w]` pixel values.
pub fn mean_colour(pixels: &Array) -> [f32; 3] {
    let plane = pixels.data.len() / 3;
    let mut out = [0f32; 3];
    if plane == 0 {
        return out;
    }
    for (c, o) in out.iter_mut().enumerate() {
        let sum: f64 = pixels.data[c * plane..(c + 1) * plane]
            .iter()
            .map(|&v| v as f64)
            .sum();
        *o = (sum / plane as f64) as f32;
    }
    out
}

/// A copy of `pixels` `[3, h, w]` with the pixels of `patches` (row-major indices into a
/// `grid` `[rows, cols]` that splits the image evenly) set to `colour`.
pub fn fill_patches(
    pixels: &Array,
    grid: [usize; 2],
    patches: &[usize],
    colour: [f32; 3],
) -> Array {
    let windows = grid_windows(grid, pixels.shape[1], pixels.shape[2]);
    fill_windows(pixels, &windows, patches, colour)
}

/// A copy of `pixels` `[3, h, w]` with the windows of `cells` (indices into `windows`) set to
/// `colour`.
pub fn fill_windows(
    pixels: &Array,
    windows: &[Window],
    cells: &[usize],
    colour: [f32; 3],
) -> Array {
    let mut out = pixels.clone();
    let (h, w) = (pixels.shape[1], pixels.shape[2]);
    for (ys, xs) in cells.iter().filter_map(|&c| windows.get(c)) {
        for (ch, &value) in colour.iter().enumerate() {
            for y in ys.clone() {
                let row = (ch * h + y) * w;
                out.data[row + xs.start..row + xs.end].fill(value);
            }
        }
    }
    out
}

/// The region whose cells a deletion on `session` scores when none is asked for: the
/// high-resolution grid of a LLaVA-NeXT / OneVision session, else every cell (`None`).
pub fn scored_region(session: &Session) -> Option<RegionKind> {
    session
        .regions()
        .iter()
        .any(|r| r.kind == RegionKind::Highres)
        .then_some(RegionKind::Highres)
}
