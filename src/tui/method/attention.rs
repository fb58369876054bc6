//! The attention views of the method pane: the heads of the layer as small multiples, the
//! image share per answer token, and answer → prompt-word attention.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::explain::attention::{min_max, Word};
use crate::style::normalize;

use super::super::blocks::bars;
use super::super::blocks::{bar, display_token, half_blocks, put, Px};
use super::super::component::Ctx;
use super::super::state::Agg;

pub(super) fn small_multiples(f: &mut Frame, ctx: &Ctx, area: Rect) {
    let heads = &ctx.view.heads;
    let [rows, cols] = ctx.grid();
    if heads.is_empty() || rows * cols == 0 {
        return;
    }
    let look = ctx.look;
    // Tiles keep the aspect of the image region shown (square patches without one).
    let aspect = ctx.aspect().unwrap_or(cols as f64 / rows as f64);
    // The largest tile width (in cells) that fits every head, else the smallest one.
    let fits = |tw: usize| {
        let per_row = (area.width as usize + 1) / (tw + 1);
        let th = tile_height_px(tw, aspect).div_ceil(2) + 1;
        per_row > 0 && heads.len().div_ceil(per_row) * th <= area.height as usize
    };
    let tw = (4..=24).rev().find(|&tw| fits(tw)).unwrap_or(4);
    let th_px = tile_height_px(tw, aspect);
    let th = th_px.div_ceil(2) + 1;
    let per_row = ((area.width as usize + 1) / (tw + 1)).max(1);
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let buf = f.buffer_mut();
    for (i, (h, mean, g)) in heads.iter().enumerate() {
        let (tx, ty) = (i % per_row, i / per_row);
        let x = area.x + (tx * (tw + 1)) as u16;
        let y = area.y + (ty * th) as u16;
        if y + th as u16 > area.bottom() || x + tw as u16 > area.right() {
            break;
        }
        // Each tile on its own scale; a tile pixel shows the largest patch it covers, so hot
        // patches survive the shrinking.
        let range = g.min_max();
        let pooled = pool_max(g, tw, th_px);
        half_blocks(buf, look, (x, y), (tw as u16, th_px as u16), |px, py| {
            let level = normalize(pooled[py * tw + px], range);
            Px {
                rgb: look.map_rgb(level),
                level,
            }
        });
        let current = ctx.sel.agg == Agg::Head && *h == ctx.sel.head;
        let style = if current {
            fg.add_modifier(Modifier::REVERSED)
        } else {
            fg
        };
        let label: String = format!("h{h} {mean:.1e}").chars().take(tw).collect();
        put(buf, area, x, y + th as u16 - 1, &label, style);
    }
}

/// The height in pixels of a tile `width` pixels wide showing an image of aspect `aspect`
/// (width / height), rounded up: at least one pixel, at most four times the width.
pub(super) fn tile_height_px(width: usize, aspect: f64) -> usize {
    let h = if aspect.is_finite() && aspect > 0.0 {
        // A hair below so that an exact ratio is not rounded up by float error.
        (width as f64 / aspect - 1e-6).ceil()
    } else {
        width as f64
    };
    (h as usize).clamp(1, width.max(1) * 4)
}

/// Max-pools a grid to `w × h` pixels.
fn pool_max(g: &crate::explain::attention::Grid, w: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w * h);
    for py in 0..h {
        let (r0, r1) = (py * g.rows / h, ((py + 1) * g.rows).div_ceil(h).min(g.rows));
        for px in 0..w {
            let (c0, c1) = (px * g.cols / w, ((px + 1) * g.cols).div_ceil(w).min(g.cols));
            let mut m = f32::MIN;
            for r in r0..r1.max(r0 + 1) {
                for c in c0..c1.max(c0 + 1) {
                    m = m.max(g.get(r.min(g.rows - 1), c.min(g.cols - 1)));
                }
            }
            out.push(m);
        }
    }
    out
}

pub(super) fn share(f: &mut Frame, ctx: &Ctx, area: Rect) {
    let Some(s) = ctx.session else { return };
    let look = ctx.look;
    let v = ctx.view;
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let label_w = 12usize;
    let bar_w = ((area.width as usize).saturating_sub(label_w + 16) / 2).max(1);
    let height = area.height as usize;
    let token = ctx.view.cursor;
    let scroll = token.saturating_sub(height.saturating_sub(1));
    let buf = f.buffer_mut();
    for (row, t) in (scroll..s.num_output()).take(height).enumerate() {
        let y = area.y + row as u16;
        let text: String = display_token(&s.manifest.tokens.output[t])
            .chars()
            .take(label_w - 4)
            .collect();
        let style = if t == token {
            fg.add_modifier(Modifier::REVERSED)
        } else {
            fg
        };
        put(
            buf,
            area,
            area.x,
            y,
            &format!("{t:>3} {text:<w$}", w = label_w - 4),
            style,
        );
        let a = v.share_layer.get(t).copied().unwrap_or(0.0);
        let b = v.share_all.get(t).copied().unwrap_or(0.0);
        let mut x = area.x + label_w as u16;
        for (val, color) in [(a, look.theme.accent), (b, look.theme.dim)] {
            put(
                buf,
                area,
                x,
                y,
                &bar(val, bar_w),
                Style::default().fg(look.color(color)),
            );
            put(buf, area, x + bar_w as u16, y, &format!(" {val:.2} "), fg);
            x += bar_w as u16 + 7;
        }
    }
}

pub(super) fn words(f: &mut Frame, ctx: &Ctx, area: Rect, words: &[(Word, f32)]) {
    if words.is_empty() {
        let dim = Style::default().fg(ctx.look.color(ctx.look.theme.dim));
        put(
            f.buffer_mut(),
            area,
            area.x,
            area.y,
            "no values for this selection",
            dim,
        );
        return;
    }
    let vals: Vec<f32> = words.iter().map(|w| w.1).collect();
    let (_, max) = min_max(&vals);
    let label = |w: &Word| match ctx.session {
        Some(s) => super::parts::tagged(s, &w.positions, w.text.clone()),
        None => w.text.clone(),
    };
    let rows: Vec<(String, f32, bool)> = words
        .iter()
        .map(|(w, v)| (label(w), *v, max > 0.0 && *v == max))
        .collect();
    bars(f, ctx.look, area, &rows);
}

#[cfg(test)]
mod tests {
    use super::tile_height_px;

    #[test]
    fn tiles_follow_the_image_aspect() {
        assert_eq!(tile_height_px(24, 1.0), 24);
        // 640 × 480: a wide tile.
        assert_eq!(tile_height_px(24, 640.0 / 480.0), 18);
        // 3 rows × 4 cols of square patches, rounded up as before.
        assert_eq!(tile_height_px(7, 4.0 / 3.0), 6);
        // A tall image: taller than wide, bounded.
        assert_eq!(tile_height_px(10, 0.5), 20);
        assert_eq!(tile_height_px(10, 0.01), 40);
        assert_eq!(tile_height_px(10, f64::NAN), 10);
        assert_eq!(tile_height_px(4, 100.0), 1);
    }
}
