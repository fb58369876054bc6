//! Every turn explained and saved (issue 18): `run --prompt P1 --prompt P2 --relevancy` stores
//! turn 1's relevancy rows in the file (bit-equal to the rows the model gives that turn on
//! demand), and `report --turn 1` reads them without the model folder, saying so in `--json`.

mod fixture_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use fixture_support::fixtures;
use lvlmscope::job::ModelService;
use lvlmscope::session::{self, AttentionDtype, Session};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

/// `run` of a two-question conversation on fixture `model` with relevancy; the session file.
fn two_turns(dir: &Path, model: &str) -> PathBuf {
    let save = dir.join(format!("{model}.session"));
    let out = Command::new(BIN)
        .args(["run", "--model"])
        .arg(fixtures().join(model))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args(["--max-new-tokens", "4", "--relevancy", "--save"])
        .arg(&save)
        .args(["--prompt", "What is in the picture?", "--prompt", "Why?"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    save
}

/// `report FILE --json EXTRA…`: the JSON and stderr, or the error.
fn report(file: &Path, extra: &[&str]) -> Result<(Value, String), String> {
    let out = Command::new(BIN)
        .arg("report")
        .arg(file)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok((serde_json::from_slice(&out.stdout).unwrap(), err))
    } else {
        Err(err)
    }
}

/// Every number in `v`, in order.
fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Object(m) => m.values().flat_map(flat).collect(),
        other => other.as_f64().into_iter().collect(),
    }
}

/// `s` saved beside the original with `edit` applied.
fn edited(s: &Session, path: &Path, edit: impl FnOnce(&mut Session)) -> PathBuf {
    let mut s = s.clone();
    edit(&mut s);
    session::save(&s, path, AttentionDtype::F32).unwrap();
    path.to_path_buf()
}

/// Turn 1's rows, computed again on demand with the session's model (all its tokens at once, as
/// `run` computes them).
fn on_demand(first: &Session) -> Session {
    let mut bare = first.clone();
    bare.relevancy_llm = None;
    bare.relevancy_vit = None;
    bare.relevancy_combined = None;
    bare.manifest.relevancy_tokens.clear();
    let tokens: Vec<usize> = (0..first.num_output()).collect();
    let computed = ModelService::new()
        .add_relevancy(&mut bare, &tokens, &mut |_| {})
        .unwrap();
    assert_eq!(computed, tokens.len());
    bare
}

fn without_turn_rows(s: &mut Session) {
    let turn = &mut s.turns[0];
    turn.relevancy_llm = None;
    turn.relevancy_vit = None;
    turn.relevancy_combined = None;
    s.manifest.turns[0].relevancy_tokens.clear();
}

#[test]
fn run_explains_every_turn_and_report_reads_the_saved_rows_without_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let file = two_turns(dir.path(), "tiny-llava-gqa");
    let s = session::load(&file).unwrap();
    assert_eq!(s.num_turns(), 2);
    let first = s.turn(0).unwrap().into_owned();
    let t = first.num_output();
    assert_eq!(first.manifest.relevancy_tokens, (0..t).collect::<Vec<_>>());
    assert_eq!(
        s.manifest.relevancy_tokens,
        (0..s.num_output()).collect::<Vec<_>>()
    );
    assert!(s.manifest.timings.contains_key("relevancy_earlier_turns"));
    // the saved rows are the ones the model gives turn 1 on demand, bit for bit
    let bare = on_demand(&first);
    for (a, b) in [
        (&first.relevancy_llm, &bare.relevancy_llm),
        (&first.relevancy_vit, &bare.relevancy_vit),
        (&first.relevancy_combined, &bare.relevancy_combined),
    ] {
        let bits = |x: &Option<session::Array>| {
            x.as_ref()
                .unwrap()
                .data
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(a), bits(b));
    }
    // report --turn 1 with the model folder gone reads the saved rows
    let gone = |s: &mut Session| s.manifest.model.path = "/nonexistent/tiny-llava-gqa".into();
    let moved = edited(&s, &dir.path().join("moved.session"), gone);
    let (saved, err) = report(
        &moved,
        &["--turn", "1", "--method", "relevancy", "--token", "1"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(saved["relevancy_from"].as_str(), Some("session"));
    assert_eq!(saved["turn"].as_u64(), Some(1));
    assert!(!err.contains("computing"), "{err}");
    // the same turn without its rows: computed with the model, the same map
    let recompute = edited(&s, &dir.path().join("bare.session"), without_turn_rows);
    let (fresh, err) = report(
        &recompute,
        &["--turn", "1", "--method", "relevancy", "--token", "1"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fresh["relevancy_from"].as_str(), Some("model"));
    assert!(err.contains("computing the relevancy of token 1"), "{err}");
    // (one token's backward alone rounds differently from the whole answer's at once)
    for key in ["map", "reliance_parts"] {
        let (a, b) = (flat(&fresh[key]), flat(&saved[key]));
        assert!(!a.is_empty() && a.len() == b.len(), "{key}");
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-6, "{key}: {diff}");
    }
    // ... which without the model folder is refused in one sentence
    let neither = edited(&s, &dir.path().join("neither.session"), |s| {
        without_turn_rows(s);
        gone(s);
    });
    let err = report(&neither, &["--turn", "1", "--method", "relevancy"]).unwrap_err();
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("no relevancy for token 0") && last.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // the last turn's rows say the same; other methods say nothing of relevancy
    let (last, _) = report(&moved, &["--method", "relevancy"]).unwrap();
    assert_eq!(last["relevancy_from"].as_str(), Some("session"));
    let (attention, _) = report(&moved, &["--turn", "1"]).unwrap();
    assert!(attention.get("relevancy_from").is_none());
}

#[test]
fn qwen_vl_and_anyres_conversations_save_every_turns_rows() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["tiny-qwen2-vl", "tiny-llava-next"] {
        let s = session::load(&two_turns(dir.path(), model)).unwrap();
        let first = s.turn(0).unwrap().into_owned();
        let t = first.num_output();
        assert_eq!(
            first.manifest.relevancy_tokens,
            (0..t).collect::<Vec<_>>(),
            "{model}"
        );
        let cells = first.cell_positions().len();
        let combined = first.relevancy_combined.as_ref().unwrap();
        assert_eq!(combined.shape, [t, cells], "{model}");
        let bare = on_demand(&first);
        for (a, b) in [
            (&first.relevancy_llm, &bare.relevancy_llm),
            (&first.relevancy_combined, &bare.relevancy_combined),
        ] {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            let diff = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-6, "{model}: {diff}");
        }
    }
}
