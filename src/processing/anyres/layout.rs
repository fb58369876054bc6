//! Where the image features of an anyres image come from: the best resolution, the tile grid,
//! the unpadded crop of the stitched grid, OneVision's pooling, the newline after each row.
//! The processor counts image tokens with it and the model packs its features with it, so the
//! two agree by construction. Every rule mirrors transformers 5 (tests/fixtures/README.md,
//! "LLaVA-NeXT and LLaVA-OneVision").

/// transformers' `select_best_resolution`: the pinpoint `[height, width]` that keeps the most
/// of the image's pixels after an aspect-keeping downscale (`int()` of each side), ties broken
/// by the least wasted area; the first such pinpoint wins.
pub fn select_best_resolution(image_hw: [usize; 2], pinpoints: &[[usize; 2]]) -> [usize; 2] {
    let (oh, ow) = (image_hw[0] as f64, image_hw[1] as f64);
    let mut best = pinpoints.first().copied().unwrap_or(image_hw);
    let (mut max_effective, mut min_wasted) = (0usize, usize::MAX);
    for &[h, w] in pinpoints {
        let scale = (w as f64 / ow).min(h as f64 / oh);
        let (dw, dh) = ((ow * scale) as usize, (oh * scale) as usize);
        let effective = (dw * dh).min(image_hw[0] * image_hw[1]);
        let wasted = (w * h).saturating_sub(effective);
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            max_effective = effective;
            min_wasted = wasted;
            best = [h, w];
        }
    }
    best
}

/// transformers' `get_patch_output_size`: the `[height, width]` the image is resized to inside
/// `target` keeping its aspect: the limiting side exactly, the other `min(ceil(side·scale),
/// target)`.
pub fn patch_output_size(image_hw: [usize; 2], target: [usize; 2]) -> [usize; 2] {
    let (oh, ow) = (image_hw[0] as f64, image_hw[1] as f64);
    let scale_w = target[1] as f64 / ow;
    let scale_h = target[0] as f64 / oh;
    if scale_w < scale_h {
        [((oh * scale_w).ceil() as usize).min(target[0]), target[1]]
    } else {
        [target[0], ((ow * scale_h).ceil() as usize).min(target[1])]
    }
}

/// Python's `int(round(x, 7))` for the non-negative sizes `unpad_image` rounds.
fn int_round7(x: f64) -> usize {
    ((x * 1e7).round() / 1e7).trunc() as usize
}

/// The token rule of an anyres processor: features per tile side, base-view features and
/// OneVision's `anyres_max_N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRule {
    /// Features along one side of a tile (tile pixels / patch pixels).
    pub side: usize,
    /// Features of the base view (side², CLS dropped or never there).
    pub base: usize,
    /// `anyres_max_N` (OneVision); `None`: no pooling (NeXT).
    pub max_tiles: Option<usize>,
}

/// The layout of one image's features. Cells are feature positions of the stitched canvas
/// (`tiles × side` a side); `crop` is the unpadded part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresLayout {
    /// `[height, width]` of the original image.
    pub image_hw: [usize; 2],
    /// The chosen pinpoint `[height, width]` (canvas pixels).
    pub best_hw: [usize; 2],
    /// `[height, width]` the image is resized to inside the canvas.
    pub fitted_hw: [usize; 2],
    /// `[top, left]` pixel offset of the fitted image in the canvas (odd pixel bottom/right).
    pub paste: [usize; 2],
    /// Tile side in pixels.
    pub tile_px: usize,
    /// `[rows, cols]` of tiles.
    pub tiles_hw: [usize; 2],
    /// The token rule.
    pub rule: TokenRule,
    /// `[top, left, height, width]` of the unpadded cells in the canvas.
    pub crop: [usize; 4],
    /// `[rows, cols]` of the stitched grid after pooling (= the crop's size when not pooled).
    pub grid: [usize; 2],
}

/// One image-feature row of the packed features: a weighted sum of per-tile projector rows
/// (index `view · side² + cell`), or the image newline.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureSource {
    /// A sum of `(projector row, weight)`.
    Cells(Vec<(usize, f32)>),
    /// The `image_newline` vector.
    Newline,
}

