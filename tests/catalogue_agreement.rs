//! One map id, one set of numbers: the app's image map, `report --json` (the library call and
//! the command) and the maps `eval` scores agree exactly for the same session, token and map id
//! (docs/design.md, "The catalogue").

use std::path::Path;
use std::process::Command;

use lvlmscope::explain::catalogue::{self, MapId};
use lvlmscope::explain::causal::{explain_session, CausalParams};
use lvlmscope::report::{compute, to_json, ReportOptions};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{self, save, AttentionDtype, Session};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::App;

/// A tiny session with relevancy for every token and the causal result of tokens 0 and 2.
fn session() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    let mut s = synthetic_session(&spec);
    let params = CausalParams::for_session(&s);
    s.manifest.causal = Some(explain_session(&s, &[0, 2], &params).unwrap());
    s
}

/// The `map` of a `report --json` object, row-major.
fn json_map(j: &serde_json::Value) -> Vec<f32> {
    j["map"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

const IDS: [&str; 12] = [
    "attention.last.mean",
    "attention.last.max",
    "attention.l1.h2",
    "attention.l0.max",
    "relevancy.decoder",
    "relevancy.decoder.residual",
    "relevancy.vision",
    "relevancy.combined",
    "causal",
    "causal.max",
    "causal.h1",
    "random",
];

#[test]
fn app_report_and_eval_give_the_same_numbers() {
    let s = session();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, s.clone(), None);
    for t in [0usize, 2] {
        // the app's map for token t
        app.doc.answer.set_cursor(t);
        let eval = lvlmscope::eval::scene_maps(&s, t as u64).unwrap();
        for name in IDS {
            let id: MapId = name.parse().unwrap();
            assert!(app.show(id), "{name}");
            assert_eq!(app.map_id(), id, "{name}");
            let shown = app.doc.view.map.as_ref().unwrap_or_else(|| {
                panic!("{name}: {:?}", app.doc.view.map_missing);
            });
            let opts = ReportOptions {
                token: Some(t),
                method: Some(name.to_string()),
                ..Default::default()
            };
            let r = compute(&s, &opts).unwrap();
            let j = to_json(&s, &r);
            assert_eq!(j["map_id"], name);
            let catalogue = catalogue::explain(&s, &[t], &id).unwrap();
            assert_eq!(shown.values, catalogue.grid.values, "app, {name}");
            assert_eq!(json_map(&j), catalogue.grid.values, "report, {name}");
            if let Some(i) = MapId::STANDARD.iter().position(|m| *m == id) {
                if t == 0 {
                    assert_eq!(eval[i], catalogue.grid.values, "eval, {name}");
                }
            }
        }
    }
}

#[test]
fn the_report_command_prints_the_catalogue_numbers() {
    let s = session();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.safetensors");
    save(&s, &file, AttentionDtype::F32).unwrap();
    for name in ["attention.l2.h3", "relevancy.vit", "causal.max"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
            .args(["report", file.to_str().unwrap(), "--json", "--token", "2"])
            .args(["--method", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id: MapId = name.parse().unwrap();
        assert_eq!(j["map_id"], id.to_string());
        let want = catalogue::explain(&s, &[2], &id).unwrap();
        assert_eq!(json_map(&j), want.grid.values, "{name}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args([
            "report",
            file.to_str().unwrap(),
            "--method",
            "attention.l9.h0",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("layer 9") && !err.contains("panicked"),
        "{err}"
    );
}

/// A session of the tiny Qwen2-VL fixture on the 48x36 image (one 3x4 region), with relevancy
/// and causal results for every answer token.
fn qwen_session(dir: &Path) -> Session {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let file = dir.join("q.session");
    let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args(["run", "--model"])
        .arg(fixtures.join("tiny-qwen2-vl"))
        .arg("--image")
        .arg(fixtures.join("image.png"))
        .args([
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "4",
        ])
        .args(["--relevancy", "--causal", "--f32-attention", "--save"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    session::load(&file).unwrap()
}

#[test]
fn a_qwen_session_gives_the_same_numbers_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let s = qwen_session(dir.path());
    assert_eq!(s.manifest.regions.len(), 1);
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, s.clone(), None);
    let eval = lvlmscope::eval::scene_maps(&s, 0).unwrap();
    for name in IDS {
        let id: MapId = name.parse().unwrap();
        let catalogue = catalogue::explain(&s, &[0], &id).unwrap();
        let [region] = &catalogue.regions[..] else {
            panic!("{name}: {} regions", catalogue.regions.len())
        };
        assert_eq!([region.grid.rows, region.grid.cols], [3, 4], "{name}");
        assert_eq!(region.aspect(), 48.0 / 36.0, "{name}");
        assert_eq!(catalogue.cells(), catalogue.grid.values, "{name}");
        assert!(app.show(id), "{name}");
        let shown = app.doc.view.map.as_ref().unwrap_or_else(|| {
            panic!("{name}: {:?}", app.doc.view.map_missing);
        });
        assert_eq!(shown.values, catalogue.grid.values, "app, {name}");
        let opts = ReportOptions {
            token: Some(0),
            method: Some(name.to_string()),
            ..Default::default()
        };
        let j = to_json(&s, &compute(&s, &opts).unwrap());
        assert_eq!(json_map(&j), catalogue.grid.values, "report, {name}");
        assert_eq!(
            json_map(&j["regions"][0]),
            catalogue.grid.values,
            "report regions, {name}"
        );
        if let Some(i) = MapId::STANDARD.iter().position(|m| *m == id) {
            assert_eq!(eval[i], catalogue.cells(), "eval, {name}");
        }
    }
}
