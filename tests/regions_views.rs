//! Maps over image regions keep the image's true aspect ratio in every view: a tall Qwen2-VL
//! image gives a tall region in the catalogue, `report --json`, the `--png` export and the
//! app's image pane; a square LLaVA region keeps square whole-pixel patches.

use std::path::Path;
use std::process::Command;

use lvlmscope::explain::catalogue::{self, MapId};
use lvlmscope::session::{self, RegionKind};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::{image, App};
use ratatui::layout::Rect;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

#[test]
fn a_tall_image_is_tall_in_every_view() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tall.session");
    let out = Command::new(BIN)
        .args(["run", "--model"])
        .arg(fixtures.join("tiny-qwen2_5-vl"))
        .arg("--image")
        .arg(fixtures.join("image_tall.png"))
        .args([
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "3",
        ])
        .arg("--save")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = session::load(&file).unwrap();
    let aspect = 30.0 / 64.0;

    // the catalogue: one region, its grid the merged grid, its rectangle the whole image
    let id: MapId = "attention.last.mean".parse().unwrap();
    let e = catalogue::explain(&s, &[0], &id).unwrap();
    let [region] = &e.regions[..] else {
        panic!("{} regions", e.regions.len())
    };
    assert_eq!(region.kind, RegionKind::Image);
    assert_eq!(
        [region.grid.rows, region.grid.cols],
        s.manifest.model.image_grid
    );
    assert!(region.grid.rows > region.grid.cols);
    assert!((region.aspect() - aspect).abs() < 1e-9);

    // report --json: the region with its rectangle and aspect
    let json = Command::new(BIN)
        .args(["report", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(json.status.success());
    let j: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let r = &j["regions"][0];
    assert_eq!(r["kind"], "image");
    assert_eq!(r["rect"], serde_json::json!([0.0, 0.0, 30.0, 64.0]));
    assert!((r["aspect"].as_f64().unwrap() - aspect).abs() < 1e-9);
    assert_eq!(r["map"].as_array().unwrap().len(), region.grid.rows);

    // report --png: the picture has the image's aspect
    let png = dir.path().join("tall.png");
    let out = Command::new(BIN)
        .args(["report", file.to_str().unwrap(), "--png"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let picture = ::image::open(&png).unwrap();
    let got = picture.width() as f64 / picture.height() as f64;
    assert!((got - aspect).abs() < 0.03, "png aspect {got}");

    // the app's image pane: a tall picture of the same aspect
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let app = App::with_session(look, s, None);
    let geom = app
        .doc
        .image
        .geom(&app.ctx(), Rect::new(0, 0, 80, 40))
        .expect("a picture");
    let got = geom.width as f64 / geom.height_px as f64;
    assert!((got - aspect).abs() < 0.03, "pane aspect {got} ({geom:?})");
    assert_eq!([geom.rows, geom.cols], [region.grid.rows, region.grid.cols]);
}

#[test]
fn picture_size_keeps_square_patches_when_they_give_the_aspect() {
    // a square region: square whole-pixel patches, as before regions
    assert_eq!(image::picture_size(80, 20, 4, 4, 1.0), (40, 40));
    // a 3x4 grid of a 4:3 image: square patches too
    assert_eq!(image::picture_size(80, 20, 3, 4, 4.0 / 3.0), (52, 39));
    // a 6x3 grid of a 30x64 image: the image's aspect, not the grid's
    assert_eq!(image::picture_size(80, 20, 6, 3, 30.0 / 64.0), (18, 38));
    // a wide image is wide
    let (w, h) = image::picture_size(80, 20, 2, 2, 3.0);
    assert!(w as f64 / h as f64 > 2.9, "{w}x{h}");
}
