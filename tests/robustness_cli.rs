//! A demanding user's bad inputs, each once broken: one clear sentence on stderr and a non-zero
//! exit, never a panic, an abort or a huge allocation.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs the binary with a backtrace asked for and returns (exit code, stderr).
fn lvlmscope(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("HF_HUB_CACHE", "/nonexistent-hf-cache")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a failed run whose stderr is one line naming the problem.
fn assert_clear_failure((code, stderr): (i32, String), needle: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "backtrace: {stderr}");
    assert!(!stderr.contains("memory allocation"), "abort: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(lines[0].starts_with("lvlmscope: "), "{stderr}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in {stderr:?}"
    );
}

/// A copy of fixture model `name` in a temporary folder, to break.
fn model_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Edits the JSON file `file` of a model copy with `edit`.
fn edit_json(dir: &Path, file: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(file);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

/// `lvlmscope run` of the fixture image with `model` and extra flags, saving into `out`.
fn run(model: &Path, out: &Path, extra: &[&str]) -> (i32, String) {
    let image = fixtures().join("image.png");
    let save = out.join("s.session");
    let mut args = vec![
        "run",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "What is this?",
        "--save",
        save.to_str().unwrap(),
        "--max-new-tokens",
        "2",
    ];
    args.extend_from_slice(extra);
    lvlmscope(&args)
}

#[test]
fn qwen_preprocessor_lying_about_min_pixels_is_refused() {
    for name in ["tiny-qwen2-vl", "tiny-qwen2_5-vl"] {
        let model = model_copy(name);
        edit_json(model.path(), "preprocessor_config.json", |v| {
            v["min_pixels"] = 1_000_000_000_000u64.into();
            v["max_pixels"] = 1_000_000_000_000u64.into();
        });
        let out = tempfile::tempdir().unwrap();
        assert_clear_failure(run(model.path(), out.path(), &[]), "lower --min-pixels");
    }
}

#[test]
fn qwen_huge_min_pixels_flag_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-qwen2-vl");
    let huge = [
        "--min-pixels",
        "1000000000000",
        "--max-pixels",
        "1000000000000",
    ];
    assert_clear_failure(run(&model, out.path(), &huge), "lower --min-pixels");
}

/// A session of the LLaVA fixture with attention, relevancy and causal maps, saved into `out`.
fn llava_session(out: &Path) -> PathBuf {
    let model = fixtures().join("tiny-llava-full");
    let (code, stderr) = run(&model, out, &["--relevancy"]);
    assert_eq!(code, 0, "{stderr}");
    out.join("s.session")
}

#[test]
fn knockout_huge_patch_range_is_refused_without_allocating_it() {
    let out = tempfile::tempdir().unwrap();
    let session = llava_session(out.path());
    let session = session.to_str().unwrap();
    let args = [
        "knockout",
        session,
        "--block",
        "patches:0-4000000000",
        "--layers",
        "0",
    ];
    assert_clear_failure(lvlmscope(&args), "patch 4000000000 does not exist");
    let args = [
        "knockout",
        session,
        "--block",
        "patches:2-5",
        "--layers",
        "0",
        "--json",
    ];
    let (code, stderr) = lvlmscope(&args);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn qwen_truncated_weights_are_named_truncated() {
    for name in ["tiny-qwen2-vl", "tiny-qwen2_5-vl"] {
        let model = model_copy(name);
        let weights = model.path().join("model.safetensors");
        let len = std::fs::metadata(&weights).unwrap().len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&weights)
            .unwrap();
        file.set_len(len / 2).unwrap();
        let out = tempfile::tempdir().unwrap();
        assert_clear_failure(run(model.path(), out.path(), &[]), "is truncated");
    }
}

#[test]
fn qwen_absurd_max_new_tokens_blames_the_tokens_not_the_image() {
    let out = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-qwen2-vl");
    let image = fixtures().join("image.png");
    let save = out.path().join("s.session");
    let args = [
        "run",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "What is this?",
        "--save",
        save.to_str().unwrap(),
        "--max-new-tokens",
        "1000000000",
    ];
    assert_clear_failure(lvlmscope(&args), "lower --max-new-tokens");
}
