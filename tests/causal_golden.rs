//! CLEANN against reference results of Intel Labs' causality-lab (`tests/fixtures/cleann`):
//! every case and head must give the same nodes, explanation and per-radius sets, the same
//! importance (1e-9) and the same image weights (1e-6).

use std::collections::BTreeMap;
use std::path::Path;

use lvlmscope::explain::causal::{explain_head_f64, total_image_weights};
use lvlmscope::session::{CausalParams, CausalToken};
use serde_json::Value;

fn positions(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("position") as usize)
        .collect()
}

struct Outcome {
    heads: usize,
    failures: Vec<String>,
}

fn check_file(path: &Path) -> Outcome {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let d: Value = serde_json::from_str(&text).expect("fixture is JSON");
    let p = &d["params"];
    let params = CausalParams {
        alpha: p["alpha"].as_f64().unwrap(),
        dof: p["dof"].as_u64().unwrap() as usize,
        att_th: p["att_th"].as_f64().unwrap(),
        max_image_tokens: p["max_image_tokens"].as_u64().unwrap() as usize,
        search_radius: p["search_range"].as_u64().unwrap() as usize,
        layer: 0,
    };
    let seq_len = d["seq_len"].as_u64().unwrap() as usize;
    let span = (
        d["image_start"].as_u64().unwrap() as usize,
        d["image_len"].as_u64().unwrap() as usize,
    );
    let attention: Vec<Vec<f64>> = d["attention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            h.as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect()
        })
        .collect();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut failures = Vec::new();
    let mut heads = 0;
    for case in d["cases"].as_array().unwrap() {
        let target = case["target"].as_u64().unwrap() as usize;
        let mut token = CausalToken {
            target,
            heads: Vec::new(),
        };
        for exp in case["heads"].as_array().unwrap() {
            heads += 1;
            let h = exp["head"].as_u64().unwrap() as usize;
            let got = explain_head_f64(&attention[h], seq_len, span, target, h, &params);
            let tag = format!("{name} target {target} head {h}");
            if got.nodes != positions(&exp["nodes"]) {
                failures.push(format!(
                    "{tag}: nodes {:?} vs {:?}",
                    got.nodes, exp["nodes"]
                ));
            }
            if got.explanation != positions(&exp["explanation"]) {
                failures.push(format!(
                    "{tag}: explanation {:?} vs {:?}",
                    got.explanation, exp["explanation"]
                ));
            }
            let want_radius: BTreeMap<usize, Vec<usize>> = exp["per_radius"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.parse().unwrap(), positions(v)))
                .collect();
            if got.per_radius != want_radius {
                failures.push(format!(
                    "{tag}: per_radius {:?} vs {:?}",
                    got.per_radius, want_radius
                ));
            }
            let imp = exp["importance"].as_f64().unwrap();
            if (got.importance - imp).abs() > 1e-9 {
                failures.push(format!("{tag}: importance {} vs {imp}", got.importance));
            }
            let want_w: BTreeMap<usize, f64> = exp["image_weights"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.parse().unwrap(), v.as_f64().unwrap()))
                .collect();
            let keys_equal = got.image_weights.keys().eq(want_w.keys());
            let close = keys_equal
                && got
                    .image_weights
                    .values()
                    .zip(want_w.values())
                    .all(|(a, b)| (a - b).abs() <= 1e-6);
            if !close {
                failures.push(format!(
                    "{tag}: image weights {:?} vs {:?}",
                    got.image_weights, want_w
                ));
            }
            token.heads.push(got);
        }
        if let Some(total) = case["total_image_weights"].as_array() {
            let got = total_image_weights(&token, span);
            let want: Vec<f64> = total.iter().map(|x| x.as_f64().unwrap()).collect();
            let ok = got.len() == want.len()
                && got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-5);
            if !ok {
                failures.push(format!(
                    "{name} target {target}: total image weights differ"
                ));
            }
        }
    }
    Outcome { heads, failures }
}

#[test]
fn cleann_matches_causality_lab_on_every_case_and_head() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cleann");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "expected the six golden files");
    let mut total = 0;
    let mut failures = Vec::new();
    for f in &files {
        let o = check_file(f);
        total += o.heads;
        failures.extend(o.failures);
    }
    assert!(total > 0);
    assert!(
        failures.is_empty(),
        "{} mismatches over {total} heads:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Extra reference files (same format) from the folder named by `LVLMSCOPE_CLEANN_EXTRA`, e.g.
/// larger cases made by hand with causality-lab: `cargo test --test causal_golden -- --ignored`.
#[test]
#[ignore = "needs LVLMSCOPE_CLEANN_EXTRA pointing at extra reference files"]
fn cleann_matches_extra_reference_files() {
    let dir = std::env::var("LVLMSCOPE_CLEANN_EXTRA").expect("LVLMSCOPE_CLEANN_EXTRA is set");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("folder readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no JSON files in {dir}");
    let mut total = 0;
    let mut failures = Vec::new();
    for f in &files {
        let o = check_file(f);
        total += o.heads;
        failures.extend(o.failures);
    }
    eprintln!("{} files, {total} heads checked", files.len());
    assert!(
        failures.is_empty(),
        "{} mismatches over {total} heads:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
