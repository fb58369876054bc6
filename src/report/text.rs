//! The report as text: the answer with the token marked, the map's numbers, and the image with
//! its overlay (viuer where the terminal shows graphics, else half blocks with ANSI colours).

use std::io::Write;

use crate::session::{piece_text, Session};
use crate::style::{rgb_to_ansi256, shade, ColorMode, Look, Rgb};

use super::overlay::{crop, denormalize, overlay, resample, Raster};
use super::{RelevancyReport, ReportMap};
use crate::explain::catalogue::{RegionMap, TextPart, TurnParts};

fn display(t: &str) -> String {
    piece_text(t).replace('\n', "↵")
}

fn fg(mode: ColorMode, c: Rgb) -> String {
    match mode {
        ColorMode::TrueColor => format!("\x1b[38;2;{};{};{}m", c.0, c.1, c.2),
        ColorMode::Ansi256 => format!("\x1b[38;5;{}m", rgb_to_ansi256(c)),
        ColorMode::NoColor => String::new(),
    }
}

fn bg(mode: ColorMode, c: Rgb) -> String {
    match mode {
        ColorMode::TrueColor => format!("\x1b[48;2;{};{};{}m", c.0, c.1, c.2),
        ColorMode::Ansi256 => format!("\x1b[48;5;{}m", rgb_to_ansi256(c)),
        ColorMode::NoColor => String::new(),
    }
}

