//! The image pane: the preprocessed image in half blocks at the true aspect ratio of the image
//! region it shows (a wide image looks wide), the selected map blended over it, the patch
//! cursor and selection (cells of the region), and a colour bar with the map's min and max.
//! A component owning patch mode, the patch cursor and selection, the opacity, the image and
//! which of the session's regions it shows.

use std::borrow::Cow;
use std::collections::BTreeSet;

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use crate::session::Session;
use crate::style::overlay::{crop, denormalize, resample, Raster};
use crate::style::{normalize, Rgb};

use super::blocks::{half_blocks, pane_inner, put, Px};
use super::component::{Component, Ctx, Handled};
use super::hits::ImageGeom;
use super::keymap::Action;
use super::msg::Effect;
use super::state::{clamp_step, default_region, Pane, ShownRegion};

/// The image pane's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePane {
    patch_mode: bool,
    patch: usize,
    patches: BTreeSet<usize>,
    opacity: f32,
    image: Option<Raster>,
    region: usize,
}

impl Default for ImagePane {
    fn default() -> Self {
        Self {
            patch_mode: false,
            patch: 0,
            patches: BTreeSet::new(),
            opacity: 0.6,
            image: None,
            region: 0,
        }
    }
}

impl ImagePane {
    /// A pane showing `session`'s image, no patch selected, in its stitched high-resolution
    /// region when it has one (LLaVA-NeXT, OneVision), else its first.
    pub fn open_session(&mut self, session: &Session) {
        self.image = Some(capped(denormalize(&session.pixel_values)));
        self.set_region(default_region(session));
    }

    /// Patch mode is on: the cursor selects patches and answer tokens show their attention to
    /// the selection.
    pub fn patch_mode(&self) -> bool {
        self.patch_mode
    }

    /// The patch cursor (row-major index into the shown region's grid).
    pub fn patch(&self) -> usize {
        self.patch
    }

    /// The selected patches (row-major indices into the shown region's grid).
    pub fn patches(&self) -> &BTreeSet<usize> {
        &self.patches
    }

    /// The absolute input positions of the selected patches (through the shown region's
    /// [`ImageRegion::cell_positions`](crate::session::ImageRegion::cell_positions)),
    /// ascending; empty without a session.
    pub fn selected_positions(&self, ctx: &Ctx) -> Vec<usize> {
        ctx.shown_region()
            .map(|r| r.positions(self.patches.iter().copied()))
            .unwrap_or_default()
    }

    /// Map opacity over the image, in [0, 1].
    pub fn opacity(&self) -> f32 {
        self.opacity
    }

    /// Sets the map opacity (clamped to [0, 1]; not a number leaves it as it is).
    pub fn set_opacity(&mut self, opacity: f32) {
        if opacity.is_finite() {
            self.opacity = opacity.clamp(0.0, 1.0);
        }
    }

    /// Which of the session's image regions the pane shows (an index; the high-resolution
    /// region of a session that has one, else the first, after opening a session).
    pub fn region(&self) -> usize {
        self.region
    }

    /// Shows the session's region `index` (its map, grid and aspect ratio); an index past the
    /// session's regions falls back to the first. The patch cursor goes back to the first
    /// cell and the selection is cleared, since cells of one region are not cells of another.
    pub fn set_region(&mut self, index: usize) {
        self.region = index;
        self.patch = 0;
        self.patches.clear();
    }

    /// Takes `other`'s patch mode and opacity, and, when both show grids of the same size
    /// (`same_grid`), its patch cursor and selection (the compare view's linked mode).
    pub fn follow(&mut self, other: &ImagePane, same_grid: bool) {
        self.patch_mode = other.patch_mode;
        self.opacity = other.opacity;
        if same_grid {
            self.patch = other.patch;
            self.patches = other.patches.clone();
        }
    }

    /// Forgets the selected patches.
    pub fn clear_patches(&mut self) {
        self.patches.clear();
    }

    /// Leaves patch mode; `false` if it was off.
    pub fn leave_patch_mode(&mut self) -> bool {
        std::mem::replace(&mut self.patch_mode, false)
    }

    /// A click on patch `p`: moves the cursor there and, in patch mode, toggles its selection.
    pub fn click(&mut self, p: usize) {
        self.patch = p;
        if self.patch_mode {
            self.toggle(p);
        }
    }

    fn toggle(&mut self, p: usize) {
        if !self.patches.remove(&p) {
            self.patches.insert(p);
        }
    }

    fn move_patch(&mut self, ctx: &Ctx, dx: isize, dy: isize) {
        let [rows, cols] = ctx.grid();
        if rows * cols > 0 {
            let r = clamp_step(self.patch / cols, dy, rows);
            let c = clamp_step(self.patch % cols, dx, cols);
            self.patch = r * cols + c;
        }
    }

