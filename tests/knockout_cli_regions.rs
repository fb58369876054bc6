//! `lvlmscope knockout` and `lvlmscope report --method lens` on sessions `lvlmscope run` makes
//! with the Qwen2-VL and LLaVA-NeXT / OneVision fixtures: the JSON numbers are transformers'
//! (`tests/fixtures/reference/knockout.json`), `--region` picks the cells that patches count
//! and the lens cells printed, and a region the session lacks is one sentence.

mod cli_support;

use std::path::Path;
use std::process::Output;

use cli_support::{assert_clear_failure, fixtures, make_session, on_session as lvlmscope};
use serde_json::Value;

fn json_of(out: Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reference() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/knockout.json")).unwrap(),
    )
    .unwrap()
}

fn case(model: &str, block: &str, token: u64) -> Value {
    reference()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == model && c["block"] == block && c["token"] == token)
        .unwrap()
        .clone()
}

fn lens_case(model: &str, token: u64) -> Value {
    reference()["lens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == model && c["token"] == token)
        .unwrap()
        .clone()
}

fn close(a: &Value, b: &Value) -> bool {
    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4
}

fn all_close(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(x, y))
}

fn assert_knockout(got: &Value, want: &Value) {
    assert_eq!(got["keys"], want["keys"], "{got}");
    assert!(close(&got["p_original"], &want["p_original"]), "{got}");
    assert!(close(&got["p_knockout"], &want["p_knockout"]), "{got}");
    assert_eq!(got["greedy_knockout"], want["greedy_knockout"]);
}

#[test]
fn qwen_vl_knockout_and_lens_are_transformers_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-qwen2-vl";
    let s = make_session(tmp.path(), model);
    let got = json_of(lvlmscope(
        &[
            "knockout",
            "--token",
            "2",
            "--block",
            "patches:0,1,5-7",
            "--layers",
            "1",
            "--json",
        ],
        &s,
    ));
    assert_knockout(&got, &case(model, "patches:0,1,5-7", 2));
    let got = json_of(lvlmscope(
        &[
            "knockout", "--token", "0", "--block", "image", "--layers", "0-1", "--json",
        ],
        &s,
    ));
    assert_knockout(&got, &case(model, "image", 0));

    let lens = json_of(lvlmscope(
        &[
            "report", "--method", "lens", "--token", "1", "--layer", "0", "--json",
        ],
        &s,
    ));
    let want = lens_case(model, 1);
    assert_eq!(lens["grid"], serde_json::json!([3, 4]));
    assert!(all_close(
        lens["map"].as_array().unwrap(),
        want["map"].as_array().unwrap()
    ));
    let probs: Vec<Value> = lens["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prob"].clone())
        .collect();
    assert!(all_close(&probs, want["curve"].as_array().unwrap()));
    assert_eq!(lens["top_ids"], want["top_ids"]);
}

