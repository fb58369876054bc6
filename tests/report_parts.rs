//! `lvlmscope report` in a conversation's later turn: every method with a text part splits its
//! row over the image, this question, the earlier questions and answers and this answer so far
//! (`reliance_parts` in `--json`, a `by part` line in the text).

use std::process::Command;

use lvlmscope::explain::relevancy::views::{prepare_row, Normalization};
use lvlmscope::report::{compute, to_json, ReportOptions};
use lvlmscope::session::synthetic::{second_turn, synthetic_session, SyntheticSpec};
use lvlmscope::session::{save, AttentionDtype, Session};
use serde_json::Value;

const KEYS: [&str; 5] = [
    "image",
    "question",
    "earlier_questions",
    "earlier_answers",
    "answer",
];

/// The tiny synthetic session as the second turn: 0..3 template, 3..19 image, 19..21 first
/// question, 21..23 first answer, 23..25 this question, 25.. this answer.
fn conversation() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    second_turn(synthetic_session(&spec), 2, 2)
}

/// `row`'s shares over the layout above, text positions below `upto`.
fn shares(row: &[f32], upto: usize) -> [f64; 5] {
    let sum =
        |r: std::ops::Range<usize>| -> f64 { r.filter(|&p| p < upto).map(|p| row[p] as f64).sum() };
    let raw = [
        (3..19).map(|p| row[p] as f64).sum(),
        sum(23..25),
        sum(0..3) + sum(19..21),
        sum(21..23),
        sum(25..row.len()),
    ];
    let total: f64 = raw.iter().sum();
    raw.map(|v| v / total)
}

fn parts_of(j: &Value) -> [f64; 5] {
    KEYS.map(|k| j["reliance_parts"][k].as_f64().unwrap_or(f64::NAN))
}

fn assert_close(got: [f64; 5], want: [f64; 5], what: &str) {
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{what}: {got:?} != {want:?}");
    }
}

fn opts(method: &str, token: usize) -> ReportOptions {
    ReportOptions {
        token: Some(token),
        method: Some(method.into()),
        ..Default::default()
    }
}

#[test]
fn every_method_with_text_gives_its_parts() {
    let s = conversation();
    let t = 2;
    let q = s.query_position(t);
    let a = s.attn_gen.as_ref().unwrap();
    // attention of one head, and the mean of heads: the whole row, the query included
    let j = to_json(&s, &compute(&s, &opts("attention.l1.h3", t)).unwrap());
    assert_close(parts_of(&j), shares(a.row(&[t, 1, 3]), q + 1), "attention");
    let mean: Vec<f32> = (0..a.shape[3])
        .map(|p| (0..4).map(|h| a.get(&[t, 3, h, p])).sum::<f32>() / 4.0)
        .collect();
    let j = to_json(&s, &compute(&s, &opts("attention", t)).unwrap());
    assert_close(parts_of(&j), shares(&mean, q + 1), "attention mean");
    assert!(j["reliance_parts"]["earlier_answers"].as_f64().unwrap() > 0.0);
    // relevancy: the self-removed decoder row before the query
    let row = prepare_row(
        s.relevancy_llm.as_ref().unwrap().row(&[t]),
        q,
        Normalization::SelfRemoved,
    );
    let j = to_json(&s, &compute(&s, &opts("relevancy", t)).unwrap());
    assert_close(parts_of(&j), shares(&row, q), "relevancy");
    // causal: its own values; random and the lens have no text part
    let j = to_json(&s, &compute(&s, &opts("causal", t)).unwrap());
    let total: f64 = parts_of(&j).iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "{}", j["reliance_parts"]);
    let j = to_json(&s, &compute(&s, &opts("random", t)).unwrap());
    assert!(j.get("reliance_parts").is_none());
}

#[test]
fn the_cli_prints_the_parts_of_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("talk.safetensors");
    save(&conversation(), &file, AttentionDtype::F32).unwrap();
    let report = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
            .arg("report")
            .arg(&file)
            .args(extra)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let j: Value = serde_json::from_str(&report(&["--json", "--layer", "1"])).unwrap();
    assert_eq!(j["turns"], 2);
    let total: f64 = parts_of(&j).iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "{}", j["reliance_parts"]);
    let text = report(&["--layer", "1"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("attention by part:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("earlier answers") && line.contains("image"),
        "{line}"
    );
    // the top text positions carry their part's glyph
    let top = text.lines().find(|l| l.starts_with("text ")).unwrap();
    assert!(top.contains('▓') && top.contains("  ░"), "{top}");
    // relevancy: each word names its part in the JSON and carries its glyph in the text
    let j: Value = serde_json::from_str(&report(&["--json", "--method", "relevancy"])).unwrap();
    let words = j["words"].as_array().unwrap();
    for w in words {
        let p = w["positions"][0].as_u64().unwrap();
        let want = match p {
            21..=22 => "earlier_answers",
            23..=24 => "question",
            _ => "earlier_questions",
        };
        assert_eq!(w["part"], want, "{w}");
    }
    assert!(words.iter().any(|w| w["part"] == "earlier_questions"));
    let text = report(&["--method", "relevancy"]);
    assert!(text.contains("  ░"), "{text}");
    assert!(text.contains("(words marked █ image, ▓ question"), "{text}");
    // the first turn has no history: its parts stay in the JSON, no line in the text
    let first = report(&["--turn", "1", "--layer", "1"]);
    assert!(!first.contains("by part:"), "{first}");
    let top = first.lines().find(|l| l.starts_with("text ")).unwrap();
    assert!(!top.contains('▓') && !top.contains('░'), "{top}");
}
