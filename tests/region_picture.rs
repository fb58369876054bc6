//! The picture under a region's map is the part of the image the region's rectangle covers:
//! in the app (from the picture capped at 512 pixels) and in `report --png`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::report::{compute, png_raster, ReportOptions};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{Array, RegionKind, Session};
use lvlmscope::style::{ColorMode, Look, Rgb, Theme};
use lvlmscope::tui::{draw, update, App, Msg};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;

const RED: Rgb = Rgb(255, 0, 0);
const BLUE: Rgb = Rgb(0, 0, 255);

fn look() -> Look {
    Look::new(Theme::dark(), ColorMode::TrueColor)
}

/// A two-region session whose picture is red on the left half and blue on the right, its
/// high-resolution region covering the right half of the image only.
fn session() -> Session {
    let mut s = synthetic_session(&SyntheticSpec::anyres_tiny());
    let [_, h, w] = s.pixel_values.shape[..] else {
        panic!("pixel values are not [3, h, w]")
    };
    let mut data = vec![-10.0; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let channel = if x < w / 2 { 0 } else { 2 };
            data[channel * h * w + y * w + x] = 10.0;
        }
    }
    s.pixel_values = Array::new(vec![3, h, w], data).unwrap();
    let [x0, y0, x1, y1] = s.manifest.regions[0].rect;
    let hi = &mut s.manifest.regions[1];
    assert_eq!(hi.kind, RegionKind::Highres);
    hi.rect = [(x0 + x1) / 2.0, y0, x1, y1];
    s
}

fn colours(app: &App) -> Vec<Rgb> {
    let mut t = Terminal::new(TestBackend::new(120, 40)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    buf.content()
        .iter()
        .flat_map(|c| [c.fg, c.bg])
        .filter_map(|c| match c {
            Color::Rgb(r, g, b) => Some(Rgb(r, g, b)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_app_draws_only_the_part_of_the_picture_the_region_covers() {
    let mut app = App::with_session(look(), session(), None);
    // Opacity 0.6 → 1.0 → 0: the picture alone.
    for _ in 0..2 {
        update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char('o'), KeyModifiers::NONE)),
        );
    }
    assert_eq!(app.doc.image.opacity(), 0.0);
    let high = colours(&app);
    assert!(high.contains(&BLUE), "the right half is drawn");
    assert!(!high.contains(&RED), "the left half is not");
    update(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('b'), KeyModifiers::NONE)),
    );
    let base = colours(&app);
    assert!(
        base.contains(&RED) && base.contains(&BLUE),
        "the base view is the whole image"
    );
}

#[test]
fn the_report_png_crops_each_region_to_its_rectangle() {
    let s = session();
    let opts = ReportOptions {
        method: Some("attention.last.mean".into()),
        ..ReportOptions::default()
    };
    let r = compute(&s, &opts).unwrap();
    let png = png_raster(&s, &r, &look());
    // The base view (top) keeps both halves; the high-resolution part (below, narrower:
    // black beside it) is blue only.
    let last = png.height - 1;
    let row: Vec<Rgb> = (0..png.width).map(|x| png.get(x, last)).collect();
    let drawn: Vec<&Rgb> = row.iter().filter(|&&p| p != Rgb(0, 0, 0)).collect();
    assert!(
        !drawn.is_empty() && drawn.iter().all(|p| p.2 > p.0),
        "{row:?}"
    );
    let first: Vec<Rgb> = (0..png.width).map(|x| png.get(x, 0)).collect();
    assert!(first[0].0 > first[0].2 && first[png.width - 1].2 > first[png.width - 1].0);
}
