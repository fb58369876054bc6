//! The image pane: the preprocessed image in half blocks at the true aspect ratio of the image
//! region it shows (a wide image looks wide), the selected map blended over it, the patch
//! cursor and selection (cells of the region), and a colour bar with the map's min and max.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use crate::style::overlay::resample;
use crate::style::{normalize, Rgb};

use super::app::{App, Pane};
use super::blocks::{half_blocks, pane_block, pane_inner, put, Px};
use super::hits::ImageGeom;

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

/// The aspect ratio (width / height) of the image the session's first region covers; 1
/// without a session or a region.
pub fn region_aspect(app: &App) -> f64 {
    app.session
        .as_ref()
        .and_then(|s| s.regions().first().map(|r| r.aspect()))
        .unwrap_or(1.0)
}

/// Where the image pane in `area` draws the picture; `None` when it draws none.
pub fn geom(app: &App, area: Rect) -> Option<ImageGeom> {
    let inner = pane_inner(area);
    if inner.height < 3 || inner.width < 4 || app.image.is_none() {
        return None;
    }
    let [rows, cols] = app.grid();
    let canvas = Rect::new(inner.x, inner.y + 1, inner.width, inner.height - 2);
    if rows * cols == 0 || canvas.height == 0 {
        return None;
    }
    let aspect = region_aspect(app);
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

/// Draws the image pane into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let mut title = if app.patch_mode {
        format!("Image · patch mode · {} selected", app.patches.len())
    } else {
        "Image".to_string()
    };
    if let Some(d) = app.view.faith.as_ref().and_then(|fv| fv.current_drop()) {
        title.push_str(&format!(" · Δp {d:+.3}"));
    }
    let block = pane_block(app, Pane::Image, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height < 3 || inner.width < 4 {
        return;
    }
    let dim = Style::default().fg(look.color(look.theme.dim));
    let warn = Style::default().fg(look.color(look.theme.warning));
    let buf = f.buffer_mut();
    let view = &app.view;
    put(buf, inner, inner.x, inner.y, &view.map_title, dim);
    let [rows, cols] = app.grid();
    let (Some(image), Some(geom)) = (&app.image, geom(app, area)) else {
        return;
    };
    let ImageGeom {
        x0,
        y0,
        width,
        height_px,
        ..
    } = geom;
    // Resampled per frame (a few thousand pixels), so drawing changes no state.
    let raster = resample(image, width as usize, height_px as usize);
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
    let alpha = if view.map.is_some() { app.opacity } else { 0.0 };
    let show_cursor = app.focus == Pane::Image || app.patch_mode;
    let (w, h) = (width as usize, height_px as usize);
    let theme = &look.theme;
    half_blocks(buf, look, (x0, y0), (width, height_px), |x, y| {
        let (r, c) = (y * rows / h, x * cols / w);
        let p = r * cols + c;
        let (map_rgb, level) = colors[p];
        let base = raster.get(x, y);
        let mut rgb = base.blend(map_rgb, alpha);
        let edge = is_edge(x, y, r, c, w, h, rows, cols);
        if show_cursor && p == app.patch && edge {
            rgb = theme.cursor;
        } else if app.patches.contains(&p) && edge {
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
        color_bar(f, app, Rect::new(inner.x, bar_y, inner.width, 1));
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
fn color_bar(f: &mut Frame, app: &App, area: Rect) {
    let look = &app.look;
    let (lo, hi) = app.view.range;
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
