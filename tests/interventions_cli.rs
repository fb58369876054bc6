//! `eval --heads`, `eval --sanity`, `compare` and the `attention.heads.*` maps end to end on
//! the demo model (the source tree's `assets/demo-model`) and the tiny fixtures: JSON shapes,
//! scores in range, the best heads' map equal to the named head's, the sanity check's flags,
//! a session compared with itself and with another prompt, and one-sentence errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn demo_model() -> PathBuf {
    root().join("assets/demo-model")
}

fn lvlmscope(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_sentence_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn demo_session(dir: &Path, name: &str, scene: &str, prompt: &str) -> PathBuf {
    let save = dir.join(name);
    let model = demo_model();
    let image = root().join(format!("assets/demo-scenes/{scene}.png"));
    ok(&lvlmscope(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "4",
        "--save",
        save.to_str().unwrap(),
    ]));
    save
}

#[test]
fn eval_heads_scores_every_head_and_names_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("heads.json");
    let model = demo_model();
    let out = ok(&lvlmscope(&[
        "eval",
        "--heads",
        "--model",
        model.to_str().unwrap(),
        "--scenes",
        "8",
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(out.contains("top 10 heads"), "{out}");
    assert!(out.contains("pointing (layer × head)"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let heads = v["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 16, "4 layers × 4 heads");
    for h in heads {
        for key in [
            "pointing",
            "mass_in_mask",
            "pointing_overlap",
            "pointing_tolerance",
        ] {
            let x = h[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{key} = {x}");
        }
    }
    assert_eq!(v["top"].as_array().unwrap().len(), 10);
    assert_eq!(v["pointing_grid"].as_array().unwrap().len(), 4);
    assert_eq!(v["tolerance_grid"].as_array().unwrap().len(), 4);
    // 15 px at a 500-px long side, carried to the 64-px scenes
    assert!((v["parameters"]["tolerance_px"].as_f64().unwrap() - 1.92).abs() < 1e-9);
    assert!(out.contains("±15 px"), "{out}");
    let top = &v["top"][0];
    let best = format!("attention.heads.l{}h{}", top["layer"], top["head"]);
    assert_eq!(v["best"], best);
    // the top list is sorted by pointing
    let p: Vec<f64> = v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pointing"].as_f64().unwrap())
        .collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");

    // report --heads FILE resolves attention.heads.best to that head: the same map as
    // attention.l{l}.h{h}
    let s = demo_session(
        tmp.path(),
        "a.session",
        "scene_0",
        "What color is the square?",
    );
    let report = |method: &str, extra: &[&str]| -> Value {
        let mut args = vec!["report", s.to_str().unwrap(), "--method", method, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&lvlmscope(&args))).unwrap()
    };
    let via_best = report("attention.heads.best", &["--heads", json.to_str().unwrap()]);
    let named = report(
        &format!("attention.l{}.h{}", top["layer"], top["head"]),
        &[],
    );
    assert_eq!(via_best["map_id"], best);
    assert_eq!(via_best["map"], named["map"]);
    assert_eq!(via_best["method"], "attention");
}

#[test]
fn heads_maps_average_their_heads_and_best_needs_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let s = demo_session(
        tmp.path(),
        "a.session",
        "scene_3",
        "What shape is the red object?",
    );
    let s = s.to_str().unwrap();
    let map = |method: &str| -> Vec<f64> {
        let v: Value = serde_json::from_str(&ok(&lvlmscope(&[
            "report", s, "--method", method, "--json",
        ])))
        .unwrap();
        v["map"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    let both = map("attention.heads.l2h0+l1h3");
    let (a, b) = (map("attention.l2.h0"), map("attention.l1.h3"));
    for i in 0..both.len() {
        assert!((both[i] - (a[i] + b[i]) / 2.0).abs() < 1e-6, "patch {i}");
    }
    // the source tree's demo model is the demo: its best heads are known
    ok(&lvlmscope(&[
        "report",
        s,
        "--method",
        "attention.heads.best",
        "--json",
    ]));
    // a model without scores: one sentence that says what to do
    let fixture = root().join("tests/fixtures");
    let other = tmp.path().join("gqa.session");
    ok(&lvlmscope(&[
        "run",
        "--model",
        fixture.join("tiny-llava-gqa").to_str().unwrap(),
        "--image",
        fixture.join("image.png").to_str().unwrap(),
        "--prompt",
        "What is in the picture?",
        "--max-new-tokens",
        "2",
        "--save",
        other.to_str().unwrap(),
    ]));
    one_sentence_error(
        &lvlmscope(&[
            "report",
            other.to_str().unwrap(),
            "--method",
            "attention.heads.best",
        ]),
        "eval --heads",
    );
    one_sentence_error(
        &lvlmscope(&["report", s, "--method", "attention.heads.l9h0"]),
        "layer 9",
    );
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{\"heads\": 3}").unwrap();
    one_sentence_error(
        &lvlmscope(&[
            "report",
            s,
            "--method",
            "attention.heads.best",
            "--heads",
            bad.to_str().unwrap(),
        ]),
        "head score file",
    );
}

#[test]
fn eval_sanity_reports_rho_per_method_and_step_and_flags_the_control() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("sanity.json");
    let model = demo_model();
    let out = ok(&lvlmscope(&[
        "eval",
        "--sanity",
        "--model",
        model.to_str().unwrap(),
        "--scenes",
        "4",
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(out.contains("Spearman ρ"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["parameters"]["steps"].as_array().unwrap().len(), 4);
    assert_eq!(v["parameters"]["steps"][3], serde_json::json!([0, 3]));
    let methods = v["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 8);
    let by = |name: &str| methods.iter().find(|m| m["method"] == name).unwrap();
    // the random baseline does not depend on the model: ρ = 1 and flagged
    let random = by("random");
    assert!(random["rho"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.as_f64().unwrap() == 1.0));
    assert_eq!(random["flagged"], true);
    // the last layer's attention changes once the last layer is random
    let last = by("attention.last.mean");
    assert!(last["rho"][0].as_f64().unwrap() < 0.9, "{last}");
    assert_eq!(last["flagged"], false);
}

#[test]
fn compare_a_session_with_itself_and_with_another_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let a = demo_session(
        tmp.path(),
        "a.session",
        "scene_0",
        "What color is the square?",
    );
    let b = demo_session(
        tmp.path(),
        "b.session",
        "scene_0",
        "What shape is the purple object?",
    );
    let c = demo_session(
        tmp.path(),
        "c.session",
        "scene_2",
        "What color is the square?",
    );
    let (a, b, c) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
    );
    let json = |x: &str, y: &str, extra: &[&str]| -> Value {
        let mut args = vec!["compare", x, y, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&lvlmscope(&args))).unwrap()
    };
    let same = json(a, a, &["--token", "0", "--token", "1"]);
    assert_eq!(same["same_image"], true);
    assert_eq!(same["maps"].as_array().unwrap().len(), 2);
    for m in same["maps"].as_array().unwrap() {
        assert!(m["difference"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d.as_f64().unwrap() == 0.0));
        assert!((m["rank_correlation"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    }
    let prompts = json(a, b, &[]);
    assert_eq!(prompts["same_image"], true);
    assert_ne!(prompts["a"]["prompt"], prompts["b"]["prompt"]);
    let m = &prompts["maps"][0];
    let (ma, mb, d) = (&m["a"], &m["b"], &m["difference"]);
    for i in 0..64 {
        let want = ma[i].as_f64().unwrap() - mb[i].as_f64().unwrap();
        assert!((d[i].as_f64().unwrap() - want).abs() < 1e-6);
    }
    for t in prompts["a"]["tokens"].as_array().unwrap() {
        let share = t["attention"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share));
    }
    // relevancy the sessions lack is computed with their model
    let images = json(a, c, &["--method", "relevancy"]);
    assert_eq!(images["same_image"], false);
    assert!(images["maps"][0]["difference"].is_null());
    assert_eq!(images["method"], "relevancy.combined");
    // causal needs attn.full: one sentence says so
    one_sentence_error(
        &lvlmscope(&["compare", a, c, "--method", "causal"]),
        "run with --causal",
    );

    let text = ok(&lvlmscope(&["compare", a, b]));
    assert!(
        text.contains("A  prompt  What color is the square?"),
        "{text}"
    );
    assert!(text.contains("A − B"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("  |  ")).count(),
        8,
        "one line per grid row: {text}"
    );

    one_sentence_error(
        &lvlmscope(&["compare", a, b, "--token", "40"]),
        "token 40 does not exist in session A",
    );
    one_sentence_error(
        &lvlmscope(&["compare", a, "/nonexistent.session"]),
        "/nonexistent.session",
    );
    one_sentence_error(
        &lvlmscope(&["compare", a, b, "--method", "gradcam"]),
        "unknown map",
    );
}

#[test]
fn the_lens_is_cached_in_the_session_and_read_back_as_a_catalogue_map() {
    let tmp = tempfile::tempdir().unwrap();
    let s = demo_session(
        tmp.path(),
        "a.session",
        "scene_1",
        "What color is the triangle?",
    );
    let s = s.to_str().unwrap();
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["report", s, "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(&lvlmscope(&all))).unwrap()
    };
    // not cached yet: the catalogue map says how to compute it
    one_sentence_error(
        &lvlmscope(&["report", s, "--method", "lens.l2"]),
        "--method lens --token 0 --layer 2 --cache",
    );
    let computed = json(&["--method", "lens", "--layer", "2", "--cache"]);
    assert_eq!(computed["layer"], 2);
    let flat = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|x| match x.as_array() {
                Some(row) => row.iter().map(|y| y.as_f64().unwrap()).collect(),
                None => vec![x.as_f64().unwrap()],
            })
            .collect()
    };
    // the catalogue map reads the cache: the same numbers (JSON f32 round trip)
    let map = json(&["--method", "lens.l2"]);
    assert_eq!(map["map_id"], "lens.l2");
    assert_eq!(map["method"], "lens");
    let (a, b) = (flat(&computed["map"]), flat(&map["map"]));
    assert_eq!(a.len(), 64);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6);
    }
    // the cached reading needs no model: a missing folder only loses the token texts
    let cached = json(&[
        "--method",
        "lens",
        "--layer",
        "2",
        "--model",
        "/nonexistent",
    ]);
    assert_eq!(cached["map"], computed["map"]);
    assert_eq!(cached["curve"].as_array().unwrap().len(), 4);
    // another layer is not cached, so that one needs the model
    one_sentence_error(
        &lvlmscope(&[
            "report",
            s,
            "--method",
            "lens",
            "--layer",
            "1",
            "--model",
            "/nonexistent",
        ]),
        "/nonexistent",
    );
}

#[test]
fn knockout_and_lens_take_device_and_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let s = demo_session(
        tmp.path(),
        "a.session",
        "scene_0",
        "What color is the square?",
    );
    let s = s.to_str().unwrap();
    let args = [
        "knockout", s, "--block", "image", "--layers", "0-3", "--json", "--device", "cpu",
        "--dtype", "f32",
    ];
    let v: Value = serde_json::from_str(&ok(&lvlmscope(&args))).unwrap();
    assert!(v["p_knockout"].as_f64().unwrap() < v["p_original"].as_f64().unwrap());
    one_sentence_error(
        &lvlmscope(&[
            "knockout", s, "--block", "image", "--layers", "0", "--dtype", "f8",
        ]),
        "f8",
    );
    one_sentence_error(
        &lvlmscope(&["report", s, "--method", "lens", "--device", "tpu"]),
        "tpu",
    );
}

/// The shipped demo has one localization head (issue 16's target): on the held-out scenes of
/// `eval --heads`' default (seed 2, 50 scenes) and on another held-out set (seed 3, 100 scenes)
/// the best single head puts its top patch on the asked-about object, by the strict pointing
/// game, in at least 0.9 of the scenes, whatever the kind of question; and it is the same head
/// on both sets. (`tools/train_demo.py --localize-weight` trains it; `eval --heads` finds it
/// without being told which.)
#[test]
fn the_demo_has_a_localization_head_that_eval_heads_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut best = Vec::new();
    for (seed, scenes) in [("2", "50"), ("3", "100")] {
        let json = tmp.path().join(format!("heads-{seed}.json"));
        ok(&lvlmscope(&[
            "eval",
            "--heads",
            "--seed",
            seed,
            "--scenes",
            scenes,
            "--json",
            json.to_str().unwrap(),
        ]));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let top = &v["top"][0];
        let pointing = top["pointing"].as_f64().unwrap();
        assert!(
            pointing >= 0.9,
            "seed {seed}: best head l{}h{} points at the object in {pointing} of the scenes",
            top["layer"],
            top["head"]
        );
        for kind in v["kinds"].as_array().unwrap() {
            let at = |grid: &str| {
                kind[grid][top["layer"].as_u64().unwrap() as usize]
                    [top["head"].as_u64().unwrap() as usize]
                    .as_f64()
                    .unwrap()
            };
            assert!(
                at("overlap_grid") >= 0.85,
                "seed {seed}: the best head on {} questions: overlap {}",
                kind["kind"],
                at("overlap_grid")
            );
        }
        best.push(v["best"].clone());
    }
    assert_eq!(best[0], best[1], "the same head on both sets");
}