impl AnyresLayout {
    /// The layout of an image of `image_hw` pixels.
    pub fn new(
        image_hw: [usize; 2],
        pinpoints: &[[usize; 2]],
        tile_px: usize,
        rule: TokenRule,
    ) -> Self {
        let best_hw = select_best_resolution(image_hw, pinpoints);
        let fitted_hw = patch_output_size(image_hw, best_hw);
        let paste = [
            (best_hw[0] - fitted_hw[0]) / 2,
            (best_hw[1] - fitted_hw[1]) / 2,
        ];
        let tiles_hw = [best_hw[0] / tile_px, best_hw[1] / tile_px];
        let (ch, cw) = (tiles_hw[0] * rule.side, tiles_hw[1] * rule.side);
        // unpad_image: the padding is (current - int(round(original · scale, 7))) // 2 on BOTH
        // sides, so an odd difference leaves one padded row/column in (README: tall image).
        let (oh, ow) = (image_hw[0] as f64, image_hw[1] as f64);
        let crop = if ow / oh > cw as f64 / ch as f64 {
            let new_h = int_round7(oh * (cw as f64 / ow)).min(ch);
            let pad = (ch - new_h) / 2;
            [pad, 0, ch - 2 * pad, cw]
        } else {
            let new_w = int_round7(ow * (ch as f64 / oh)).min(cw);
            let pad = (cw - new_w) / 2;
            [0, pad, ch, cw - 2 * pad]
        };
        let grid = match rule.max_tiles {
            Some(n) => {
                let (h, w) = (crop[2] as f64, crop[3] as f64);
                let ratio = (h * w / (n as f64 * (rule.side * rule.side) as f64)).sqrt();
                if ratio > 1.1 {
                    [(h / ratio).floor() as usize, (w / ratio).floor() as usize]
                } else {
                    [crop[2], crop[3]]
                }
            }
            None => [crop[2], crop[3]],
        };
        Self {
            image_hw,
            best_hw,
            fitted_hw,
            paste,
            tile_px,
            tiles_hw,
            rule,
            crop,
            grid,
        }
    }

    /// Number of views the tower sees: the base view and the tiles.
    pub fn views(&self) -> usize {
        1 + self.tiles_hw[0] * self.tiles_hw[1]
    }

    /// Whether OneVision's pooling changed the grid.
    pub fn pooled(&self) -> bool {
        self.grid != [self.crop[2], self.crop[3]]
    }

    /// Number of image tokens: the base features, then each grid row and its newline.
    pub fn num_tokens(&self) -> usize {
        self.rule.base + self.grid[0] * (self.grid[1] + 1)
    }

    /// Offsets (from the first image token) of the newline tokens, one after each grid row.
    pub fn newline_offsets(&self) -> Vec<usize> {
        (0..self.grid[0])
            .map(|r| self.rule.base + r * (self.grid[1] + 1) + self.grid[1])
            .collect()
    }

    /// The projector row (view-major, `side²` rows a view) of canvas cell `(y, x)`.
    fn cell_row(&self, y: usize, x: usize) -> usize {
        let s = self.rule.side;
        let tile = 1 + (y / s) * self.tiles_hw[1] + x / s;
        tile * s * s + (y % s) * s + x % s
    }

