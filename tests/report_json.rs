//! `lvlmscope report`: the numbers (`--json`), the PNG overlay, and the text output.

use std::collections::BTreeMap;
use std::process::Command;

use lvlmscope::report::causal::CausalUnavailable;
use lvlmscope::report::overlay::{denormalize, CLIP_MEAN, CLIP_STD};
use lvlmscope::report::{compute, to_json, ReportError, ReportOptions};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{save, AttentionDtype, CausalHead, CausalResults, CausalToken, Session};
use lvlmscope::style::{normalize, ColorMap, Rgb};

fn tiny(relevancy: bool) -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = relevancy;
    synthetic_session(&spec)
}

fn opts(method: &str, token: usize) -> ReportOptions {
    ReportOptions {
        token: Some(token),
        method: Some(method.into()),
        ..Default::default()
    }
}

#[test]
fn attention_json_holds_the_raw_numbers() {
    let s = tiny(false);
    let mut o = opts("attention", 2);
    o.head = Some(1);
    let r = compute(&s, &o).unwrap();
    assert_eq!(r.layer, Some(3), "the default layer is the last");
    let a = s.attn_gen.as_ref().unwrap();
    let j = to_json(&s, &r);
    assert_eq!(j["token"], 2);
    assert_eq!(j["method"], "attention");
    let map = j["map"].as_array().unwrap();
    assert_eq!(map.len(), 4);
    for (row, values) in map.iter().enumerate() {
        for (col, v) in values.as_array().unwrap().iter().enumerate() {
            let want = a.get(&[2, 3, 1, 3 + row * 4 + col]);
            assert_eq!(v.as_f64().unwrap() as f32, want);
        }
    }
    let text = j["text"].as_object().unwrap();
    let q = s.query_position(2);
    // Every position up to the query except the 16 image patches.
    assert_eq!(text.len(), q + 1 - 16);
    assert_eq!(text["0"].as_f64().unwrap() as f32, a.get(&[2, 3, 1, 0]));
    assert!(!text.contains_key("3") && text.contains_key(&q.to_string()));
    let share: f32 = (0..4)
        .map(|h| a.row(&[2, 3, h])[3..19].iter().sum::<f32>())
        .sum::<f32>()
        / 4.0;
    assert!((j["image_share"].as_f64().unwrap() as f32 - share).abs() < 1e-5);
}

#[test]
fn relevancy_and_its_absence() {
    let s = tiny(true);
    let r = compute(&s, &opts("relevancy", 1)).unwrap();
    assert_eq!(
        r.map.values,
        s.relevancy_combined.as_ref().unwrap().row(&[1])
    );
    let bare = tiny(false);
    assert!(matches!(
        compute(&bare, &opts("relevancy", 1)),
        Err(ReportError::NoRelevancy(1))
    ));
    assert!(matches!(
        compute(&bare, &opts("gradcam", 0)),
        Err(ReportError::Method(_))
    ));
    assert!(compute(&bare, &opts("attention", 9)).is_err());
}

#[test]
fn causal_uses_the_stored_result_or_says_what_it_needs() {
    let mut s = tiny(false);
    let target = s.query_position(0);
    let ct = CausalToken {
        target,
        heads: vec![CausalHead {
            head: 2,
            nodes: vec![4, 9, 20, target],
            explanation: vec![4, 9, 20],
            per_radius: BTreeMap::from([(1, vec![4, 20]), (2, vec![9])]),
            importance: 1.5,
            image_weights: BTreeMap::from([(4, 0.8), (9, 0.25)]),
        }],
    };
    s.manifest.causal = Some(CausalResults {
        params: lvlmscope::session::CausalParams {
            layer: 3,
            ..Default::default()
        },
        tokens: BTreeMap::from([(0, ct.clone())]),
    });
    let r = compute(&s, &opts("causal", 0)).unwrap();
    let j = to_json(&s, &r);
    assert_eq!(j["causal"], serde_json::to_value(&ct).unwrap());
    assert_eq!(r.map.values[1], 0.8);
    assert_eq!(r.map.values[6], 0.25);
    assert_eq!(r.map.values.iter().filter(|v| **v != 0.0).count(), 2);
    assert_eq!(r.text, BTreeMap::from([(20, 1.5)]));
    // Token 1 has no stored result: it is computed from attn.full (when CLEANN is wired in).
    match compute(&s, &opts("causal", 1)) {
        Ok(r) => assert_eq!(r.causal.unwrap().target, s.query_position(1)),
        Err(e) => assert!(matches!(
            e,
            ReportError::Causal(CausalUnavailable::NeedsCausal)
        )),
    }
    s.attn_full.clear();
    assert!(matches!(
        compute(&s, &opts("causal", 1)),
        Err(ReportError::Causal(CausalUnavailable::NoFullAttention(
            1, 3
        )))
    ));
}

fn write_fixture(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("s.safetensors");
    save(&tiny(false), &path, AttentionDtype::F32).unwrap();
    path
}

#[test]
fn png_is_the_image_with_the_map_blended_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_fixture(dir.path());
    let png = dir.path().join("out.png");
    let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args([
            "report",
            file.to_str().unwrap(),
            "--token",
            "1",
            "--layer",
            "2",
            "--json",
        ])
        .args(["--png", png.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["layer"], 2);
    let img = image::open(&png).unwrap().to_rgb8();
    let s = tiny(false);
    assert_eq!((img.width(), img.height()), (16, 16));
    let base = denormalize(&s.pixel_values);
    let a = s.attn_gen.as_ref().unwrap();
    let values: Vec<f32> = (0..16)
        .map(|p| (0..4).map(|h| a.get(&[1, 2, h, 3 + p])).sum::<f32>() / 4.0)
        .collect();
    let range = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    for y in 0..16 {
        for x in 0..16 {
            let p = (y / 4) * 4 + x / 4;
            let want = base
                .get(x, y)
                .blend(ColorMap::Viridis.sample(normalize(values[p], range)), 0.6);
            let got = img.get_pixel(x as u32, y as u32).0;
            assert_eq!(Rgb(got[0], got[1], got[2]), want, "pixel {x},{y}");
        }
    }
    // The base image is CLIP-denormalised pixel values.
    let v = s.pixel_values.data[0] * CLIP_STD[0] + CLIP_MEAN[0];
    assert_eq!(base.get(0, 0).0, (v.clamp(0.0, 1.0) * 255.0).round() as u8);
}

#[test]
fn text_report_in_colour_and_without() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_fixture(dir.path());
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lvlmscope"));
        c.args(["report", file.to_str().unwrap(), "--token", "1"]);
        c.env_remove("NO_COLOR")
            .env_remove("COLORTERM")
            .env("TERM", "dumb");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let plain = run(&[("NO_COLOR", "1")]);
    assert!(plain.contains("The [ball] is red"), "{plain}");
    assert!(!plain.contains('\x1b'));
    assert!(plain.chars().any(|c| "░▒▓█".contains(c)));
    let colour = run(&[("COLORTERM", "truecolor")]);
    assert!(colour.contains("\x1b[38;2;") && colour.contains('▀'));
    let c256 = run(&[]);
    assert!(c256.contains("\x1b[38;5;"));
    let bad = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args(["report", dir.path().join("missing").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("cannot access session file") && !err.contains("panicked"),
        "{err}"
    );
}
