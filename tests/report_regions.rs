//! `report --region base|highres|image|all` on a two-region session (a synthetic OneVision
//! shape, and a run of the tiny OneVision fixture): one region's numbers and picture, or every
//! region's; a region the session lacks is one sentence and a non-zero exit. The app opens the
//! fixture's run on its high-res region with the catalogue's values.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lvlmscope::explain::catalogue;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{self, AttentionDtype, RegionKind, Session};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::App;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn report(file: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("report")
        .arg(file)
        .args(extra)
        .output()
        .expect("binary runs")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn flat(rows: &serde_json::Value) -> Vec<f32> {
    rows.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn saved(s: &Session, dir: &Path) -> PathBuf {
    let file = dir.join("anyres.session");
    session::save(s, &file, AttentionDtype::F32).unwrap();
    file
}

#[test]
fn report_prints_and_draws_the_region_asked_for() {
    let s = synthetic_session(&SyntheticSpec::anyres_tiny());
    let dir = tempfile::tempdir().unwrap();
    let file = saved(&s, dir.path());
    let id = "attention.last.mean".parse().unwrap();
    let e = catalogue::explain(&s, &[1], &id).unwrap();

    let all = json(&report(&file, &["--token", "1", "--json"]));
    let kinds: Vec<&str> = all["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["base", "highres"]);

    for (name, index) in [("base", 0), ("highres", 1)] {
        let j = json(&report(
            &file,
            &["--token", "1", "--json", "--region", name],
        ));
        let regions = j["regions"].as_array().unwrap();
        assert_eq!(regions.len(), 1, "{name}");
        assert_eq!(regions[0]["kind"], name);
        let want = &e.regions[index].grid;
        assert_eq!(flat(&regions[0]["map"]), want.values, "{name}");
        assert_eq!(j["grid"], serde_json::json!([want.rows, want.cols]));
        assert_eq!(flat(&j["map"]), want.values, "{name}: the top-level map");
        let (lo, hi) = want.min_max();
        assert_eq!(j["min"].as_f64().unwrap() as f32, lo);
        assert_eq!(j["max"].as_f64().unwrap() as f32, hi);
    }

    // --png: one region is one picture; all stacks both with a 4-pixel gap
    let png = |args: &[&str], name: &str| {
        let path = dir.path().join(name);
        let mut a = vec!["--png", path.to_str().unwrap()];
        a.extend_from_slice(args);
        let out = report(&file, &a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        image::open(&path).unwrap()
    };
    let base = png(&["--region", "base"], "base.png");
    let high = png(&["--region", "highres"], "high.png");
    let both = png(&[], "all.png");
    assert_eq!(both.height(), base.height() + high.height() + 4);
    assert_eq!(both.width(), base.width().max(high.width()));

    // the terminal drawing names no region heading when one is shown
    let out = report(&file, &["--region", "highres"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!text.contains("base region"), "{text}");
}

#[test]
fn a_region_the_session_lacks_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let two = saved(
        &synthetic_session(&SyntheticSpec::anyres_tiny()),
        dir.path(),
    );
    let out = report(&two, &["--region", "image", "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--region image: this session has no such image region (it has base, highres)"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());

    let one_dir = tempfile::tempdir().unwrap();
    let one = saved(&synthetic_session(&SyntheticSpec::tiny()), one_dir.path());
    let out = report(&one, &["--region", "highres"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(it has image)"), "{err}");
    let j = json(&report(&one, &["--region", "image", "--json"]));
    assert_eq!(j["regions"].as_array().unwrap().len(), 1);

    let out = report(&two, &["--region", "tiles"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("choose base, highres, image or all"), "{err}");
}

#[test]
fn the_onevision_fixture_opens_on_its_high_res_region() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ov.session");
    let out = Command::new(BIN)
        .args(["run", "--model"])
        .arg(fixtures.join("tiny-llava-onevision"))
        .arg("--image")
        .arg(fixtures.join("image.png"))
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
    let kinds: Vec<RegionKind> = s.regions().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RegionKind::Base, RegionKind::Highres]);
    let hi = s.regions()[1].clone();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let app = App::with_session(look, s.clone(), None);
    assert_eq!(app.doc.image.region(), 1);
    assert_eq!(app.grid(), hi.grid);
    let e = catalogue::explain(&s, &app.selected_tokens(), &app.map_id()).unwrap();
    assert_eq!(app.doc.view.map.as_ref().unwrap(), &e.regions[1].grid);

    let j = json(&report(&file, &["--json", "--region", "highres"]));
    assert_eq!(j["grid"], serde_json::json!(hi.grid));
}
