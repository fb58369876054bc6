//! Running the binary and checking its answer: shared by the command-line tests (`cli_errors`,
//! `robustness_cli`, the knockout and eval ones). Not every test uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The committed test fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs the binary, with a backtrace asked for and no model cache to fall back on, and returns
/// (exit code, stderr).
pub fn lvlmscope(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
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

/// Asserts a failed run whose stderr is one line, `lvlmscope: …`, naming the problem
/// (`needle`, case-insensitive): no panic, backtrace or allocation abort.
pub fn assert_clear_failure((code, stderr): (i32, String), needle: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "backtrace: {stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "panic trace: {stderr}");
    assert!(!stderr.contains("memory allocation"), "abort: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(lines[0].starts_with("lvlmscope: "), "{stderr}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in {stderr:?}"
    );
}

/// Runs `lvlmscope run` with the fixture model `model` on the fixture image (8 new tokens) and
/// saves the session in `dir` as `{model}.session`; panics with the tool's stderr on failure.
pub fn make_session(dir: &Path, model: &str) -> PathBuf {
    let save = dir.join(format!("{model}.session"));
    let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args(["run", "--model"])
        .arg(fixtures().join(model))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args([
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "8",
        ])
        .arg("--save")
        .arg(&save)
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    save
}

/// Runs the subcommand `args[0]` on `session` with the rest of `args` after it.
pub fn on_session(args: &[&str], session: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .arg(args[0])
        .arg(session)
        .args(&args[1..])
        .output()
        .expect("binary runs")
}
