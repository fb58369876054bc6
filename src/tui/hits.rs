//! Where the last frame drew clickable things, so mouse clicks map back to tokens and patches.

use ratatui::layout::Rect;

use super::state::Pane;

/// The geometry of the image pane's picture: patch `(r, c)` covers cells
/// `x0 + c*cell_w .. x0 + (c+1)*cell_w` and half-cell rows `2*y0 + r*px_h ..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImageGeom {
    /// Left column of the picture.
    pub x0: u16,
    /// Top row of the picture.
    pub y0: u16,
    /// Picture width in cells (= pixels).
    pub width: u16,
    /// Picture height in pixels (two per cell row).
    pub height_px: u16,
    /// Patch rows.
    pub rows: usize,
    /// Patch columns.
    pub cols: usize,
}

impl ImageGeom {
    /// The patch under cell (`x`, `y`), if any.
    pub fn patch_at(&self, x: u16, y: u16) -> Option<usize> {
        if x < self.x0 || y < self.y0 || x >= self.x0 + self.width {
            return None;
        }
        let px_y = (y - self.y0) as usize * 2;
        if px_y >= self.height_px as usize {
            return None;
        }
        let r = px_y * self.rows / self.height_px.max(1) as usize;
        let c = (x - self.x0) as usize * self.cols / self.width.max(1) as usize;
        Some(r * self.cols + c)
    }

    /// The cell and half (false: upper, true: lower) at the centre of patch `p`.
    pub fn patch_center(&self, p: usize) -> (u16, u16, bool) {
        let (r, c) = (p / self.cols.max(1), p % self.cols.max(1));
        let px_x = (2 * c + 1) * self.width as usize / (2 * self.cols.max(1));
        let px_y = (2 * r + 1) * self.height_px as usize / (2 * self.rows.max(1));
        (
            self.x0 + px_x as u16,
            self.y0 + (px_y / 2) as u16,
            px_y % 2 == 1,
        )
    }
}

/// The heads × layers grid's geometry: layer `l`, head `h` is at cell
/// `(x0 + l, y0 + h / 2)`, upper half for even heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GridGeom {
    /// Left column of the image grid.
    pub x0: u16,
    /// Left column of the question grid (same rows).
    pub x1: u16,
    /// Top row.
    pub y0: u16,
    /// Layers shown.
    pub layers: usize,
    /// Heads shown.
    pub heads: usize,
}

/// Clickable places of the last frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hits {
    /// Each pane's rectangle.
    pub panes: Vec<(Pane, Rect)>,
    /// Answer tokens: rectangle and token index.
    pub answer: Vec<(Rect, usize)>,
    /// Prompt tokens: rectangle and input position.
    pub prompt: Vec<(Rect, usize)>,
    /// The picture in the image pane.
    pub image: Option<ImageGeom>,
    /// The heads × layers grids.
    pub grid: Option<GridGeom>,
}

fn inside(r: &Rect, x: u16, y: u16) -> bool {
    x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height
}

impl Hits {
    /// The pane at a cell.
    pub fn pane_at(&self, x: u16, y: u16) -> Option<Pane> {
        self.panes
            .iter()
            .find(|(_, r)| inside(r, x, y))
            .map(|(p, _)| *p)
    }

    /// The answer token at a cell.
    pub fn answer_at(&self, x: u16, y: u16) -> Option<usize> {
        self.answer
            .iter()
            .find(|(r, _)| inside(r, x, y))
            .map(|(_, t)| *t)
    }

    /// The prompt position at a cell.
    pub fn prompt_at(&self, x: u16, y: u16) -> Option<usize> {
        self.prompt
            .iter()
            .find(|(r, _)| inside(r, x, y))
            .map(|(_, t)| *t)
    }

    /// The (layer, head) under a cell of either heads × layers grid.
    pub fn grid_at(&self, x: u16, y: u16) -> Option<(usize, usize, bool)> {
        let g = self.grid?;
        let row = y.checked_sub(g.y0)? as usize;
        for (x0, question) in [(g.x0, false), (g.x1, true)] {
            if x >= x0 && ((x - x0) as usize) < g.layers && row * 2 < g.heads {
                return Some(((x - x0) as usize, row * 2, question));
            }
        }
        None
    }
}
