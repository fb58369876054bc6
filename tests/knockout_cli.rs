//! `lvlmscope knockout` and `lvlmscope report --method lens` end to end on a session made by
//! `lvlmscope run` on the tiny-llava-gqa fixture: the JSON numbers are the reference's
//! (`tests/fixtures/reference/knockout.json`, transformers), bad input is one sentence.

mod cli_support;

use cli_support::{fixtures, make_session, on_session as lvlmscope};
use serde_json::Value;

fn reference_case(block: &str, token: u64, query: &str) -> Value {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/knockout.json")).unwrap(),
    )
    .unwrap();
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["model"] == "tiny-llava-gqa"
                && c["block"] == block
                && c["token"] == token
                && c["query"] == query
        })
        .unwrap()
        .clone()
}

fn close(a: &Value, b: &Value) -> bool {
    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4
}

#[test]
fn knockout_and_lens_print_the_reference_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_session(tmp.path(), "tiny-llava-gqa");
    let out = lvlmscope(
        &[
            "knockout", "--token", "0", "--block", "image", "--layers", "0-2", "--json",
        ],
        &s,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = reference_case("image", 0, "answer");
    assert!(close(&got["p_original"], &want["p_original"]), "{got}");
    assert!(close(&got["p_knockout"], &want["p_knockout"]), "{got}");
    assert_eq!(got["greedy_knockout"], want["greedy_knockout"]);
    assert_eq!(got["keys"], want["keys"]);
    assert_eq!(got["block"], "image");
    assert_eq!(got["query"], "answer");

    let out = lvlmscope(
        &[
            "knockout",
            "--block",
            "image",
            "--layers",
            "0-2",
            "--query",
            "last-question",
        ],
        &s,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("query last-question (position 26)"), "{text}");
    assert!(text.contains("Δp"), "{text}");

    let out = lvlmscope(
        &[
            "report", "--method", "lens", "--token", "1", "--layer", "0", "--json",
        ],
        &s,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lens: Value = serde_json::from_slice(&out.stdout).unwrap();
    let curve = lens["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 3);
    assert!(close(
        &curve[2]["prob"],
        &reference_case("question", 1, "answer")["p_original"]
    ));
    assert_eq!(lens["map"].as_array().unwrap().len(), 16);
    assert_eq!(lens["layer"], 0);
}

#[test]
fn bad_input_is_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let s = make_session(tmp.path(), "tiny-llava-gqa");
    for (args, want) in [
        (
            &[
                "knockout", "--token", "8", "--block", "image", "--layers", "0-1",
            ][..],
            "output token 8 does not exist",
        ),
        (
            &["knockout", "--block", "image", "--layers", "0-3"][..],
            "layers 0-3 are outside the model's decoder layers 0-2",
        ),
        (
            &["knockout", "--block", "map:nothing:10", "--layers", "0"][..],
            "unknown map \"nothing\"",
        ),
        (
            &["knockout", "--block", "patches:99", "--layers", "0"][..],
            "patch 99 does not exist",
        ),
        (
            &["report", "--method", "lens", "--layer", "3"][..],
            "layer 3 does not exist",
        ),
    ] {
        let out = lvlmscope(args, &s);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
