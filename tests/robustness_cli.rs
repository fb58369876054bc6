//! A demanding user's bad inputs, each once broken: one clear sentence on stderr and a non-zero
//! exit, never a panic, an abort or a huge allocation.

use std::path::{Path, PathBuf};

mod cli_support;

use cli_support::{assert_clear_failure, fixtures, lvlmscope};

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