#[test]
fn anyres_knockout_counts_the_region_and_the_lens_prints_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-llava-next";
    let s = make_session(tmp.path(), model);
    let got = json_of(lvlmscope(
        &[
            "knockout",
            "--token",
            "2",
            "--block",
            "patches:0,1,5-7",
            "--layers",
            "1",
            "--region",
            "highres",
            "--json",
        ],
        &s,
    ));
    assert_knockout(&got, &case(model, "patches:0,1,5-7", 2));
    assert_eq!(got["region"], "highres");
    // every region's cells in input order: the base grid's 16, then the high-res grid's
    let got = json_of(lvlmscope(
        &[
            "knockout",
            "--token",
            "3",
            "--block",
            "patches:14-18",
            "--layers",
            "0-1",
            "--json",
        ],
        &s,
    ));
    assert_knockout(&got, &case(model, "patches:14-18", 3));
    // a relevancy map's top cells of the base region (relevancy computed on the way)
    let got = json_of(lvlmscope(
        &[
            "knockout",
            "--token",
            "4",
            "--block",
            "map:relevancy.decoder:20",
            "--layers",
            "0-1",
            "--region",
            "base",
            "--json",
        ],
        &s,
    ));
    assert_knockout(&got, &case(model, "map:relevancy.decoder:20", 4));

    // the lens over both regions, then the high-res one alone, cached and read back
    let want = lens_case(model, 3);
    let map = want["map"].as_array().unwrap();
    let args = [
        "report", "--method", "lens", "--token", "3", "--layer", "1", "--json",
    ];
    let both = json_of(lvlmscope(&args, &s));
    assert!(all_close(both["map"].as_array().unwrap(), map));
    assert_eq!(
        both["regions"],
        serde_json::json!([
            {"kind": "base", "grid": [4, 4], "offset": 0},
            {"kind": "highres", "grid": [6, 8], "offset": 16}
        ])
    );
    let mut cache = args.to_vec();
    cache.extend(["--region", "highres", "--cache"]);
    let high = json_of(lvlmscope(&cache, &s));
    assert_eq!(high["grid"], serde_json::json!([6, 8]));
    assert!(all_close(high["map"].as_array().unwrap(), &map[16..]));
    assert_eq!(
        high["top_ids"].as_array().unwrap()[..],
        want["top_ids"].as_array().unwrap()[16..]
    );
    // now cached: read back from the file, the base region as text
    let out = lvlmscope(
        &[
            "report", "--method", "lens", "--token", "3", "--layer", "1", "--region", "base",
        ],
        &s,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("base region (4x4) · image patches at layer 1"),
        "{text}"
    );
    assert!(!text.contains("highres region"), "{text}");
    let rows = text
        .lines()
        .skip_while(|l| !l.contains("base region"))
        .skip(1);
    assert_eq!(rows.filter(|l| !l.trim().is_empty()).count(), 4, "{text}");
}

#[test]
fn onevision_knockout_of_the_image_span_is_transformers_number() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-llava-onevision";
    let s = make_session(tmp.path(), model);
    let got = json_of(lvlmscope(
        &[
            "knockout", "--token", "0", "--block", "image", "--layers", "0-1", "--json",
        ],
        &s,
    ));
    assert_knockout(&got, &case(model, "image", 0));
    let got = json_of(lvlmscope(
        &[
            "knockout",
            "--token",
            "1",
            "--block",
            "map:relevancy.decoder:25",
            "--layers",
            "0-1",
            "--region",
            "highres",
            "--json",
        ],
        &s,
    ));
    assert_knockout(&got, &case(model, "map:relevancy.decoder:25", 1));
}

#[test]
fn a_region_the_session_lacks_is_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let next = make_session(tmp.path(), "tiny-llava-next");
    let qwen = make_session(tmp.path(), "tiny-qwen2-vl");
    let run = |args: &[&str], s: &Path| {
        let mut all = vec![args[0], s.to_str().unwrap()];
        all.extend(&args[1..]);
        cli_support::lvlmscope(&all)
    };
    assert_clear_failure(
        run(
            &[
                "knockout",
                "--block",
                "patches:0",
                "--layers",
                "0",
                "--region",
                "image",
            ],
            &next,
        ),
        "the session has no image image region (it has base, highres)",
    );
    assert_clear_failure(
        run(
            &[
                "knockout",
                "--block",
                "patches:48",
                "--layers",
                "0",
                "--region",
                "highres",
            ],
            &next,
        ),
        "patch 48 does not exist (the highres region has 48 cells)",
    );
    assert_clear_failure(
        run(
            &["report", "--method", "lens", "--region", "highres"],
            &qwen,
        ),
        "--region highres: this session has no such image region (it has image)",
    );
    assert_clear_failure(
        run(
            &["knockout", "--block", "patches:12", "--layers", "0"],
            &qwen,
        ),
        "patch 12 does not exist (the image has 12 patches)",
    );
}