    /// Where the pane in `area` draws the picture; `None` when it draws none.
    pub fn geom(&self, ctx: &Ctx, area: Rect) -> Option<ImageGeom> {
        let inner = pane_inner(area);
        if inner.height < 3 || inner.width < 4 || self.image.is_none() {
            return None;
        }
        let [rows, cols] = ctx.grid();
        let canvas = Rect::new(inner.x, inner.y + 1, inner.width, inner.height - 2);
        if rows * cols == 0 || canvas.height == 0 {
            return None;
        }
        let aspect = ctx.aspect().unwrap_or(1.0);
        let (width, height_px) = picture_size(canvas.width, canvas.height, rows, cols, aspect);
        Some(ImageGeom {
            x0: canvas.x + (canvas.width - width) / 2,
            y0: canvas.y,
            width,
            height_px,
            rows,
            cols,
        })
    }
}

/// The longest side, in pixels, of the picture the pane keeps: more than a pane of a large
/// terminal draws (one pixel per column, two per row), and small enough that resampling it
/// for every frame costs little (an anyres image can be fitted at 2000 pixels and more).
pub const PICTURE_MAX_SIDE: usize = 512;

/// `raster` box-filtered down to [`PICTURE_MAX_SIDE`] on its longest side, aspect kept; as it
/// is when it is no larger.
pub fn capped(raster: Raster) -> Raster {
    let side = raster.width.max(raster.height);
    if side <= PICTURE_MAX_SIDE {
        return raster;
    }
    let scale = |n: usize| {
        ((n * PICTURE_MAX_SIDE) as f64 / side as f64)
            .round()
            .max(1.0) as usize
    };
    resample(&raster, scale(raster.width), scale(raster.height))
}

/// The picture's size in pixels (a cell is one pixel wide, two high) inside a `w × h` cell area
/// for a `rows × cols` region whose image has the aspect ratio `aspect` (width / height): when
/// square patches give that aspect (within 2 %), square patches of a whole number of pixels if
/// they fit; otherwise the largest picture of that aspect. The whole area when nothing fits.
pub fn picture_size(w: u16, h: u16, rows: usize, cols: usize, aspect: f64) -> (u16, u16) {
    let h_px = h as usize * 2;
    let (rows, cols) = (rows.max(1), cols.max(1));
    let square = cols as f64 / rows as f64;
    let aspect = if aspect.is_finite() && aspect > 0.0 {
        aspect
    } else {
        square
    };
    if (aspect / square - 1.0).abs() <= 0.02 {
        let s = (w as usize / cols).min(h_px / rows);
        if s >= 1 {
            return ((cols * s) as u16, (rows * s) as u16);
        }
    }
    let width = (w as f64).min(h_px as f64 * aspect).floor();
    let height = (width / aspect).round().min(h_px as f64);
    if width >= cols as f64 && height >= rows as f64 {
        (width as u16, height as u16)
    } else {
        (w, h_px as u16)
    }
}

