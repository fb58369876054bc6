//! Boolean object masks and their run-length encoding.

use serde::{Deserialize, Serialize};

/// Why a run-length encoded mask could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The runs do not add up to `height × width` pixels.
    #[error("mask runs cover {got} pixels but the mask has {expected}")]
    Length {
        /// Pixels the runs cover.
        got: usize,
        /// Pixels the mask has (height × width).
        expected: usize,
    },
}

/// A boolean mask over an image, row-major (`bits[y * width + x]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    width: u32,
    height: u32,
    bits: Vec<bool>,
}

/// Row-major run-length encoding of a [`Mask`]: `counts` alternate between runs of `false` and
/// runs of `true`, starting with `false` (so the first count may be zero). Unlike COCO's
/// uncompressed RLE this is row-major.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RleMask {
    /// `[height, width]`.
    pub size: [u32; 2],
    /// Alternating run lengths, `false` first.
    pub counts: Vec<u32>,
}

impl Mask {
    /// An all-`false` mask of the given size.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            bits: vec![false; width as usize * height as usize],
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether pixel (x, y) is in the mask; `false` outside the image.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.bits[(y * self.width + x) as usize]
    }

    /// Sets pixel (x, y); ignored outside the image.
    pub fn set(&mut self, x: u32, y: u32, value: bool) {
        if x < self.width && y < self.height {
            self.bits[(y * self.width + x) as usize] = value;
        }
    }

    /// The row-major bits.
    pub fn bits(&self) -> &[bool] {
        &self.bits
    }

    /// Number of pixels in the mask.
    pub fn count(&self) -> usize {
        self.bits.iter().filter(|b| **b).count()
    }

    /// Mean (x, y) of the mask's pixel centres, or `None` for an empty mask.
    pub fn centroid(&self) -> Option<(f32, f32)> {
        let (mut sx, mut sy, mut n) = (0f64, 0f64, 0usize);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.get(x, y) {
                    sx += x as f64 + 0.5;
                    sy += y as f64 + 0.5;
                    n += 1;
                }
            }
        }
        (n > 0).then(|| ((sx / n as f64) as f32, (sy / n as f64) as f32))
    }

    /// Fraction of the mask's pixels in each cell of a `rows × cols` grid (row-major), e.g. the
    /// vision tower's patch grid. Cells sum to 1 for a non-empty mask; all zero otherwise.
    pub fn grid_fractions(&self, rows: usize, cols: usize) -> Vec<f32> {
        let mut cells = vec![0f32; rows * cols];
        let total = self.count();
        if total == 0 || rows == 0 || cols == 0 {
            return cells;
        }
        for y in 0..self.height {
            for x in 0..self.width {
                if self.get(x, y) {
                    let r = (y as usize * rows) / self.height as usize;
                    let c = (x as usize * cols) / self.width as usize;
                    cells[r * cols + c] += 1.0;
                }
            }
        }
        cells.iter_mut().for_each(|v| *v /= total as f32);
        cells
    }

    /// Run-length encodes the mask.
    pub fn to_rle(&self) -> RleMask {
        let mut counts = Vec::new();
        let mut current = false;
        let mut run = 0u32;
        for &b in &self.bits {
            if b == current {
                run += 1;
            } else {
                counts.push(run);
                current = b;
                run = 1;
            }
        }
        counts.push(run);
        RleMask {
            size: [self.height, self.width],
            counts,
        }
    }

    /// Decodes a run-length encoded mask.
    pub fn from_rle(rle: &RleMask) -> Result<Self, MaskError> {
        let [height, width] = rle.size;
        let expected = height as usize * width as usize;
        let got: usize = rle.counts.iter().map(|c| *c as usize).sum();
        if got != expected {
            return Err(MaskError::Length { got, expected });
        }
        let mut bits = Vec::with_capacity(expected);
        let mut value = false;
        for &c in &rle.counts {
            bits.extend(std::iter::repeat_n(value, c as usize));
            value = !value;
        }
        Ok(Self {
            width,
            height,
            bits,
        })
    }
}
