//! Attention knockout and the logit lens against transformers (`tools/knockout_reference.py`,
//! `tests/fixtures/reference/knockout.json`): the same block done by masking the attention in
//! transformers' eager forward gives the same probability (≤ 1e-4), the same key and query
//! positions and the same greedy ids; the lens curve and patch map match; the last layer's
//! readout is the model's own probability. The Qwen2-VL and LLaVA-NeXT / OneVision fixtures
//! run on sessions `run` makes (the reference's ids), their key sets counting a region's cells.

mod fixture_support;

use fixture_support::{
    fixture_model, fixture_run, fixtures, load_fixture, reference, reference_session,
};

use lvlmscope::explain::knockout::{self, KeyBlock, KnockoutError, KnockoutRequest, QuerySet};
use lvlmscope::explain::lens;
use lvlmscope::job::SessionModel;
use lvlmscope::session::{RegionKind, Session};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn json(file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference").join(file)).unwrap())
        .unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The LLaVA-style fixtures of the reference (run on its own pixel values).
const LLAVA: [&str; 4] = [
    "tiny-llava-gqa",
    "tiny-llava-qwen2-siglip",
    "tiny-llava-gemma",
    "tiny-llava-mistral",
];

/// The fixtures of other pipelines (run on sessions `run` makes).
const PIPELINES: [&str; 3] = ["tiny-qwen2-vl", "tiny-llava-next", "tiny-llava-onevision"];

fn models() -> Vec<String> {
    let reference = json("knockout.json");
    let mut names: Vec<String> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["model"].as_str().unwrap().to_string())
        .filter(|n| LLAVA.contains(&n.as_str()))
        .collect();
    names.dedup();
    names
}