impl Component for ImagePane {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let look = ctx.look;
        let view = ctx.view;
        let mut title = if self.patch_mode {
            format!("Image · patch mode · {} selected", self.patches.len())
        } else {
            "Image".to_string()
        };
        if let Some(s) = ctx.session.filter(|_| ctx.region_count() > 1) {
            title.push_str(&format!(" · {}", ShownRegion::label(s, self.region)));
        }
        if let Some(d) = view.faith.as_ref().and_then(|fv| fv.current_drop()) {
            title.push_str(&format!(" · Δp {d:+.3}"));
        }
        let block = ctx.frame(Pane::Image, title);
        let inner = block.inner(area);
        f.render_widget(block, area);
        if inner.height < 3 || inner.width < 4 {
            return;
        }
        let dim = Style::default().fg(look.color(look.theme.dim));
        let warn = Style::default().fg(look.color(look.theme.warning));
        let buf = f.buffer_mut();
        put(buf, inner, inner.x, inner.y, &view.map_title, dim);
        let [rows, cols] = ctx.grid();
        let (Some(image), Some(geom)) = (&self.image, self.geom(ctx, area)) else {
            return;
        };
        let ImageGeom {
            x0,
            y0,
            width,
            height_px,
            ..
        } = geom;
        // Cropped to the shown region's rectangle and resampled per frame (both from the
        // capped picture), so drawing changes no state.
        let picture = match (
            ctx.session.and_then(Session::picture_rect),
            ctx.shown_region(),
        ) {
            (Some(shows), Some(shown)) => crop(image, shows, shown.region.rect),
            _ => Cow::Borrowed(image),
        };
        let raster = resample(&picture, width as usize, height_px as usize);
        let colors: Vec<(Rgb, f32)> = match &view.map {
            Some(m) => m
                .values
                .iter()
                .map(|&v| {
                    let x = normalize(v, view.range);
                    (look.map_rgb(x), x)
                })
                .collect(),
            None => vec![(Rgb(0, 0, 0), 0.0); rows * cols],
        };
        let alpha = if view.map.is_some() {
            self.opacity
        } else {
            0.0
        };
        let show_cursor = ctx.focus == Pane::Image || self.patch_mode;
        let (w, h) = (width as usize, height_px as usize);
        let theme = &look.theme;
        half_blocks(buf, look, (x0, y0), (width, height_px), |x, y| {
            let (r, c) = (y * rows / h, x * cols / w);
            let p = r * cols + c;
            let (map_rgb, level) = colors.get(p).copied().unwrap_or((Rgb(0, 0, 0), 0.0));
            let base = raster.get(x, y);
            let mut rgb = base.blend(map_rgb, alpha);
            let edge = is_edge(x, y, r, c, w, h, rows, cols);
            if show_cursor && p == self.patch && edge {
                rgb = theme.cursor;
            } else if self.patches.contains(&p) && edge {
                rgb = theme.foreground;
            } else if view.marked.contains(&p) && edge {
                rgb = theme.accent;
            }
            Px { rgb, level }
        });
        let bar_y = inner.bottom() - 1;
        if let Some(msg) = &view.map_missing {
            let r = Rect::new(inner.x, inner.y, inner.width, 2.min(inner.height));
            f.render_widget(
                Paragraph::new(msg.as_str())
                    .style(warn)
                    .wrap(Wrap { trim: true }),
                r,
            );
        } else {
            color_bar(f, ctx, Rect::new(inner.x, bar_y, inner.width, 1));
        }
    }

    fn handle(&mut self, action: Action, ctx: &Ctx, out: &mut Vec<Effect>) -> Handled {
        let focused = ctx.focus == Pane::Image;
        match action {
            Action::PatchMode => {
                self.patch_mode = !self.patch_mode;
                if self.patch_mode {
                    out.push(Effect::Focus(Pane::Image));
                }
            }
            Action::Opacity => {
                self.opacity = match self.opacity {
                    o if o < 0.5 => 0.6,
                    o if o < 0.9 => 1.0,
                    _ => 0.0,
                }
            }
            Action::Select if focused => {
                if ctx.session.is_some() {
                    self.patch_mode = true;
                    self.toggle(self.patch);
                }
            }
            Action::Left if focused => self.move_patch(ctx, -1, 0),
            Action::Right if focused => self.move_patch(ctx, 1, 0),
            Action::Up if focused => self.move_patch(ctx, 0, -1),
            Action::Down if focused => self.move_patch(ctx, 0, 1),
            Action::Cancel if self.patch_mode => self.patch_mode = false,
            Action::Region => match ctx.shown_region() {
                Some(r) if r.count > 1 => self.set_region((r.index + 1) % r.count),
                _ => out.push(Effect::Notify(
                    "this session's image has one region (a LLaVA-NeXT or OneVision run has a \
                     base and a high-res one)"
                        .into(),
                    false,
                )),
            },
            _ => return Handled::No,
        }
        Handled::Yes
    }

    fn commands(&self, ctx: &Ctx) -> Vec<Action> {
        let mut out = vec![Action::PatchMode, Action::Opacity];
        if ctx.region_count() > 1 {
            out.push(Action::Region);
        }
        if ctx.focus == Pane::Image {
            out.extend([
                Action::Left,
                Action::Right,
                Action::Up,
                Action::Down,
                Action::Select,
            ]);
        }
        if self.patch_mode {
            out.push(Action::Cancel);
        }
        out
    }
}

/// Whether pixel (x, y) lies on the border of its patch (every pixel when patches are small).
#[allow(clippy::too_many_arguments)]
fn is_edge(
    x: usize,
    y: usize,
    r: usize,
    c: usize,
    w: usize,
    h: usize,
    rows: usize,
    cols: usize,
) -> bool {
    let (px0, px1) = (c * w / cols, (c + 1) * w / cols);
    let (py0, py1) = (r * h / rows, (r + 1) * h / rows);
    if px1 - px0 < 3 || py1 - py0 < 3 {
        return true;
    }
    x == px0 || x + 1 == px1 || y == py0 || y + 1 == py1
}

/// The colour bar: `min` label, a gradient, `max` label.
fn color_bar(f: &mut Frame, ctx: &Ctx, area: Rect) {
    let look = ctx.look;
    let (lo, hi) = ctx.view.range;
    let left = format!("{lo:.4} ");
    let right = format!(" {hi:.4} {}", look.colormap.name());
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let buf = f.buffer_mut();
    let used = put(buf, area, area.x, area.y, &left, fg);
    let bar_w = area
        .width
        .saturating_sub(used + right.chars().count() as u16)
        .min(48);
    for i in 0..bar_w {
        let x = i as f32 / (bar_w.max(2) - 1) as f32;
        let cell = &mut buf[(area.x + used + i, area.y)];
        if look.no_color() {
            cell.set_char(crate::style::shade(x));
        } else {
            cell.set_char(' ').set_bg(look.map_color(x));
        }
    }
    put(buf, area, area.x + used + bar_w, area.y, &right, fg);
}
