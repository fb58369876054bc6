//! Image regions (session schema 2): where in the input positions the image's features lie,
//! as one or more rows × cols grids, each covering a rectangle of the original image.
//!
//! A LLaVA-1.5 or Qwen2-VL run has one [`RegionKind::Image`] region; a LLaVA-NeXT / OneVision
//! run has a base view and a stitched high-resolution grid whose rows end in separators.

use serde::{Deserialize, Serialize};

/// Which view of the image a region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionKind {
    /// The whole image as one grid (LLaVA-1.5, Qwen2-VL: the only region).
    Image,
    /// LLaVA-NeXT / OneVision base view (the image resized to the tower's size).
    Base,
    /// LLaVA-NeXT / OneVision high-resolution tiles stitched (and unpadded/pooled) into one grid.
    Highres,
}

impl RegionKind {
    /// The kind's name as the manifest spells it.
    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Image => "image",
            RegionKind::Base => "base",
            RegionKind::Highres => "highres",
        }
    }
}

/// One image region of a session: a rows × cols grid of image-feature positions that covers a
/// rectangle of the original image, laid out row-major inside its span of input positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRegion {
    /// Which view of the image this region is.
    pub kind: RegionKind,
    /// `[start, len]` in input positions; len = rows·cols + separators.len().
    pub span: [usize; 2],
    /// `[rows, cols]` of cells.
    pub grid: [usize; 2],
    /// `[x0, y0, x1, y1]` of the original image (pixels, f64) the grid covers; cell (r, c) covers
    /// the r-th row / c-th column of an even rows × cols split of that rectangle.
    pub rect: [f64; 4],
    /// Absolute input positions inside `span` that are separators (LLaVA-NeXT's image_newline
    /// after each row), not cells; ascending. Empty for Image / Base.
    #[serde(default)]
    pub separators: Vec<usize>,
}

