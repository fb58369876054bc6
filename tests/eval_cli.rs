//! `lvlmscope eval` end to end on the demo model: a table on stdout, a JSON file whose every
//! score lies in [0, 1], the same JSON for the same seed, and clear errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-model")
}

fn eval(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("eval")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn run_to_json(dir: &Path, name: &str, model: Option<&Path>) -> (String, String) {
    let json = dir.join(name);
    let mut args = vec!["--scenes", "3", "--seed", "1", "--steps", "4", "--json"];
    let json_arg = json.to_str().unwrap().to_string();
    args.push(&json_arg);
    let model_arg;
    if let Some(m) = model {
        model_arg = m.to_str().unwrap().to_string();
        args.extend(["--model", &model_arg]);
    }
    let out = eval(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "eval failed: {stderr}");
    (
        std::fs::read_to_string(&json).expect("the JSON file is written"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn in_unit(v: &serde_json::Value, what: &str) {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{what} = {x} is outside [0, 1]");
}

#[test]
fn eval_writes_scores_in_the_unit_interval_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, stdout) = run_to_json(tmp.path(), "a.json", Some(&demo_model()));
    let (second, _) = run_to_json(tmp.path(), "b.json", Some(&demo_model()));
    assert_eq!(
        first, second,
        "two runs with one seed must write the same JSON"
    );

    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["parameters"]["scenes"], 3);
    assert_eq!(v["parameters"]["seed"], 1);
    let ks = v["parameters"]["ks"].as_array().unwrap();
    assert_eq!(ks.len(), 5);
    in_unit(&v["answer_accuracy"], "answer accuracy");
    let methods = v["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    for expected in [
        "attention.last.mean",
        "attention.layers.mean",
        "attention.last.max",
        "relevancy.decoder",
        "relevancy.vision",
        "relevancy.combined",
        "causal",
        "random",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
        assert!(
            stdout.contains(expected),
            "{expected} missing from the table"
        );
    }
    for m in methods {
        let name = m["method"].as_str().unwrap();
        for key in ["pointing", "mass_in_mask", "deletion_area"] {
            in_unit(&m[key], &format!("{name}.{key}"));
        }
        let curve = m["deletion"].as_array().unwrap();
        assert_eq!(curve.len(), ks.len());
        curve.iter().for_each(|p| in_unit(p, name));
        let drop = m["drop"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&drop), "{name} drop {drop}");
    }
    let scenes = v["scenes"].as_array().unwrap();
    assert!(!scenes.is_empty() && scenes.len() <= 3);
    for s in scenes {
        assert!(s["methods"].as_array().unwrap().len() == methods.len());
        in_unit(&s["object_area"], "object area");
        for m in s["methods"].as_array().unwrap() {
            in_unit(&m["mass_in_mask"], "scene mass in mask");
            in_unit(&m["deletion_area"], "scene deletion area");
            assert!(m["pointing"].is_boolean());
            // The first point of every curve is the same: the original image.
            assert_eq!(m["deletion"][0], s["methods"][0]["deletion"][0]);
        }
    }
}

#[test]
fn eval_runs_on_the_embedded_demo_model_without_model_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let (json, stdout) = run_to_json(tmp.path(), "demo.json", None);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["parameters"]["model"], "embedded demo model");
    assert!(stdout.contains("answer accuracy"));
}

#[test]
fn bad_input_gives_one_sentence_and_a_failure_code() {
    let missing = eval(&["--model", "/nonexistent/model-folder", "--scenes", "2"]);
    let zero = eval(&["--scenes", "0"]);
    let absurd = eval(&["--scenes", "100000000"]);
    for (what, out) in [
        ("missing model", missing),
        ("zero", zero),
        ("absurd", absurd),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: must fail");
        assert!(stderr.starts_with("lvlmscope: "), "{what}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

/// `eval --map ID` scores any catalogue map after the standard ones (here the vision tower's own
/// attention, which every family now records, and one named head): its row is in the JSON
/// and in the table, which widens its method column so the numbers stay in their columns; a map
/// repeated on the command line is scored once, and a map id that does not exist is one
/// sentence before the model loads.
#[test]
fn eval_map_scores_extra_catalogue_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("maps.json");
    let out = eval(&[
        "--scenes",
        "2",
        "--steps",
        "4",
        "--map",
        "attention.vision.last.mean",
        "--map",
        "attention.l2.h1",
        "--map",
        "attention.l2.h1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let names: Vec<&str> = v["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    let last = &names[names.len() - 2..];
    assert_eq!(last, ["attention.vision.last.mean", "attention.l2.h1"]);
    for m in v["methods"].as_array().unwrap().iter().rev().take(2) {
        in_unit(&m["pointing"], "pointing");
        in_unit(&m["mass_in_mask"], "mass in mask");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("method"))
        .take(names.len() + 1)
        .collect();
    assert_eq!(table.len(), names.len() + 1, "{stdout}");
    let width = table[0].chars().count();
    for row in &table {
        assert_eq!(
            row.chars().count(),
            width,
            "a row out of its columns: {row:?}"
        );
    }

    let bad = eval(&["--scenes", "2", "--map", "attention.nope"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.starts_with("lvlmscope: unknown map"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