    /// Where each of the [`num_tokens`](Self::num_tokens) image features comes from, in order:
    /// the base view's rows, then the grid row-major with a newline after each row. Pooled
    /// cells carry the weights of `F.interpolate(mode="bilinear", align_corners=False)`,
    /// computed in f32 as torch does on CPU (source `(i + 0.5)·in/out − 0.5`, clamped at 0).
    pub fn sources(&self) -> Vec<FeatureSource> {
        let mut out: Vec<FeatureSource> = (0..self.rule.base)
            .map(|j| FeatureSource::Cells(vec![(j, 1.0)]))
            .collect();
        let [top, left, h, w] = self.crop;
        let taps = |len: usize, out_len: usize| -> Vec<[(usize, f32); 2]> {
            let scale = len as f32 / out_len as f32;
            (0..out_len)
                .map(|i| {
                    let src = ((i as f32 + 0.5) * scale - 0.5).max(0.0);
                    let i0 = (src.floor() as usize).min(len - 1);
                    let i1 = (i0 + 1).min(len - 1);
                    let l1 = src - i0 as f32;
                    [(i0, 1.0 - l1), (i1, l1)]
                })
                .collect()
        };
        let rows = taps(h, self.grid[0]);
        let cols = taps(w, self.grid[1]);
        for (r, row_taps) in rows.iter().enumerate() {
            for (c, col_taps) in cols.iter().enumerate() {
                let cells = if self.pooled() {
                    let mut v = Vec::with_capacity(4);
                    for &(y, wy) in row_taps {
                        for &(x, wx) in col_taps {
                            v.push((self.cell_row(top + y, left + x), wy * wx));
                        }
                    }
                    v
                } else {
                    vec![(self.cell_row(top + r, left + c), 1.0)]
                };
                out.push(FeatureSource::Cells(cells));
            }
            out.push(FeatureSource::Newline);
        }
        out
    }

    /// `[x0, y0, x1, y1]` of the original image (pixels) the stitched grid covers: the crop's
    /// canvas pixels mapped back through the paste offset and the fit scale (it may reach a
    /// little past the image where unpad keeps a padded column).
    pub fn highres_rect(&self) -> [f64; 4] {
        let cell = self.tile_px as f64 / self.rule.side as f64;
        let [top, left, h, w] = self.crop;
        let sy = self.image_hw[0] as f64 / self.fitted_hw[0] as f64;
        let sx = self.image_hw[1] as f64 / self.fitted_hw[1] as f64;
        let y = |c: usize| (c as f64 * cell - self.paste[0] as f64) * sy;
        let x = |c: usize| (c as f64 * cell - self.paste[1] as f64) * sx;
        [x(left), y(top), x(left + w), y(top + h)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEXT: [[usize; 2]; 4] = [[32, 32], [32, 64], [64, 32], [64, 64]];
    const RULE: TokenRule = TokenRule {
        side: 4,
        base: 16,
        max_tiles: None,
    };

    #[test]
    fn wide_and_tall_as_the_fixtures() {
        let wide = AnyresLayout::new([36, 48], &NEXT, 32, RULE);
        assert_eq!(wide.best_hw, [64, 64]);
        assert_eq!(wide.fitted_hw, [48, 64]);
        assert_eq!(wide.paste, [8, 0]);
        assert_eq!(wide.crop, [1, 0, 6, 8]);
        assert_eq!(wide.num_tokens(), 70);
        let tall = AnyresLayout::new([64, 30], &NEXT, 32, RULE);
        assert_eq!(tall.best_hw, [64, 32]);
        assert_eq!(tall.crop, [0, 0, 8, 4]);
        assert_eq!(tall.num_tokens(), 56);
        let ov = TokenRule {
            max_tiles: Some(1),
            ..RULE
        };
        let pin: Vec<[usize; 2]> = [32, 64, 96]
            .iter()
            .flat_map(|&h| [32, 64, 96].map(|w| [h, w]))
            .collect();
        assert_eq!(AnyresLayout::new([36, 48], &pin, 32, ov).grid, [3, 4]);
        assert_eq!(AnyresLayout::new([64, 30], &pin, 32, ov).grid, [5, 2]);
    }

    #[test]
    fn pooled_weights_sum_to_one() {
        let pin = [[64, 64]];
        let l = AnyresLayout::new(
            [36, 48],
            &pin,
            32,
            TokenRule {
                max_tiles: Some(1),
                ..RULE
            },
        );
        for s in l.sources() {
            if let FeatureSource::Cells(c) = s {
                let total: f32 = c.iter().map(|x| x.1).sum();
                assert!((total - 1.0).abs() < 1e-6);
            }
        }
    }
}