#[test]
fn knockout_matches_masking_in_transformers() {
    let reference = json("knockout.json");
    let mut worst = 0f32;
    let mut checked = 0;
    for name in models() {
        let model = load_fixture(&name);
        let mut s = reference_session(&name, &model);
        for case in reference["cases"].as_array().unwrap() {
            if case["model"] != name.as_str() {
                continue;
            }
            let layers = usizes(&case["layers"]);
            let req = KnockoutRequest {
                token: case["token"].as_u64().unwrap() as usize,
                block: case["block"].as_str().unwrap().parse().unwrap(),
                query: case["query"].as_str().unwrap().parse().unwrap(),
                layers: layers[0]..=layers[1],
                region: None,
            };
            knockout::prepare(&model, &mut s, &req).unwrap();
            let r = knockout::knockout(&model, &s, &req).unwrap();
            let what = format!("{name} {case}");
            assert_eq!(r.keys, usizes(&case["keys"]), "{what}");
            assert_eq!(r.queries, usizes(&case["queries"]), "{what}");
            for (ours, theirs) in [
                (r.p_original, &case["p_original"]),
                (r.p_knockout, &case["p_knockout"]),
            ] {
                let d = (ours - theirs.as_f64().unwrap() as f32).abs();
                assert!(d <= TOL, "{what}: {ours} vs {theirs}");
                worst = worst.max(d);
            }
            assert_eq!(
                r.greedy_original as u64,
                case["greedy_original"].as_u64().unwrap()
            );
            assert_eq!(
                r.greedy_knockout as u64,
                case["greedy_knockout"].as_u64().unwrap()
            );
            assert!((r.delta_p - (r.p_knockout - r.p_original)).abs() < 1e-7);
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
    eprintln!("knockout: worst |Δ| against transformers {worst:e} over {checked} cases");
}

#[test]
fn lens_matches_the_readout_in_transformers() {
    let reference = json("knockout.json");
    let mut worst = 0f32;
    for name in models() {
        let model = load_fixture(&name);
        let s = reference_session(&name, &model);
        for case in reference["lens"].as_array().unwrap() {
            if case["model"] != name.as_str() {
                continue;
            }
            let t = case["token"].as_u64().unwrap() as usize;
            let layer = case["layer"].as_u64().unwrap() as usize;
            let l = lens::lens(&model, &s, t, Some(layer)).unwrap();
            let curve: Vec<f32> = l.curve.iter().map(|p| p.prob).collect();
            for (ours, theirs) in curve
                .iter()
                .chain(&l.map)
                .zip(f32s(&case["curve"]).iter().chain(&f32s(&case["map"])))
            {
                let d = (ours - theirs).abs();
                assert!(
                    d <= TOL,
                    "{name} token {t} layer {layer}: {ours} vs {theirs}"
                );
                worst = worst.max(d);
            }
            assert_eq!(l.map.len(), f32s(&case["map"]).len());
            let tops: Vec<usize> = l.top_ids.iter().map(|&i| i as usize).collect();
            assert_eq!(tops, usizes(&case["top_ids"]), "{name} token {t}");
            // the last layer's readout is the model's own probability of the token
            let r = knockout::knockout(
                &model,
                &s,
                &KnockoutRequest {
                    token: t,
                    block: KeyBlock::Image,
                    query: QuerySet::Answer,
                    layers: 0..=0,
                    region: None,
                },
            )
            .unwrap();
            let last = l.curve.last().unwrap();
            assert!(
                (last.prob - r.p_original).abs() < 1e-6,
                "{} vs {}",
                last.prob,
                r.p_original
            );
            assert_eq!(last.top, r.greedy_original);
            assert_eq!(last.rank == 1, r.greedy_original == l.token_id);
        }
    }
    eprintln!("lens: worst |Δ| against transformers {worst:e}");
}

#[test]
fn bad_requests_are_one_sentence() {
    let name = "tiny-llava-gqa";
    let model = load_fixture(name);
    let s = reference_session(name, &model);
    let req = |token, block: &str, layers| KnockoutRequest {
        token,
        block: block.parse().unwrap(),
        query: QuerySet::Answer,
        layers,
        region: None,
    };
    let e = knockout::knockout(&model, &s, &req(8, "image", 0..=1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "output token 8 does not exist (the answer has 8 tokens)"
    );
    let e = knockout::knockout(&model, &s, &req(0, "image", 1..=3)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "layers 1-3 are outside the model's decoder layers 0-2"
    );
    let e = knockout::knockout(&model, &s, &req(0, "patches:16", 0..=1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "patch 16 does not exist (the image has 16 patches)"
    );
    for (bad, want) in [
        ("pixels", "unknown key set \"pixels\""),
        ("map:gradcam:10", "unknown map \"gradcam\""),
        ("map:random:0", "the map percentage 0 is not in (0, 100]"),
        ("patches:3-1", "unknown key set \"patches:3-1\""),
        ("patches:", "the key set \"patches:\" is empty"),
    ] {
        let e = bad.parse::<KeyBlock>().unwrap_err();
        assert!(e.to_string().starts_with(want), "{e}");
    }
    assert!(matches!(
        knockout::parse_layers("2-1"),
        Err(KnockoutError::LayersSyntax(_))
    ));
    assert_eq!(knockout::parse_layers("1-2").unwrap(), 1..=2);
    assert_eq!(knockout::parse_layers("2").unwrap(), 2..=2);
    assert!("first".parse::<QuerySet>().is_err());
    let e = lens::lens(&model, &s, 0, Some(3)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "layer 3 does not exist (the decoder has layers 0-2)"
    );
    // the question is the prompt's tokens, not the template around it
    let q = knockout::question_positions(&s);
    let words: Vec<&str> = q.iter().map(|&p| s.token_at(p)).collect();
    assert_eq!(words, ["W", "hat", "▁is", "▁in", "▁the", "▁picture", "?"]);
}

/// The session `run` makes on fixture `name` with the reference's image and prompt (its ids
/// checked against the reference's), and the fixture loaded for it.
fn pipeline_session(name: &str) -> (Session, SessionModel) {
    let s = fixture_run(name, "image.png", 8);
    let r = reference(&format!("{name}.safetensors"));
    assert_eq!(
        s.input_ids,
        r["input_ids"].to_vec1::<i64>().unwrap(),
        "{name}"
    );
    assert_eq!(
        s.output_ids,
        r["output_ids"].to_vec1::<i64>().unwrap(),
        "{name}"
    );
    (s, fixture_model(name))
}

fn region(v: &Value) -> Option<RegionKind> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn knockout_on_qwen_vl_and_anyres_matches_transformers() {
    let reference = json("knockout.json");
    let (mut worst, mut checked) = (0f32, 0);
    for name in PIPELINES {
        let (mut s, model) = pipeline_session(name);
        for case in reference["cases"].as_array().unwrap() {
            if case["model"] != name {
                continue;
            }
            let layers = usizes(&case["layers"]);
            let req = KnockoutRequest {
                token: case["token"].as_u64().unwrap() as usize,
                block: case["block"].as_str().unwrap().parse().unwrap(),
                query: case["query"].as_str().unwrap().parse().unwrap(),
                layers: layers[0]..=layers[1],
                region: region(&case["region"]),
            };
            knockout::prepare(model.replayer(), &mut s, &req).unwrap();
            let r = knockout::knockout(model.replayer(), &s, &req).unwrap();
            let what = format!("{name} {case}");
            assert_eq!(r.keys, usizes(&case["keys"]), "{what}");
            assert_eq!(r.queries, usizes(&case["queries"]), "{what}");
            for (ours, theirs) in [
                (r.p_original, &case["p_original"]),
                (r.p_knockout, &case["p_knockout"]),
            ] {
                let d = (ours - theirs.as_f64().unwrap() as f32).abs();
                assert!(d <= TOL, "{what}: {ours} vs {theirs}");
                worst = worst.max(d);
            }
            assert_eq!(
                r.greedy_original as u64,
                case["greedy_original"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                r.greedy_knockout as u64,
                case["greedy_knockout"].as_u64().unwrap(),
                "{what}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 19);
    eprintln!("knockout (Qwen2-VL, anyres): worst |Δ| against transformers {worst:e} over {checked} cases");
}

#[test]
fn lens_on_qwen_vl_and_anyres_matches_transformers() {
    let reference = json("knockout.json");
    let (mut worst, mut checked) = (0f32, 0);
    for name in PIPELINES {
        let (s, model) = pipeline_session(name);
        for case in reference["lens"].as_array().unwrap() {
            if case["model"] != name {
                continue;
            }
            let t = case["token"].as_u64().unwrap() as usize;
            let layer = case["layer"].as_u64().unwrap() as usize;
            let l = lens::lens(model.replayer(), &s, t, Some(layer)).unwrap();
            // every region's cells, separators left out
            assert_eq!(l.map.len(), s.cell_positions().len(), "{name}");
            assert_eq!(l.map.len(), f32s(&case["map"]).len(), "{name}");
            let curve: Vec<f32> = l.curve.iter().map(|p| p.prob).collect();
            for (ours, theirs) in curve
                .iter()
                .chain(&l.map)
                .zip(f32s(&case["curve"]).iter().chain(&f32s(&case["map"])))
            {
                let d = (ours - theirs).abs();
                assert!(
                    d <= TOL,
                    "{name} token {t} layer {layer}: {ours} vs {theirs}"
                );
                worst = worst.max(d);
            }
            let tops: Vec<usize> = l.top_ids.iter().map(|&i| i as usize).collect();
            assert_eq!(tops, usizes(&case["top_ids"]), "{name} token {t}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    eprintln!("lens (Qwen2-VL, anyres): worst |Δ| against transformers {worst:e}");
}

#[test]
fn region_key_sets_are_checked_in_one_sentence() {
    let (s, model) = pipeline_session("tiny-llava-next");
    let req = |block: &str, region| KnockoutRequest {
        token: 0,
        block: block.parse().unwrap(),
        query: QuerySet::Answer,
        layers: 0..=1,
        region,
    };
    let run = |r: &KnockoutRequest| knockout::knockout(model.replayer(), &s, r);
    let e = run(&req("patches:48", Some(RegionKind::Highres))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "patch 48 does not exist (the highres region has 48 cells)"
    );
    let e = run(&req("patches:0", Some(RegionKind::Image))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the session has no image image region (it has base, highres)"
    );
    let e = run(&req("patches:64", None)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "patch 64 does not exist (the image has 64 patches)"
    );
    // base cells come first, then the high-res grid's without its newline rows
    let keys = knockout::key_positions(&s, 0, &req("patches:15-16", None).block).unwrap();
    assert_eq!(keys, [18, 19]);
    let hi = &s.regions()[1];
    let keys = knockout::key_positions_in(
        &s,
        0,
        &KeyBlock::Patches(vec![7, 8]),
        Some(RegionKind::Highres),
    )
    .unwrap();
    assert_eq!(
        keys,
        [hi.span[0] + 7, hi.span[0] + 9],
        "the newline after the first row is skipped"
    );
    // the image key set is the whole span, newline rows included
    let image = knockout::key_positions(&s, 0, &KeyBlock::Image).unwrap();
    assert_eq!(image, s.image_range().collect::<Vec<_>>());
    let e = knockout::key_positions_in(&s, 0, &KeyBlock::Image, Some(RegionKind::Image));
    assert_eq!(
        e.unwrap_err().to_string(),
        "the session has no image image region (it has base, highres)"
    );
    assert!(hi.separators.iter().all(|p| image.contains(p)));
}

/// A replay reproduces the run: with nothing blocked, every answer token is the greedy one
/// (the runs decode greedily), on Qwen2.5-VL (window attention in the tower) and on the tall
/// image of the anyres fixtures (another tile layout).
#[test]
fn a_replay_gives_the_run_s_greedy_tokens() {
    for (name, image) in [
        ("tiny-qwen2_5-vl", "image.png"),
        ("tiny-qwen2-vl", "image_tall.png"),
        ("tiny-llava-next", "image_tall.png"),
        ("tiny-llava-onevision", "image_tall.png"),
    ] {
        let s = fixture_run(name, image, 4);
        let model = fixture_model(name);
        for t in 0..s.num_output() {
            let req = KnockoutRequest {
                token: t,
                block: KeyBlock::Question,
                query: QuerySet::Answer,
                layers: 0..=0,
                region: None,
            };
            let r = knockout::knockout(model.replayer(), &s, &req).unwrap();
            assert_eq!(
                r.greedy_original as i64, s.output_ids[t],
                "{name} {image} token {t}"
            );
            let l = lens::lens(model.replayer(), &s, t, None).unwrap();
            let last = l.curve.last().unwrap();
            assert!((last.prob - r.p_original).abs() < 1e-6, "{name} token {t}");
            assert_eq!(l.map.len(), s.cell_positions().len());
        }
    }
}
