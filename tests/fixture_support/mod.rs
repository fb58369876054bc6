//! What the reference checks share: the committed tiny fixtures, their transformers reference
//! files (`tests/fixtures/reference/`, written by the `tools/` scripts), a LLaVA fixture's
//! reference run as a session, and the comparisons (largest difference, argmax).
//!
//! Each test crate uses a different part of it, hence the crate-wide `dead_code` allowance.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use lvlmscope::model::Llava;
use lvlmscope::session::{
    Array, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session, TokenStrings, SCHEMA,
};

/// The committed test fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The reference run of fixture `name` as a session of `model` (the fixture loaded); the
/// session's model path is the fixture's folder, so jobs can load the model from it.
pub fn reference_session(name: &str, model: &Llava) -> Session {
    let reference = fixtures().join("reference");
    let r =
        candle_core::safetensors::load(reference.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference.join(format!("{name}.json"))).unwrap(),
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
            dtype: None,
            device: None,
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
        vision_attention: None,
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

/// The session `job::run` makes with fixture `name` (any pipeline) on the committed image
/// `image`, asking "What is in the picture?" with `tokens` new tokens (greedy).
pub fn fixture_run(name: &str, image: &str, tokens: usize) -> Session {
    let request = lvlmscope::generate::RunRequest {
        model: fixtures().join(name).display().to_string(),
        image: fixtures().join(image),
        prompt: "What is in the picture?".into(),
        max_new_tokens: tokens,
        ..Default::default()
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    lvlmscope::job::run(&request, &cancel, &mut |_| {}).unwrap()
}

/// Fixture `name` of any pipeline loaded in F32 on the CPU, as model jobs load it.
pub fn fixture_model(name: &str) -> lvlmscope::job::SessionModel {
    let path = fixtures().join(name).display().to_string();
    lvlmscope::job::SessionModel::load_path(&path, candle_core::DType::F32, &Device::Cpu).unwrap()
}

/// Fixture `name` loaded in F32 on the CPU.
pub fn load_fixture(name: &str) -> Llava {
    let dir = lvlmscope::model::ModelDir::resolve(fixtures().join(name).to_str().unwrap()).unwrap();
    Llava::load(&dir, candle_core::DType::F32, &Device::Cpu).unwrap()
}

/// The tensors of reference file `file` (under `tests/fixtures/reference/`).
pub fn reference(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference").join(file), &Device::Cpu).unwrap()
}

/// An i64 id tensor as token ids.
pub fn ids(t: &Tensor) -> Vec<u32> {
    t.to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

/// The largest absolute difference between two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// The index of the largest value (the first of equals), as a token id.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Checks that `report --json` output `j` shows `grid` (the catalogue's map of one region): its
/// `[rows, cols]`, and the same values row by row in its first region's `map`. `what` names
/// the case in a failure.
pub fn assert_report_map(
    j: &serde_json::Value,
    grid: &lvlmscope::explain::attention::Grid,
    what: &str,
) {
    assert_eq!(
        j["grid"],
        serde_json::json!([grid.rows, grid.cols]),
        "{what}"
    );
    let got: Vec<f32> = j["regions"][0]["map"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, grid.values, "{what}");
}
