//! Two bugs found when lvlmscope was tried as a new user would (issue 12 §3): a model that
//! generates its own image-token id, and errors printed with `RUST_BACKTRACE=1` set.

use std::path::{Path, PathBuf};
use std::process::Command;

use lvlmscope::session;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn a_generated_image_token_is_an_ordinary_token() {
    let model = "tiny-llava-imgtok";
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("reference/{model}.json"))).unwrap(),
    )
    .unwrap();
    let want: Vec<i64> = json["output_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(
        want.contains(&3),
        "the fixture generates the image token (id 3)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let save = tmp.path().join("s.session");
    let out = Command::new(BIN)
        .args(["run", "--model"])
        .arg(fixtures().join(model))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args(["--prompt", json["prompt"].as_str().unwrap()])
        .args(["--max-new-tokens", "8", "--relevancy", "--save"])
        .arg(&save)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stderr}");
    let s = session::load(&save).unwrap();
    assert_eq!(
        s.output_ids, want,
        "the answer goes on past the image token"
    );
    let llm = s.relevancy_llm.expect("relevancy of every token");
    assert_eq!(llm.shape, vec![8, s.input_ids.len() + 7]);
}

#[test]
fn errors_stay_one_sentence_with_rust_backtrace_set() {
    // A processor that makes 40-pixel images for a 32-pixel tower: the vision tower refuses
    // them with a candle error, which carries a backtrace when RUST_BACKTRACE is set.
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny-llava-gqa")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let pre = model.join("preprocessor_config.json");
    let text = std::fs::read_to_string(&pre)
        .unwrap()
        .replace("\"height\": 32", "\"height\": 40")
        .replace("\"width\": 32", "\"width\": 40")
        .replace("\"shortest_edge\": 32", "\"shortest_edge\": 40");
    std::fs::write(&pre, text).unwrap();
    for backtrace in ["1", "full"] {
        let out = Command::new(BIN)
            .args(["run", "--model"])
            .arg(&model)
            .arg("--image")
            .arg(fixtures().join("image.png"))
            .args(["--prompt", "What is it?", "--save"])
            .arg(tmp.path().join("s.session"))
            .env("RUST_BACKTRACE", backtrace)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "must fail: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line expected: {stderr}");
        assert!(lines[0].starts_with("lvlmscope: "), "{stderr}");
        assert!(lines[0].contains("vision tower takes 32x32"), "{stderr}");
        assert_eq!(
            lines[0].matches("vision tower takes").count(),
            1,
            "said once: {stderr}"
        );
    }
}
