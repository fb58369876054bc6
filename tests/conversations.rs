//! Conversations (issue 18) against transformers: a two-turn conversation on four fixtures equals
//! `tools/conversation_reference.py` (turn 2's input ids through the chat template with the first
//! answer included, its greedy answer, its attention rows within 1e-5), whether turn 2 continued
//! from the whole KV cache (tiny-llava-gqa; tiny-qwen2-vl, whose M-RoPE positions continue after
//! the image's) or from its part up to the first answer because the template re-tokenises that
//! answer differently (tiny-llava-mistral, tiny-llava-next), and equals the same turn run afresh
//! from the first turn's session; the session file keeps every turn; `run` refuses a
//! conversation that cannot fit the model's context before anything runs; every family runs
//! `run --prompt P1 --prompt P2`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use lvlmscope::generate::conversation::Conversation;
use lvlmscope::generate::{Capture, RunRequest};
use lvlmscope::job::{ModelSpec, SessionModel};
use lvlmscope::model::DeviceName;
use lvlmscope::session::{self, AttentionDtype, Session};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> Value {
    let path = fixtures().join("reference/conversation.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Loads a fixture folder with whichever pipeline it needs.
fn load(model: &str) -> SessionModel {
    let spec = ModelSpec {
        path: fixtures().join(model).display().to_string(),
        dtype: DType::F32,
        device: DeviceName::Cpu,
    };
    SessionModel::load(&spec, &Device::Cpu).unwrap()
}

/// Runs the reference's two questions on `model` and returns the conversation's session, and
/// the same second turn run afresh (the first turn's session resumed: no KV cache).
fn converse(model: &str, r: &Value) -> (Session, Session) {
    let folder = fixtures().join(model);
    let loaded = load(model);
    let prompts: Vec<String> = r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let request = RunRequest {
        model: folder.display().to_string(),
        image: fixtures().join("image.png"),
        prompt: prompts[0].clone(),
        max_new_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
        capture: Capture::Full,
        ..RunRequest::default()
    };
    let image = lvlmscope::processing::load_image(&request.image).unwrap();
    let cancel = AtomicBool::new(false);
    let mut talk = Conversation::start(&loaded, &image, &request, &cancel, &mut |_| {}).unwrap();
    let first = talk.session().clone();
    talk.follow_up(&prompts[1], &cancel, &mut |_| {}).unwrap();
    let mut afresh = Conversation::resume(&loaded, first, request.max_new_tokens).unwrap();
    afresh.follow_up(&prompts[1], &cancel, &mut |_| {}).unwrap();
    (talk.into_session(), afresh.into_session())
}

/// The largest difference between two sessions' generated attention rows.
fn rows_differ(a: &Session, b: &Session) -> f32 {
    let (a, b) = (a.attn_gen.as_ref().unwrap(), b.attn_gen.as_ref().unwrap());
    assert_eq!(a.shape, b.shape);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(model: &str, whole: bool) {
    let all = reference();
    let r = &all[model];
    let (s, afresh) = converse(model, r);
    assert_eq!(s.num_turns(), 2);
    let first = s.turn(0).unwrap();
    assert_eq!(
        first.input_ids,
        ids(&r["input_ids_turn1"]),
        "{model} turn 1 input"
    );
    assert_eq!(
        first.output_ids,
        ids(&r["output_ids_turn1"]),
        "{model} turn 1 answer"
    );
    assert_eq!(
        s.input_ids,
        ids(&r["input_ids_turn2"]),
        "{model} turn 2 input"
    );
    assert_eq!(
        s.output_ids,
        ids(&r["output_ids_turn2"]),
        "{model} turn 2 answer"
    );
    let info = s.current_turn().unwrap();
    // the cache held turn 1's input and answer but its last token; turn 2 keeps what its input
    // spells alike: all of it on gqa and Qwen (the question alone runs), up to the re-spelled
    // answer on mistral and LLaVA-NeXT (the answer runs again); the earlier answer is the part
    // spelled alike (all of gqa's, whose answer has no end token; Qwen re-spells a last token
    // that ends inside a character)
    let held = first.num_input() + first.num_output() - 1;
    let previous: Vec<i64> = first
        .input_ids
        .iter()
        .chain(&first.output_ids)
        .copied()
        .collect();
    let common = previous
        .iter()
        .zip(&s.input_ids)
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(info.reused, common.min(held), "{model}: KV cache reuse");
    assert_eq!(info.reused == held, whole, "{model}: the whole cache kept");
    assert!(info.reused >= first.num_input(), "{model}: the image kept");
    let spelled_alike = common - first.num_input();
    let answers = if spelled_alike > 0 {
        vec![[first.num_input(), spelled_alike]]
    } else {
        Vec::new()
    };
    assert_eq!(info.earlier_answers, answers, "{model}");
    let a = s.attn_gen.as_ref().unwrap();
    let rows = r["attention_turn2"].as_array().unwrap();
    assert_eq!(a.shape[0], rows.len());
    let mut worst = 0f64;
    for (t, layers) in rows.iter().enumerate() {
        for (l, heads) in layers.as_array().unwrap().iter().enumerate() {
            for (h, row) in heads.as_array().unwrap().iter().enumerate() {
                let row = row.as_array().unwrap();
                assert_eq!(a.shape[3], row.len(), "{model}: row width");
                for (k, want) in row.iter().enumerate() {
                    let got = a.get(&[t, l, h, k]) as f64;
                    worst = worst.max((got - want.as_f64().unwrap()).abs());
                }
            }
        }
    }
    assert!(worst < 1e-5, "{model}: attention rows differ by {worst}");

    // the same turn run afresh from the first turn's session: same ids, same rows
    assert_eq!(afresh.current_turn().unwrap().reused, 0, "{model}");
    assert_eq!(afresh.input_ids, s.input_ids, "{model}");
    assert_eq!(afresh.output_ids, s.output_ids, "{model}");
    let d = rows_differ(&afresh, &s);
    assert!(d < 1e-5, "{model}: cache and fresh prefill differ by {d}");
    // so is the last layer's full matrix (causal explanations read it), whatever part of it
    // was recorded in turn 1
    let layer = s.manifest.model.text_layers - 1;
    let (a, b) = (&s.attn_full[&layer], &afresh.attn_full[&layer]);
    assert_eq!(a.shape, b.shape, "{model}");
    let full = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(full < 1e-5, "{model}: full matrices differ by {full}");
    eprintln!("{model}: rows vs transformers {worst:.2e}, cache vs afresh {d:.2e}");

    // the file keeps every turn, and an earlier turn reads back as it was
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.session");
    session::save(&s, &path, AttentionDtype::F32).unwrap();
    let back = session::load(&path).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.turn(0).unwrap().into_owned(), first.into_owned());
}

#[test]
fn gqa_follow_up_from_the_cache_equals_transformers() {
    check("tiny-llava-gqa", true);
}

#[test]
fn mistral_follow_up_from_part_of_the_cache_equals_transformers() {
    check("tiny-llava-mistral", false);
}

#[test]
fn qwen2_vl_follow_up_from_the_cache_equals_transformers() {
    check("tiny-qwen2-vl", true);
}

#[test]
fn llava_next_follow_up_equals_transformers() {
    check("tiny-llava-next", false);
}

#[test]
fn a_conversation_past_the_context_is_refused_before_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    // the image's tokens count: Qwen VL's and anyres's depend on the image
    for (model, repeat, context) in [
        ("tiny-llava-gqa", 12, 256),
        ("tiny-qwen2-vl", 30, 512),
        ("tiny-llava-next", 12, 256),
    ] {
        let save = tmp.path().join(format!("{model}.session"));
        let long = "What is in the picture? ".repeat(repeat);
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--model"])
            .arg(fixtures().join(model))
            .arg("--image")
            .arg(fixtures().join("image.png"))
            .args(["--max-new-tokens", "8", "--save"])
            .arg(&save);
        for _ in 0..4 {
            cmd.args(["--prompt", &long]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{model}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("4 questions"), "{model}: {err}");
        let want = format!("context is {context} positions");
        assert!(err.contains(&want), "{model}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{model}: {err}");
        assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
        assert!(!save.exists());
    }
}

#[test]
fn a_later_turn_past_the_context_is_refused_before_that_turn_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let save = tmp.path().join("late.session");
    // the two questions fit with empty answers, not once the first answer (up to 96 tokens)
    // is in the conversation
    let second = "What is in the picture? ".repeat(10);
    let out = Command::new(BIN)
        .args(["run", "--model"])
        .arg(fixtures().join("tiny-llava-gqa"))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args(["--max-new-tokens", "96", "--prompt", "Describe it."])
        .args(["--prompt", &second, "--save"])
        .arg(&save)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("turn 2 of the conversation"), "{err}");
    assert!(!save.exists());
}

