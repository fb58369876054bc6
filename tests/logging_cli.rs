//! `LVLMSCOPE_LOG`: a `run` on a fixture writes its stage spans to the log file and says where
//! on stderr; unset, nothing is written; a bad directive or an unwritable file is one sentence
//! and the run still succeeds.

mod cli_support;

use std::path::Path;
use std::process::{Command, Output};

use cli_support::fixtures;

/// Runs `lvlmscope run` on the fixture LLaVA with relevancy, the cache folder moved into `dir`
/// and the logging variables `env` (any other removed).
fn run_logged(dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lvlmscope"));
    cmd.args(["run", "--model"])
        .arg(fixtures().join("tiny-llava-full"))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args(["--prompt", "What is it?", "--max-new-tokens", "4"])
        .arg("--relevancy")
        .arg("--save")
        .arg(dir.join("s.session"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("LVLMSCOPE_LOG")
        .env_remove("LVLMSCOPE_LOG_FILE")
        .env_remove("LVLMSCOPE_LOG_SYNC");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("binary runs");
    assert!(
        out.status.success(),
        "the run must succeed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The names of the spans whose closing the log records: the innermost span of each line's
/// context (`outer{a=1}:inner{b=x y}: target: close ...`), braces skipped.
fn closed_spans(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let head = l.split_once(": close time.busy=")?.0;
            let context = head.rsplit_once(": ")?.0;
            let context = context.split_once(char::is_whitespace)?.1.trim_start();
            let context = context.split_once(char::is_whitespace)?.1.trim_start();
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in context.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    ':' if depth == 0 => start = i + 1,
                    _ => {}
                }
            }
            let last = &context[start..];
            Some(last.split('{').next()?.to_string())
        })
        .collect()
}

#[test]
fn info_writes_the_stage_spans_to_the_file_and_says_where() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("run.log");
    let out = run_logged(
        tmp.path(),
        &[
            ("LVLMSCOPE_LOG", "info"),
            ("LVLMSCOPE_LOG_FILE", log.to_str().unwrap()),
        ],
    );
    let err = stderr(&out);
    let told: Vec<&str> = err.lines().filter(|l| l.contains("logging to")).collect();
    assert_eq!(told, [format!("lvlmscope: logging to {}", log.display())]);
    let text = std::fs::read_to_string(&log).expect("the log file is written");
    let spans = closed_spans(&text);
    for stage in [
        "load_model",
        "preprocess",
        "upload",
        "vision_tower",
        "projector",
        "encode_image",
        "prefill",
        "decode",
        "relevancy_forward",
        "decoder_backward",
        "vision_backward",
        "relevancy",
    ] {
        assert!(
            spans.iter().any(|s| s == stage),
            "no {stage} span closed in {spans:?}"
        );
    }
    assert!(text.contains("time.idle="), "closings carry idle times");
    assert!(
        !spans
            .iter()
            .any(|s| s == "decoder_layer" || s == "decode_step"),
        "per-layer and per-step spans are debug: {spans:?}"
    );
    assert!(!text.contains('\u{1b}'), "no colour codes in the file");
}

#[test]
fn debug_with_sync_adds_layers_and_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("debug.log");
    run_logged(
        tmp.path(),
        &[
            ("LVLMSCOPE_LOG", "lvlmscope=debug"),
            ("LVLMSCOPE_LOG_FILE", log.to_str().unwrap()),
            ("LVLMSCOPE_LOG_SYNC", "1"),
        ],
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let spans = closed_spans(&text);
    for stage in [
        "decoder_layer",
        "vision_layer",
        "decode_step",
        "copy_to_host",
        "backward_layer",
        "vision_backward_layer",
    ] {
        assert!(spans.iter().any(|s| s == stage), "no {stage} in {spans:?}");
    }
    assert!(text.contains("sync=true"), "the first line says spans wait");
}

#[test]
fn unset_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("never.log");
    let out = run_logged(tmp.path(), &[("LVLMSCOPE_LOG_FILE", log.to_str().unwrap())]);
    assert!(!log.exists(), "no log without LVLMSCOPE_LOG");
    assert!(
        !tmp.path().join("cache/lvlmscope/lvlmscope.log").exists(),
        "no log in the cache folder either"
    );
    assert!(!stderr(&out).contains("logging"), "{}", stderr(&out));
}

#[test]
fn without_a_file_the_log_goes_to_the_cache_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_logged(tmp.path(), &[("LVLMSCOPE_LOG", "warn")]);
    let path = tmp.path().join("cache/lvlmscope/lvlmscope.log");
    assert!(path.exists(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("logging to {}", path.display())));
}

/// Asserts stderr has exactly one line of lvlmscope's own, naming `needle` and ending "running
/// without a log" (the run's summary line after it has no prefix).
fn one_sentence(out: &Output, needle: &str) {
    let err = stderr(out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("lvlmscope: "))
        .collect();
    assert_eq!(lines.len(), 1, "one sentence expected: {err:?}");
    assert!(lines[0].contains(needle), "{needle:?} not in {err:?}");
    assert!(lines[0].ends_with("running without a log"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_bad_directive_is_one_sentence_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("bad.log");
    let out = run_logged(
        tmp.path(),
        &[
            ("LVLMSCOPE_LOG", "lvlmscope=loud"),
            ("LVLMSCOPE_LOG_FILE", log.to_str().unwrap()),
        ],
    );
    one_sentence(&out, "LVLMSCOPE_LOG=\"lvlmscope=loud\" is not a log filter");
    assert!(!log.exists());
    assert!(tmp.path().join("s.session").exists());
}

#[test]
fn an_unwritable_file_is_one_sentence_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let log = blocker.join("run.log");
    let out = run_logged(
        tmp.path(),
        &[
            ("LVLMSCOPE_LOG", "info"),
            ("LVLMSCOPE_LOG_FILE", log.to_str().unwrap()),
        ],
    );
    one_sentence(&out, "could not write the log file");
    assert!(tmp.path().join("s.session").exists());
}
