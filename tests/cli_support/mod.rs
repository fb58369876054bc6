//! Running the binary on bad input and checking its answer: shared by the command-line error
//! tests (`cli_errors`, `robustness_cli`).

use std::path::{Path, PathBuf};
use std::process::Command;

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