/// Runs `lvlmscope run` with the given questions on tiny-llava-gqa; returns the session file.
fn run_questions(dir: &Path, prompts: &[&str], extra: &[&str]) -> PathBuf {
    let save = dir.join("talk.session");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--model"])
        .arg(fixtures().join("tiny-llava-gqa"))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args(["--max-new-tokens", "4", "--save"])
        .arg(&save)
        .args(extra);
    for p in prompts {
        cmd.args(["--prompt", p]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    save
}

fn report_json(file: &Path, extra: &[&str]) -> Result<Value, String> {
    let out = Command::new(BIN)
        .arg("report")
        .arg(file)
        .args(["--json"])
        .args(extra)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn report_turn_prints_any_turn_and_refuses_one_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let file = run_questions(
        tmp.path(),
        &["What is in the picture?", "And on the left?", "Why?"],
        &["--relevancy"],
    );
    let s = session::load(&file).unwrap();
    assert_eq!(s.num_turns(), 3);
    let last = report_json(&file, &["--method", "relevancy"]).unwrap();
    assert_eq!(
        (last["turn"].as_u64(), last["turns"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(last["position"].as_u64(), Some(s.num_input() as u64 - 1));
    let parts = &last["reliance_parts"];
    let total: f64 = [
        "image",
        "question",
        "earlier_questions",
        "earlier_answers",
        "answer",
    ]
    .iter()
    .map(|k| parts[k].as_f64().unwrap())
    .sum();
    assert!((total - 1.0).abs() < 1e-4, "{parts}");
    assert!(parts["earlier_answers"].as_f64().unwrap() > 0.0, "{parts}");
    for k in 1..=3usize {
        let j = report_json(&file, &["--turn", &k.to_string()]).unwrap();
        let turn = s.turn(k - 1).unwrap();
        assert_eq!(j["turn"].as_u64(), Some(k as u64));
        assert_eq!(j["position"].as_u64(), Some(turn.num_input() as u64 - 1));
        assert_eq!(
            j["token_text"].as_str(),
            Some(turn.manifest.tokens.output[0].as_str())
        );
    }
    // an earlier turn's relevancy (saved by run --relevancy for every turn)
    let first = report_json(&file, &["--turn", "1", "--method", "relevancy"]).unwrap();
    assert_eq!(
        first["reliance_parts"]["earlier_answers"].as_f64(),
        Some(0.0)
    );
    for bad in ["0", "4"] {
        let err = report_json(&file, &["--turn", bad]).unwrap_err();
        assert!(err.contains("between 1 and 3"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn one_prompt_and_schema_1_sessions_are_one_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let file = run_questions(tmp.path(), &["What is in the picture?"], &[]);
    let s = session::load(&file).unwrap();
    assert_eq!(s.num_turns(), 1);
    assert!(s.manifest.turns.is_empty() && s.turns.is_empty());
    let old = fixtures().join("session-schema1.safetensors");
    let j = report_json(&old, &[]).unwrap();
    assert_eq!(
        (j["turn"].as_u64(), j["turns"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(report_json(&old, &["--turn", "2"]).is_err());
}

#[test]
fn a_file_whose_turns_lie_is_refused_in_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let file = run_questions(tmp.path(), &["What is in the picture?", "Why?"], &[]);
    let mut s = session::load(&file).unwrap();
    s.manifest.turns[0].input_len += 1;
    let bad = tmp.path().join("bad.session");
    session::save(&s, &bad, AttentionDtype::F16).unwrap();
    let err = session::load(&bad).unwrap_err().to_string();
    assert!(err.contains("turn 1 claims"), "{err}");
    let mut s = session::load(&file).unwrap();
    s.turns.clear();
    session::save(&s, &bad, AttentionDtype::F16).unwrap();
    let err = session::load(&bad).unwrap_err().to_string();
    assert!(err.contains("turn.0.input_ids is missing"), "{err}");
}

/// Runs a three-turn conversation on a fixture folder through `lvlmscope run`.
fn run_three_turns(model: &str, dir: &Path) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--model"])
        .arg(fixtures().join(model))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args(["--max-new-tokens", "4", "--save"])
        .arg(dir.join(format!("{model}.session")));
    for p in ["What is in the picture?", "Where is the circle?", "Why?"] {
        cmd.args(["--prompt", p]);
    }
    cmd.output().unwrap()
}

#[test]
fn every_llava_family_runs_a_conversation_whose_turns_fit_together() {
    let tmp = tempfile::tempdir().unwrap();
    for model in [
        "tiny-llava-gqa",
        "tiny-llava-full",
        "tiny-llava-mistral",
        "tiny-llava-gemma",
        "tiny-llava-qwen2-siglip",
    ] {
        let out = run_three_turns(model, tmp.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{model}: {err}");
        let s = session::load(&tmp.path().join(format!("{model}.session"))).unwrap();
        assert_eq!(s.num_turns(), 3, "{model}");
        for k in 1..3 {
            let (prev, turn) = (s.turn(k - 1).unwrap(), s.turn(k).unwrap());
            let info = turn.current_turn().unwrap();
            // the image is the same in every turn, before the first question's text
            assert_eq!(
                turn.manifest.image_span, prev.manifest.image_span,
                "{model}"
            );
            let cached: Vec<i64> = prev
                .input_ids
                .iter()
                .chain(&prev.output_ids[..prev.num_output() - 1])
                .copied()
                .collect();
            // the cache kept exactly the prefix the new ids share with what it held
            let shared = cached
                .iter()
                .zip(&turn.input_ids)
                .take_while(|(a, b)| a == b)
                .count();
            assert_eq!(info.reused, shared, "{model} turn {}", k + 1);
            let image_end = prev.manifest.image_span[0] + prev.manifest.image_span[1];
            assert!(info.reused >= image_end, "{model}: the image ran once");
            assert!(
                info.question_start >= prev.manifest.image_span[0],
                "{model}"
            );
            let a = turn.attn_gen.as_ref().unwrap();
            assert_eq!(a.shape[3], turn.num_input() + turn.num_output() - 1);
        }
    }
}

#[test]
fn qwen_vl_and_anyres_run_a_conversation_whose_turns_fit_together() {
    let tmp = tempfile::tempdir().unwrap();
    for model in [
        "tiny-qwen2-vl",
        "tiny-qwen2_5-vl",
        "tiny-llava-next",
        "tiny-llava-onevision",
    ] {
        let out = run_three_turns(model, tmp.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{model}: {err}");
        let s = session::load(&tmp.path().join(format!("{model}.session"))).unwrap();
        assert_eq!(s.num_turns(), 3, "{model}");
        let first = s.turn(0).unwrap();
        for k in 1..3 {
            let turn = s.turn(k).unwrap();
            // the image once, at the same positions, with the same regions, in every turn
            assert_eq!(
                turn.manifest.image_span, first.manifest.image_span,
                "{model}"
            );
            assert_eq!(turn.regions(), first.regions(), "{model}");
            let info = turn.current_turn().unwrap();
            assert!(
                info.question_start > first.manifest.image_span[0],
                "{model}"
            );
            let [start, len] = first.manifest.image_span;
            assert!(info.reused >= start + len, "{model}: the image ran once");
            let a = turn.attn_gen.as_ref().unwrap();
            assert_eq!(a.shape[3], turn.num_input() + turn.num_output() - 1);
        }
    }
}
