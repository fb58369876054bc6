//! Attention knockout and the logit lens against transformers (`tools/knockout_reference.py`,
//! `tests/fixtures/reference/knockout.json`): the same block done by masking the attention in
//! transformers' eager forward gives the same probability (≤ 1e-4), the same key and query
//! positions and the same greedy ids; the lens curve and patch map match; the last layer's
//! readout is the model's own probability.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lvlmscope::explain::knockout::{self, KeyBlock, KnockoutError, KnockoutRequest, QuerySet};
use lvlmscope::explain::lens;
use lvlmscope::model::{Llava, ModelDir};
use lvlmscope::session::{
    Array, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session, TokenStrings, SCHEMA,
};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_model(name: &str) -> Llava {
    let dir = ModelDir::resolve(fixtures().join(name).to_str().unwrap()).unwrap();
    Llava::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

fn json(file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference").join(file)).unwrap())
        .unwrap()
}

/// The session of the fixture's reference run.
fn session(name: &str, model: &Llava) -> Session {
    let r = candle_core::safetensors::load(
        fixtures()
            .join("reference")
            .join(format!("{name}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let j = json(&format!("{name}.json"));
    let strings = |k: &str| -> Vec<String> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let span = j["image_span"].as_array().unwrap();
    let px: &Tensor = &r["pixel_values"];
    let cfg = model.config();
    let manifest = Manifest {
        schema: SCHEMA.to_string(),
        model: ModelInfo {
            path: fixtures().join(name).display().to_string(),
            architecture: "LlavaForConditionalGeneration".to_string(),
            text_layers: cfg.text_config.num_hidden_layers,
            text_heads: cfg.text_config.num_attention_heads,
            vision_layers: model.vision_layers_run(),
            vision_heads: cfg.vision_config.num_attention_heads,
            image_grid: model.image_grid(),
            family: None,
        },
        prompt: j["prompt"].as_str().unwrap().to_string(),
        image: ImageInfo {
            path: "image.png".to_string(),
            mode: "default".to_string(),
            original_size: [48, 36],
        },
        generation: GenerationInfo {
            max_new_tokens: 8,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        },
        tokens: TokenStrings {
            input: strings("input_tokens"),
            output: strings("output_tokens"),
        },
        image_span: [
            span[0].as_u64().unwrap() as usize,
            span[1].as_u64().unwrap() as usize,
        ],
        regions: Vec::new(),
        relevancy_tokens: Vec::new(),
        causal: None,
        timings: BTreeMap::new(),
        lens: Vec::new(),
        turns: Vec::new(),
    };
    Session {
        manifest,
        input_ids: r["input_ids"].to_vec1::<i64>().unwrap(),
        output_ids: r["output_ids"].to_vec1::<i64>().unwrap(),
        pixel_values: Array::new(
            px.dims().to_vec(),
            px.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        )
        .unwrap(),
        attn_gen: None,
        attn_full: BTreeMap::new(),
        attn_vit: None,
        relevancy_llm: None,
        relevancy_vit: None,
        relevancy_combined: None,
        turns: Vec::new(),
    }
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

fn models() -> Vec<String> {
    let reference = json("knockout.json");
    let mut names: Vec<String> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["model"].as_str().unwrap().to_string())
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
        let model = load_model(&name);
        let mut s = session(&name, &model);
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
        let model = load_model(&name);
        let s = session(&name, &model);
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
    let model = load_model(name);
    let s = session(name, &model);
    let req = |token, block: &str, layers| KnockoutRequest {
        token,
        block: block.parse().unwrap(),
        query: QuerySet::Answer,
        layers,
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