/// Writes `raster` as half-block rows (two pixels per cell); without colour, as shade characters
/// of `levels` (one per pixel).
pub fn block_grid(
    out: &mut dyn Write,
    raster: &Raster,
    levels: &[f32],
    mode: ColorMode,
) -> std::io::Result<()> {
    let reset = if mode == ColorMode::NoColor {
        ""
    } else {
        "\x1b[0m"
    };
    for y in (0..raster.height).step_by(2) {
        let mut line = String::new();
        for x in 0..raster.width {
            let top = raster.get(x, y);
            let has_bottom = y + 1 < raster.height;
            if mode == ColorMode::NoColor {
                let mut l = levels.get(y * raster.width + x).copied().unwrap_or(0.0);
                if has_bottom {
                    l = l.max(
                        levels
                            .get((y + 1) * raster.width + x)
                            .copied()
                            .unwrap_or(0.0),
                    );
                }
                line.push(shade(l));
            } else {
                line.push_str(&fg(mode, top));
                if has_bottom {
                    line.push_str(&bg(mode, raster.get(x, y + 1)));
                }
                line.push('▀');
                line.push_str(reset);
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn graphics_terminal() -> bool {
    viuer::is_iterm_supported() || viuer::get_kitty_support() != viuer::KittySupport::None
}

/// Prints the report of `r`.
pub fn print(out: &mut dyn Write, s: &Session, r: &ReportMap, look: &Look) -> std::io::Result<()> {
    let mode = look.mode;
    let bold = if mode == ColorMode::NoColor {
        ""
    } else {
        "\x1b[1m"
    };
    let reset = if mode == ColorMode::NoColor {
        ""
    } else {
        "\x1b[0m"
    };
    writeln!(out, "{bold}prompt{reset}  {}", s.manifest.prompt)?;
    let mut answer = String::new();
    for (i, t) in s.manifest.tokens.output.iter().enumerate() {
        if i == r.token {
            if piece_text(t).starts_with(' ') {
                answer.push(' ');
            }
            answer.push_str(&format!("[{}]", display(t).trim()));
        } else {
            answer.push_str(&display(t));
        }
    }
    writeln!(out, "{bold}answer{reset}  {}", answer.trim())?;
    let (lo, hi) = super::regions_range(r);
    writeln!(
        out,
        "{bold}token {}{reset} {:?} at position {} · {} · min {lo:.4} max {hi:.4} · {}",
        r.token,
        s.manifest
            .tokens
            .output
            .get(r.token)
            .map(|t| display(t))
            .unwrap_or_default(),
        s.query_position(r.token),
        r.title,
        look.colormap.name()
    )?;
    if let Some(share) = r.image_share {
        writeln!(out, "share of attention on the image: {share:.3}")?;
    }
    if let Some(parts) = r.parts.filter(|_| TurnParts::of(s).has_history()) {
        let parts: Vec<String> = TextPart::ALL
            .iter()
            .map(|&p| format!("{} {:.3}", p.name(), parts.get(p)))
            .collect();
        writeln!(out, "{} by part: {}", r.method, parts.join(", "))?;
        let glyphs: Vec<String> = TextPart::ALL
            .iter()
            .map(|&p| format!("{} {}", crate::style::part_glyph(p), p.name()))
            .collect();
        writeln!(out, "        (words marked {})", glyphs.join(", "))?;
    }
    if let Some(rel) = &r.relevancy {
        relevancy(out, s, r.token, rel, look)?;
    } else {
        top_text(out, s, r)?;
    }
    image_view(out, r, s, look)
}

/// `word` tagged with the glyph of the part of position `p` in a turn with earlier turns
/// ([`crate::style::part_glyph`]); `word` alone otherwise.
fn tagged(s: &Session, p: Option<usize>, word: String) -> String {
    let parts = TurnParts::of(s);
    match p {
        Some(p) if parts.has_history() => {
            format!("{}{word}", crate::style::part_glyph(parts.part(p)))
        }
        _ => word,
    }
}

/// The top text positions of the report's `text` values on one line.
fn top_text(out: &mut dyn Write, s: &Session, r: &ReportMap) -> std::io::Result<()> {
    let mut top: Vec<(usize, f32)> = r
        .text
        .iter()
        .map(|(p, v)| (*p, *v))
        .filter(|(p, _)| *p > 0)
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let words: Vec<String> = top
        .iter()
        .take(8)
        .map(|(p, v)| {
            let word = format!("{}@{p}={v:.3}", display(s.token_at(*p)).trim());
            tagged(s, Some(*p), word)
        })
        .collect();
    if !words.is_empty() {
        writeln!(out, "text    {}", words.join("  "))?;
    }
    Ok(())
}

/// Text relevancy bars (the image's largest relevancy first) and the answer coloured by each
/// token's reliance on the image, with the shares as numbers.
fn relevancy(
    out: &mut dyn Write,
    s: &Session,
    token: usize,
    rel: &RelevancyReport,
    look: &Look,
) -> std::io::Result<()> {
    let mode = look.mode;
    let reset = if mode == ColorMode::NoColor {
        ""
    } else {
        "\x1b[0m"
    };
    writeln!(
        out,
        "text relevancy ({}): input words against the image",
        rel.normalization.name()
    )?;
    let mut rows = vec![("image (max)".to_string(), rel.text.image_max)];
    rows.extend(rel.text.words.iter().map(|w| {
        let word = crate::style::display_token(&w.text);
        (tagged(s, w.positions.first().copied(), word), w.value)
    }));
    let max = rows.iter().map(|r| r.1).fold(0.0f32, f32::max);
    let label_w = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .min(16);
    for (label, v) in &rows {
        let frac = if max > 0.0 { v / max } else { 0.0 };
        let label: String = label.chars().take(label_w).collect();
        writeln!(out, "  {label:<label_w$} {} {v:.4}", bar(frac, 24))?;
    }
    writeln!(
        out,
        "reliance on the image: {:.3} of token {token}'s relevancy (image {:.4}, text {:.4})",
        rel.reliance.image_share(),
        rel.reliance.image,
        rel.reliance.text
    )?;
    let mut line = String::new();
    for (t, x) in s.manifest.tokens.output.iter().zip(&rel.answer) {
        let text = display(t);
        let text = text.trim();
        match x {
            Some(x) => {
                let share = x.image_share();
                let c = look.colormap.sample(share);
                line.push_str(&format!("{}{text}{reset}·{share:.2} ", fg(mode, c)));
            }
            None => line.push_str(&format!("{text}·– ")),
        }
    }
    writeln!(out, "answer  {}", line.trim_end())?;
    writeln!(
        out,
        "        (share of each token's relevancy on the image: 0 text … 1 image; –: not computed)"
    )
}

/// A bar of `width` cells filled to `frac`.
fn bar(frac: f32, width: usize) -> String {
    let n = (frac.clamp(0.0, 1.0) * width as f32).round() as usize;
    format!("{}{}", "█".repeat(n), "·".repeat(width - n))
}

/// The image with the map blended over it: every region drawn at its true aspect ratio (a
/// heading names each when there are several).
fn image_view(out: &mut dyn Write, r: &ReportMap, s: &Session, look: &Look) -> std::io::Result<()> {
    let mode = look.mode;
    let range = super::regions_range(r);
    let img = denormalize(&s.pixel_values);
    let whole = [RegionMap {
        kind: crate::session::RegionKind::Image,
        rect: [0.0, 0.0, img.width as f64, img.height as f64],
        grid: r.map.clone(),
    }];
    let regions: &[RegionMap] = if r.regions.is_empty() {
        &whole
    } else {
        &r.regions
    };
    if mode != ColorMode::NoColor && graphics_terminal() {
        let blended = super::png_raster(s, r, look);
        let bytes: Vec<u8> = blended
            .pixels
            .iter()
            .flat_map(|p| [p.0, p.1, p.2])
            .collect();
        if let Some(rgb) =
            image::RgbImage::from_raw(blended.width as u32, blended.height as u32, bytes)
        {
            out.flush()?;
            let conf = viuer::Config {
                absolute_offset: false,
                width: Some(48),
                ..Default::default()
            };
            if viuer::print(&image::DynamicImage::ImageRgb8(rgb), &conf).is_ok() {
                return Ok(());
            }
        }
    }
    let (tw, _) = viuer::terminal_size();
    let shows = s.picture_rect().filter(|_| !r.regions.is_empty());
    for m in regions {
        if regions.len() > 1 {
            writeln!(
                out,
                "{} region · {}x{} cells",
                m.kind.name(),
                m.grid.rows,
                m.grid.cols
            )?;
        }
        // Each region over the part of the picture its rectangle covers.
        let picture = match shows {
            Some(shows) => crop(&img, shows, m.rect),
            None => std::borrow::Cow::Borrowed(&img),
        };
        region_blocks(out, &picture, m, range, look, tw as usize)?;
    }
    Ok(())
}

/// One region's map over the picture in half blocks, `term_width` columns at most, its height
/// from the region's aspect ratio.
fn region_blocks(
    out: &mut dyn Write,
    img: &Raster,
    m: &RegionMap,
    range: (f32, f32),
    look: &Look,
    term_width: usize,
) -> std::io::Result<()> {
    let blended = overlay(img, &m.grid, range, look.colormap, 0.6);
    let w = term_width.clamp(16, 64);
    let h = ((w as f64 / m.aspect()).round() as usize).clamp(2, 4 * w);
    let small = resample(&blended, w, h);
    let levels: Vec<f32> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let (row, col) = super::overlay::patch_at(&m.grid, w, h, x, y);
            crate::style::normalize(m.grid.get(row, col), range)
        })
        .collect();
    block_grid(out, &small, &levels, look.mode)
}
