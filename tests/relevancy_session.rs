//! `explain::relevancy` on sessions built from the tiny fixtures, against the PyTorch-autograd
//! reference (`tools/relevancy_reference.py`): every output token's decoder, vision and
//! combined rows; LVLM-Interpret's first-token formulas; storing, caching and errors.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lvlmscope::explain::relevancy::{self, views, RelevancyError, RelevancyOptions};
use lvlmscope::model::{Llava, ModelDir};
use lvlmscope::session::{
    Array, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session, TokenStrings, SCHEMA,
};

const MODELS: [&str; 2] = ["tiny-llava-gqa", "tiny-llava-full"];
const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_model(name: &str) -> Llava {
    let dir = ModelDir::resolve(fixtures().join(name).to_str().unwrap()).unwrap();
    Llava::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

fn load_ref(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference").join(file), &Device::Cpu).unwrap()
}

fn session(name: &str, model: &Llava) -> Session {
    let r = load_ref(&format!("{name}.safetensors"));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference").join(format!("{name}.json")))
            .unwrap(),
    )
    .unwrap();
    let strings = |k: &str| -> Vec<String> {
        json[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let span = json["image_span"].as_array().unwrap();
    let px = r["pixel_values"].clone();
    let cfg = model.config();
    let manifest = Manifest {
        schema: SCHEMA.to_string(),
        model: ModelInfo {
            path: name.to_string(),
            architecture: "LlavaForConditionalGeneration".to_string(),
            text_layers: cfg.text_config.num_hidden_layers,
            text_heads: cfg.text_config.num_attention_heads,
            vision_layers: model.vision_layers_run(),
            vision_heads: cfg.vision_config.num_attention_heads,
            image_grid: model.image_grid(),
            family: None,
        },
        prompt: json["prompt"].as_str().unwrap().to_string(),
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

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn every_token_matches_the_autograd_reference() {
    for name in MODELS {
        let model = load_model(name);
        let mut s = session(name, &model);
        let rel = load_ref(&format!("{name}.relevancy.safetensors"));
        let t_len = s.num_output();
        let tokens: Vec<usize> = (0..t_len).rev().collect();
        let mut progress = Vec::new();
        let maps = relevancy::relevancy(&model, &s, &tokens, &mut |d| progress.push(d)).unwrap();
        assert_eq!(progress, (1..=t_len).collect::<Vec<_>>());
        assert_eq!(maps.tokens, (0..t_len).collect::<Vec<_>>());
        relevancy::store(&mut s, &maps).unwrap();
        let mut worst = [0f32; 3];
        for (key, k, arr) in [
            ("relevancy_llm", 0, s.relevancy_llm.as_ref().unwrap()),
            ("relevancy_vit", 1, s.relevancy_vit.as_ref().unwrap()),
            (
                "relevancy_combined",
                2,
                s.relevancy_combined.as_ref().unwrap(),
            ),
        ] {
            let want = rel[key].to_vec2::<f32>().unwrap();
            assert_eq!(arr.shape, vec![want.len(), want[0].len()], "{name} {key}");
            for (t, w) in want.iter().enumerate() {
                let d = max_diff(arr.row(&[t]), w);
                worst[k] = worst[k].max(d);
                assert!(d < TOL, "{name}: {key} of token {t} differs by {d}");
            }
        }
        eprintln!(
            "{name}: max |diff| llm {:.2e} vit {:.2e} combined {:.2e}",
            worst[0], worst[1], worst[2]
        );
        assert_eq!(s.manifest.relevancy_tokens, (0..t_len).collect::<Vec<_>>());
        assert!(s.manifest.timings["relevancy"] > 0.0);
        // cached: nothing left to compute
        assert_eq!(
            relevancy::ensure(&model, &mut s, &[0, 3], &mut |_| {}).unwrap(),
            0
        );
    }
}

#[test]
fn first_token_equals_lvlm_interpret_formulas() {
    for name in MODELS {
        let model = load_model(name);
        let s = session(name, &model);
        let rel = load_ref(&format!("{name}.relevancy.safetensors"));
        let maps = relevancy::relevancy(&model, &s, &[0], &mut |_| {}).unwrap();
        let n = s.num_input();
        let llm_first = rel["lvlm_llm_first"].to_vec1::<f32>().unwrap();
        let d = max_diff(&maps.llm[0][..n], &llm_first);
        assert!(
            d < TOL,
            "{name}: first-token row vs LVLM-Interpret differs by {d}"
        );
        assert!(
            maps.llm[0][n..].iter().all(|&v| v == 0.0),
            "{name}: row past N−1"
        );
        let vit_first = rel["lvlm_vit_first"].to_vec1::<f32>().unwrap();
        let d = max_diff(&maps.vit[0], &vit_first);
        assert!(
            d < TOL,
            "{name}: first-token vit vs LVLM-Interpret differs by {d}"
        );
        // LVLM-Interpret's "all" map is a different product (documented); it must not be
        // mistaken for ours.
        let all_first = rel["lvlm_all_first"].to_vec1::<f32>().unwrap();
        assert!(max_diff(&maps.combined[0], &all_first) > 1e-3);
    }
}

#[test]
fn subsets_leave_zero_rows_and_accumulate() {
    let name = MODELS[0];
    let model = load_model(name);
    let mut s = session(name, &model);
    let rel = load_ref(&format!("{name}.relevancy.safetensors"));
    let want = rel["relevancy_llm"].to_vec2::<f32>().unwrap();
    assert_eq!(
        relevancy::ensure(&model, &mut s, &[5, 2, 5], &mut |_| {}).unwrap(),
        2
    );
    assert_eq!(s.manifest.relevancy_tokens, vec![2, 5]);
    let llm = s.relevancy_llm.clone().unwrap();
    assert!(llm.row(&[0]).iter().all(|&v| v == 0.0));
    assert!(max_diff(llm.row(&[5]), &want[5]) < TOL);
    assert_eq!(relevancy::missing_tokens(&s, &[0, 2, 7]), vec![0, 7]);
    assert_eq!(
        relevancy::ensure(&model, &mut s, &[0, 2], &mut |_| {}).unwrap(),
        1
    );
    assert_eq!(s.manifest.relevancy_tokens, vec![0, 2, 5]);
    let llm = s.relevancy_llm.clone().unwrap();
    assert!(max_diff(llm.row(&[0]), &want[0]) < TOL);
    assert!(max_diff(llm.row(&[5]), &want[5]) < TOL);
    // the views read the stored rows
    let q = s.query_position(0);
    let row = views::prepare_row(llm.row(&[0]), q, views::Normalization::SelfRemoved);
    let tr = views::text_relevancy(&row, &s.manifest.tokens.input, s.image_range(), q, 3);
    assert_eq!(tr.words.len(), 3);
    assert!(tr.words.windows(2).all(|w| w[0].value >= w[1].value));
    let rel = views::reliance(&row, s.image_range(), q);
    assert!(rel.image > 0.0 && (0.0..=1.0).contains(&rel.image_share()));
}

#[test]
fn errors_are_clear() {
    let name = MODELS[0];
    let model = load_model(name);
    let s = session(name, &model);
    match relevancy::relevancy(&model, &s, &[8], &mut |_| {}) {
        Err(RelevancyError::TokenOutOfRange { token: 8, count: 8 }) => {}
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }
    let opts = RelevancyOptions {
        max_chunk: 4,
        memory_budget: Some(1000),
    };
    let err = relevancy::relevancy_with(&model, &s, &[0], &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(err, RelevancyError::OutOfMemory { .. }));
    assert!(err.to_string().contains("needs about"), "{err}");
    let mut bad = s.clone();
    bad.output_ids.clear();
    bad.manifest.tokens.output.clear();
    assert!(matches!(
        relevancy::relevancy(&model, &bad, &[0], &mut |_| {}),
        Err(RelevancyError::NoOutput)
    ));
    let mut bad = s.clone();
    bad.input_ids[1] = -4;
    assert!(matches!(
        relevancy::relevancy(&model, &bad, &[0], &mut |_| {}),
        Err(RelevancyError::BadId(-4))
    ));
    let mut bad = s;
    bad.pixel_values = Array::zeros(&[3, 8, 8]);
    let err = relevancy::relevancy(&model, &bad, &[0], &mut |_| {}).unwrap_err();
    assert!(matches!(err, RelevancyError::Model(_)), "{err:?}");
}
