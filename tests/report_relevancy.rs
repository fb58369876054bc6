//! `report --method relevancy`: the JSON's text-relevancy words, the image's largest relevancy
//! and the reliance on the image, recomputed here from the raw `relevancy.llm` rows; the text
//! view's bars and coloured answer.

use lvlmscope::report::{compute, to_json, ReportOptions};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{save, AttentionDtype, Session};

fn session() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    let mut s = synthetic_session(&spec);
    // only token 1 and 2 have relevancy
    s.manifest.relevancy_tokens = vec![1, 2];
    s
}

fn opts(token: usize) -> ReportOptions {
    ReportOptions {
        token: Some(token),
        method: Some("relevancy".into()),
        ..Default::default()
    }
}

#[test]
fn json_holds_words_image_max_and_reliance() {
    let s = session();
    let t = 2;
    let j = to_json(&s, &compute(&s, &opts(t)).unwrap());
    for key in ["token", "method", "map", "text"] {
        assert!(j.get(key).is_some(), "{key} kept");
    }
    assert_eq!(j["normalization"], "self-removed");
    let raw = s.relevancy_llm.as_ref().unwrap().row(&[t]).to_vec();
    let q = s.query_position(t);
    let image = s.image_range();
    // the image's largest value
    let image_max = raw[image.clone()].iter().copied().fold(f32::MIN, f32::max);
    assert_eq!(j["image_max"].as_f64().unwrap() as f32, image_max);
    // words: mean of their pieces' values, ranked, outside the image and the query
    let words = j["words"].as_array().unwrap();
    assert!(!words.is_empty() && words.len() <= 10);
    let mut last = f32::MAX;
    let mut seen_user = false;
    for w in words {
        let pos: Vec<usize> = w["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as usize)
            .collect();
        assert!(pos
            .iter()
            .all(|p| !image.contains(p) && *p != q && *p < s.num_input()));
        let mean = pos.iter().map(|&p| raw[p]).sum::<f32>() / pos.len() as f32;
        let value = w["value"].as_f64().unwrap() as f32;
        assert!((value - mean).abs() < 1e-6, "{w}");
        assert!(value <= last);
        last = value;
        let text = w["text"].as_str().unwrap();
        let joined: String = pos
            .iter()
            .map(|&p| s.manifest.tokens.input[p].as_str())
            .collect::<String>()
            .replace('▁', " ");
        assert_eq!(text, joined.trim());
        seen_user |= text == "USER";
    }
    assert!(seen_user || words.len() == 10);
    // reliance: sums before the query
    let img: f32 = raw[image.clone()].iter().sum();
    let txt: f32 = (0..q).filter(|p| !image.contains(p)).map(|p| raw[p]).sum();
    let r = &j["reliance"];
    assert!((r["image"].as_f64().unwrap() as f32 - img).abs() < 1e-5);
    assert!((r["text"].as_f64().unwrap() as f32 - txt).abs() < 1e-5);
    assert!((r["image_share"].as_f64().unwrap() as f32 - img / (img + txt)).abs() < 1e-6);
    let answer = j["answer_reliance"].as_array().unwrap();
    assert_eq!(answer.len(), s.num_output());
    assert!(answer[0].is_null() && answer[3].is_null());
    assert!(answer[1].is_f64() && answer[2].as_f64() == r["image_share"].as_f64());
}

#[test]
fn the_text_view_shows_the_bars_and_the_answer_shares() {
    let s = session();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("s.session");
    save(&s, &file, AttentionDtype::F32).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .arg("report")
        .arg(&file)
        .args(["--method", "relevancy", "--token", "1"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = to_json(&s, &compute(&s, &opts(1)).unwrap());
    assert!(stdout.contains("text relevancy (self-removed)"), "{stdout}");
    let image_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("image (max)"))
        .expect("the image bar");
    assert!(image_line.ends_with(&format!("{:.4}", j["image_max"].as_f64().unwrap())));
    let top = &j["words"][0];
    let top_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(top["text"].as_str().unwrap()))
        .expect("the top word's bar");
    assert!(top_line.ends_with(&format!("{:.4}", top["value"].as_f64().unwrap())));
    let share = j["reliance"]["image_share"].as_f64().unwrap();
    assert!(stdout.contains(&format!(
        "reliance on the image: {share:.3} of token 1's relevancy"
    )));
    let answer = stdout
        .lines()
        .find(|l| l.starts_with("answer  ") && l.contains('·'))
        .expect("the answer with shares");
    assert!(answer.contains(&format!("·{share:.2}")), "{answer}");
    assert!(answer.contains("·–"), "tokens without relevancy: {answer}");
}

#[test]
fn residual_option_normalises_the_words_as_lvlm_interpret_does() {
    use lvlmscope::explain::relevancy::views::{prepare_row, Normalization};
    let mut s = session();
    let t = 1;
    // Real rows' off-diagonal mass is not 1 (the synthetic one's is): scale it so that the
    // residual normalisation has something to undo.
    let q = s.query_position(t);
    for (p, v) in s
        .relevancy_llm
        .as_mut()
        .unwrap()
        .row_mut(&[t])
        .iter_mut()
        .enumerate()
    {
        if p != q {
            *v *= 3.0;
        }
    }
    let mut o = opts(t);
    o.residual = true;
    let j = to_json(&s, &compute(&s, &o).unwrap());
    assert_eq!(j["normalization"], "residual");
    let raw = s.relevancy_llm.as_ref().unwrap().row(&[t]).to_vec();
    let prepared = prepare_row(&raw, q, Normalization::Residual);
    let plain = to_json(&s, &compute(&s, &opts(t)).unwrap());
    assert_ne!(j["words"], plain["words"], "the option changes the bars");
    for w in j["words"].as_array().unwrap() {
        let pos: Vec<usize> = w["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as usize)
            .collect();
        let mean = pos.iter().map(|&p| prepared[p]).sum::<f32>() / pos.len() as f32;
        assert!(
            (w["value"].as_f64().unwrap() as f32 - mean).abs() < 1e-6,
            "{w}"
        );
    }
}