impl ImageRegion {
    /// Number of cells (rows·cols).
    pub fn cells(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// Absolute input positions of the cells in row-major order, skipping separators.
    pub fn cell_positions(&self) -> Vec<usize> {
        let [start, len] = self.span;
        let mut seps = self.separators.iter().peekable();
        let mut out = Vec::with_capacity(len.saturating_sub(self.separators.len()));
        for p in start..start + len {
            while seps.next_if(|&&s| s < p).is_some() {}
            if seps.next_if_eq(&&p).is_none() {
                out.push(p);
            }
        }
        out
    }

    /// Width / height of the rectangle the region covers (1 for a degenerate rectangle).
    pub fn aspect(&self) -> f64 {
        let [x0, y0, x1, y1] = self.rect;
        let (w, h) = (x1 - x0, y1 - y0);
        if w > 0.0 && h > 0.0 && (w / h).is_finite() {
            w / h
        } else {
            1.0
        }
    }

    /// `[x0, y0, x1, y1]` of cell (r, c) in original-image pixels.
    pub fn cell_rect(&self, r: usize, c: usize) -> [f64; 4] {
        let [x0, y0, x1, y1] = self.rect;
        let [rows, cols] = self.grid;
        let (cw, ch) = (
            (x1 - x0) / cols.max(1) as f64,
            (y1 - y0) / rows.max(1) as f64,
        );
        [
            x0 + c as f64 * cw,
            y0 + r as f64 * ch,
            x0 + (c + 1) as f64 * cw,
            y0 + (r + 1) as f64 * ch,
        ]
    }
}

/// The rectangle of an `original` (`[width, height]`) image that a square vision-tower input
/// sees under an image mode of LLaVA-1.5 (`default`/`crop`: the centred square of the shorter
/// side; `resize`: the whole image, stretched; `pad`: the centred square of the longer side,
/// the image inside it), and the whole image for any other mode (`native`).
pub fn square_input_rect(mode: &str, original: [u32; 2]) -> [f64; 4] {
    let (w, h) = (original[0] as f64, original[1] as f64);
    let centred = |side: f64| {
        let (x0, y0) = ((w - side) / 2.0, (h - side) / 2.0);
        [x0, y0, x0 + side, y0 + side]
    };
    match mode {
        "default" | "crop" => centred(w.min(h)),
        "pad" => centred(w.max(h)),
        _ => [0.0, 0.0, w, h],
    }
}

/// The one region a schema 1 file describes: its image span, less a leading CLS feature when
/// the span holds one more position than the grid, covering [`square_input_rect`] of the image.
/// `None` when the grid does not fit the span (the file is refused for it).
pub fn schema1_region(
    image_span: [usize; 2],
    grid: [usize; 2],
    mode: &str,
    original: [u32; 2],
) -> Option<ImageRegion> {
    let [start, len] = image_span;
    let cells = grid[0].checked_mul(grid[1])?;
    let span = if cells == len {
        [start, len]
    } else if cells.checked_add(1) == Some(len) {
        [start + 1, cells]
    } else {
        return None;
    };
    Some(ImageRegion {
        kind: RegionKind::Image,
        span,
        grid,
        rect: square_input_rect(mode, original),
        separators: Vec::new(),
    })
}

/// Checks `regions` against the session they belong to: `n` input positions, its image span
/// and the original image size; the first failure as one sentence. Nothing here allocates by a
/// size it has not checked against `n`.
pub fn check_regions(
    regions: &[ImageRegion],
    n: usize,
    image_span: [usize; 2],
    original: [u32; 2],
) -> Result<(), String> {
    let [img_start, img_len] = image_span;
    let img_end = img_start.saturating_add(img_len);
    let (w, h) = (original[0] as f64, original[1] as f64);
    let side = w.max(h);
    let bounds = [
        (w - side) / 2.0,
        (h - side) / 2.0,
        (w + side) / 2.0,
        (h + side) / 2.0,
    ];
    let mut prev_end = 0usize;
    for (i, r) in regions.iter().enumerate() {
        let what = format!("image region {i} ({})", r.kind.name());
        let [start, len] = r.span;
        let end = start.checked_add(len).filter(|&e| e <= n).ok_or_else(|| {
            format!("{what} spans [{start}, {len}], outside the {n} input positions")
        })?;
        if start < img_start || end > img_end {
            return Err(format!(
                "{what} spans [{start}, {len}], outside the image span [{img_start}, {img_len}]"
            ));
        }
        if i > 0 && start < prev_end {
            return Err(format!(
                "{what} overlaps the region before it or is out of input order"
            ));
        }
        prev_end = end;
        let [rows, cols] = r.grid;
        let total = rows
            .checked_mul(cols)
            .and_then(|c| c.checked_add(r.separators.len()));
        if rows == 0 || cols == 0 || total != Some(len) {
            return Err(format!(
                "{what} claims a {rows}x{cols} grid and {} separators, but its span holds {len} \
                 positions",
                r.separators.len()
            ));
        }
        let ascending = r.separators.windows(2).all(|p| p[0] < p[1]);
        if !ascending || r.separators.iter().any(|&p| p < start || p >= end) {
            return Err(format!(
                "{what} has separators that are not ascending positions inside its span"
            ));
        }
        let [x0, y0, x1, y1] = r.rect;
        let finite = r.rect.iter().all(|v| v.is_finite());
        let inside = x0 >= bounds[0] - 0.5
            && y0 >= bounds[1] - 0.5
            && x1 <= bounds[2] + 0.5
            && y1 <= bounds[3] + 0.5;
        if !finite || x0 >= x1 || y0 >= y1 || !inside {
            return Err(format!(
                "{what} covers the rectangle {:?}, which is not inside the {}x{} image",
                r.rect, original[0], original[1]
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(span: [usize; 2], grid: [usize; 2], separators: Vec<usize>) -> ImageRegion {
        ImageRegion {
            kind: RegionKind::Highres,
            span,
            grid,
            rect: [0.0, 0.0, 40.0, 20.0],
            separators,
        }
    }

    #[test]
    fn cell_positions_skip_separators() {
        let r = region([10, 8], [2, 3], vec![13, 17]);
        assert_eq!(r.cells(), 6);
        assert_eq!(r.cell_positions(), vec![10, 11, 12, 14, 15, 16]);
        assert_eq!(r.aspect(), 2.0);
        assert_eq!(r.cell_rect(1, 2), [80.0 / 3.0, 10.0, 40.0, 20.0]);
    }

    #[test]
    fn schema1_region_skips_a_leading_cls_feature() {
        let r = schema1_region([5, 5], [2, 2], "resize", [48, 36]).unwrap();
        assert_eq!(r.span, [6, 4]);
        assert_eq!(r.rect, [0.0, 0.0, 48.0, 36.0]);
        assert!(schema1_region([5, 6], [2, 2], "default", [48, 36]).is_none());
        let crop = schema1_region([5, 4], [2, 2], "default", [48, 36]).unwrap();
        assert_eq!(crop.rect, [6.0, 0.0, 42.0, 36.0]);
        let pad = schema1_region([5, 4], [2, 2], "pad", [48, 36]).unwrap();
        assert_eq!(pad.rect, [0.0, -6.0, 48.0, 42.0]);
    }

    #[test]
    fn check_refuses_each_kind_of_lie() {
        let ok = region([2, 8], [2, 3], vec![5, 9]);
        assert_eq!(
            check_regions(std::slice::from_ref(&ok), 12, [2, 8], [40, 20]),
            Ok(())
        );
        let lies: Vec<(ImageRegion, &str)> = vec![
            (region([2, 20], [2, 3], vec![]), "input positions"),
            (region([1, 8], [2, 3], vec![5, 9]), "image span"),
            (region([2, 8], [3, 3], vec![5, 9]), "grid"),
            (region([2, 8], [2, 3], vec![9, 5]), "separators"),
            (region([2, 8], [2, 3], vec![5, 10]), "separators"),
            (
                ImageRegion {
                    rect: [0.0, 0.0, f64::NAN, 20.0],
                    ..ok.clone()
                },
                "rectangle",
            ),
            (
                ImageRegion {
                    rect: [0.0, 0.0, 400.0, 20.0],
                    ..ok.clone()
                },
                "rectangle",
            ),
        ];
        for (r, word) in lies {
            let e = check_regions(std::slice::from_ref(&r), 12, [2, 8], [40, 20]).unwrap_err();
            assert!(e.contains(word), "{r:?}: {e}");
        }
        let a = region([2, 4], [2, 2], vec![]);
        let b = region([4, 4], [2, 2], vec![]);
        let e = check_regions(&[a, b], 12, [2, 8], [40, 20]).unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
    }
}
