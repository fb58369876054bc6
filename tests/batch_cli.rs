//! `lvlmscope batch` end to end on the fixture models: sessions equal to `lvlmscope run`'s,
//! bad lines recorded and counted in the exit code, shards, resume, and the summary files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device};
use lvlmscope::explain::catalogue::{self, MapId};
use lvlmscope::explain::faithfulness;
use lvlmscope::generate::LoadedModel;
use lvlmscope::session;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A folder with `questions.jsonl` holding `lines` and the fixture image as `img/a.png`.
fn questions(lines: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::copy(fixtures().join("image.png"), dir.path().join("img/a.png")).unwrap();
    std::fs::write(dir.path().join("questions.jsonl"), lines.join("\n")).unwrap();
    dir
}

/// Runs `lvlmscope batch` on the folder's questions with `model`, writing into `out/`.
fn batch(dir: &Path, model: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("batch")
        .arg(dir.join("questions.jsonl"))
        .arg("--model")
        .arg(fixtures().join(model))
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--max-new-tokens", "4"])
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rows of a JSONL summary.
fn rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no summary {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const GOOD: &str = r#"{"image": "img/a.png", "prompt": "What is in the picture?", "id": "q/1"}"#;

#[test]
fn good_and_bad_lines() {
    let dir = questions(&[
        GOOD,
        r#"{"image": "img/a.png", "prompt": "Is it red?"}"#,
        r#"{"image": "img/missing.png", "prompt": "Where?"}"#,
        "",
        r#"{"image": "img/a.png", "prompt": ""}"#,
        r#"{"image": "img/a.png", "prompt": "broken"#,
        r#"{"image": "img/a.png", "prompt": "Again?", "id": "q/1"}"#,
    ]);
    let out = batch(dir.path(), "tiny-llava-gqa", &[]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a failed line must fail the batch: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("4 of 6 lines failed"),
        "last stderr line: {last}"
    );

    // The session of a line is the session `lvlmscope run` writes for the same question.
    let single = dir.path().join("single.session");
    let run = Command::new(BIN)
        .args(["run", "--model"])
        .arg(fixtures().join("tiny-llava-gqa"))
        .arg("--image")
        .arg(dir.path().join("img/a.png"))
        .args([
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "4",
        ])
        .arg("--save")
        .arg(&single)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let single = session::load(&single).unwrap();
    let first = session::load(&dir.path().join("out/q_1.session")).unwrap();
    assert_eq!(first.output_ids, single.output_ids);
    assert_eq!(first.input_ids, single.input_ids);
    assert!(dir.path().join("out/2.session").is_file());
    let sessions = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("session".as_ref()))
        .count();
    assert_eq!(sessions, 2);

    let r = rows(&dir.path().join("out/summary.jsonl"));
    let ids: Vec<&str> = r.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["q_1", "2", "3", "5", "6", "q_1"]);
    let status: Vec<&str> = r.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["ok", "ok", "error", "error", "error", "error"]);
    let error = |i: usize| r[i]["error"].as_str().unwrap().to_string();
    assert!(error(0).is_empty());
    assert!(error(2).contains("missing.png"), "{}", error(2));
    assert!(error(3).contains("prompt"), "{}", error(3));
    assert!(error(4).contains("not valid JSON"), "{}", error(4));
    assert!(error(5).contains("already used"), "{}", error(5));
    assert_eq!(r[0]["line"], 1);
    assert_eq!(
        r[0]["tokens"].as_u64().unwrap() as usize,
        single.num_output()
    );
    // image reliance by attention: the mean image share of the answer tokens
    let share = r[0]["image_attention"].as_f64().unwrap();
    let expected: f64 = (0..single.num_output())
        .map(|t| lvlmscope::explain::attention::image_share(&single, t, None).unwrap() as f64)
        .sum::<f64>()
        / single.num_output() as f64;
    assert!((share - expected).abs() < 1e-3, "{share} vs {expected}");
    assert!(share > 0.0 && share <= 1.0);
    assert!(r[0]["image_relevancy"].is_null());
    assert!(r[0]["timings"]["decode"].as_f64().is_some());

    let csv = std::fs::read_to_string(dir.path().join("out/summary.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with("id,line,status,error,answer,tokens,image_attention"));
    assert!(lines[1].starts_with("q_1,1,ok,,"));
    assert!(lines[3].starts_with("3,3,error,"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn shards_split_the_lines_and_resume_skips_saved_sessions() {
    let lines: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"image": "img/a.png", "prompt": "Question {i}?", "id": "n{i}"}}"#))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let dir = questions(&lines);
    for shard in ["0/2", "1/2"] {
        let out = batch(dir.path(), "tiny-llava-gqa", &["--shard", shard]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let ids = |name: &str| -> Vec<String> {
        rows(&dir.path().join("out").join(name))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("summary.0-of-2.jsonl"), ["n0", "n2", "n4"]);
    assert_eq!(ids("summary.1-of-2.jsonl"), ["n1", "n3"]);
    assert!(!dir.path().join("out/summary.jsonl").exists());

    // Resume the whole file: the five sessions exist; one is removed and runs again.
    let kept = dir.path().join("out/n1.session");
    let before = std::fs::metadata(&kept).unwrap().modified().unwrap();
    std::fs::remove_file(dir.path().join("out/n3.session")).unwrap();
    let out = batch(dir.path(), "tiny-llava-gqa", &["--resume"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1 run, 4 resumed, 0 failed"), "{err}");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        before
    );
    assert!(dir.path().join("out/n3.session").is_file());
    let r = rows(&dir.path().join("out/summary.jsonl"));
    assert_eq!(r.len(), 5);
    assert!(r.iter().all(|r| r["status"] == "ok"));
    // rebuilt rows (no unsharded summary existed) still carry the answer and its reliance
    assert!(r.iter().all(|r| r["image_attention"].as_f64().is_some()));
    let again = batch(dir.path(), "tiny-llava-gqa", &["--resume"]);
    assert!(
        stderr(&again).contains("0 run, 5 resumed"),
        "{}",
        stderr(&again)
    );
    assert_eq!(rows(&dir.path().join("out/summary.jsonl")), r);
}

#[test]
fn a_family_fixture_with_relevancy_causal_and_faithfulness() {
    let dir = questions(&[GOOD]);
    let flags = ["--relevancy", "--causal", "--faithfulness"];
    let out = batch(dir.path(), "tiny-llava-gemma", &flags);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = rows(&dir.path().join("out/summary.jsonl"));
    assert_eq!(r[0]["status"], "ok");
    let relevancy = r[0]["image_relevancy"]
        .as_f64()
        .expect("relevancy reliance");
    assert!((0.0..=1.0).contains(&relevancy));
    let s = session::load(&dir.path().join("out/q_1.session")).unwrap();
    assert_eq!(s.manifest.relevancy_tokens.len(), s.num_output());
    let causal = s.manifest.causal.as_ref().expect("causal results");
    assert_eq!(causal.tokens.len(), s.num_output());
    assert!(r[0]["timings"]["causal"].as_f64().is_some());

    // Δp of every standard map, the same as a deletion on the saved session gives
    let dp = r[0]["faithfulness"]
        .as_object()
        .expect("faithfulness drops");
    for id in [
        "attention.last.mean",
        "relevancy.decoder",
        "causal",
        "random",
    ] {
        assert!(dp.contains_key(id), "{id} missing from {dp:?}");
    }
    let model = fixtures().join("tiny-llava-gemma").display().to_string();
    let loaded = LoadedModel::load(&model, DType::F32, &Device::Cpu).unwrap();
    let id: MapId = "relevancy.decoder".parse().unwrap();
    let map = catalogue::explain(&s, &[0], &id).unwrap().grid.values;
    let expected = faithfulness::probability_drop(&loaded.model, &s, 0, &map, 0.2).unwrap();
    let got = dp["relevancy.decoder"].as_f64().unwrap();
    assert!((got - expected as f64).abs() < 1e-5, "{got} vs {expected}");
    let csv = std::fs::read_to_string(dir.path().join("out/summary.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains(",dp:relevancy.decoder,"));
}

#[test]
fn setup_errors_are_one_sentence() {
    let dir = questions(&[GOOD]);
    let out = batch(dir.path(), "tiny-llava-gqa", &["--shard", "2/2"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--shard takes I/N"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(BIN)
        .args(["batch", "nowhere.jsonl", "--model"])
        .arg(fixtures().join("tiny-llava-gqa"))
        .args(["--out", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere.jsonl"));
}

#[test]
fn anyres_and_qwen_vl_models_run_through_batch_like_run() {
    for model in ["tiny-llava-onevision", "tiny-qwen2-vl"] {
        let dir = questions(&[GOOD]);
        let out = batch(dir.path(), model, &["--relevancy", "--faithfulness"]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let single = dir.path().join("single.session");
        let run = Command::new(BIN)
            .args(["run", "--model"])
            .arg(fixtures().join(model))
            .arg("--image")
            .arg(dir.path().join("img/a.png"))
            .args([
                "--prompt",
                "What is in the picture?",
                "--max-new-tokens",
                "4",
            ])
            .arg("--relevancy")
            .arg("--save")
            .arg(&single)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", stderr(&run));
        let single = session::load(&single).unwrap();
        let first = session::load(&dir.path().join("out/q_1.session")).unwrap();
        assert_eq!(first.output_ids, single.output_ids, "{model}");
        assert_eq!(first.input_ids, single.input_ids, "{model}");
        assert_eq!(first.regions(), single.regions(), "{model}");
        assert_eq!(first.relevancy_llm, single.relevancy_llm, "{model}");
        let r = rows(&dir.path().join("out/summary.jsonl"));
        assert_eq!(r[0]["status"], "ok", "{model}: {}", r[0]["error"]);
        let dp = r[0]["faithfulness"]
            .as_object()
            .expect("faithfulness drops");
        for id in ["attention.last.mean", "relevancy.combined", "random"] {
            let v = dp.get(id).and_then(|v| v.as_f64());
            assert!(v.is_some_and(f64::is_finite), "{model}: {id} in {dp:?}");
        }
    }
}
