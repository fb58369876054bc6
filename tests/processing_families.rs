//! The family fixtures (Gemma, Mistral, Qwen2 + SigLIP): config.json, pixel values, rendered
//! prompt, input ids and decoding against the references made with transformers 5.24.

use std::path::{Path, PathBuf};

use lvlmscope::model::config::{TextFamily, VisionFamily};
use lvlmscope::model::LlavaConfig;
use lvlmscope::processing::{load_image, ImageMode, ImageProcessor, PromptProcessor};
use safetensors::SafeTensors;
use serde_json::Value;

const MODELS: [&str; 3] = [
    "tiny-llava-gemma",
    "tiny-llava-mistral",
    "tiny-llava-qwen2-siglip",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(model: &str) -> Value {
    let path = fixtures().join(format!("reference/{model}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn reference_f32(model: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixtures().join(format!("reference/{model}.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

fn config(model: &str) -> LlavaConfig {
    LlavaConfig::from_file(&fixtures().join(model).join("config.json")).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn configs_match_the_references() {
    for model in MODELS {
        let r = reference(model);
        let cfg = config(model);
        let fam = &r["family"];
        assert_eq!(
            cfg.text_config.family.as_str(),
            fam["decoder"].as_str().unwrap(),
            "{model}"
        );
        assert_eq!(
            cfg.vision_config.family.model_type(),
            fam["vision_tower"].as_str().unwrap(),
            "{model}"
        );
        assert_eq!(
            cfg.vision_config.num_positions() as u64,
            r["vision_tokens"].as_u64().unwrap(),
            "{model}"
        );
        assert_eq!(
            cfg.vision_config.family.has_cls_token(),
            r["vision_has_cls"].as_bool().unwrap()
        );
        assert_eq!(
            cfg.num_image_features() as u64,
            r["num_image_features"].as_u64().unwrap(),
            "{model}"
        );
        assert_eq!(
            u64::from(cfg.image_token_index),
            r["image_token_index"].as_u64().unwrap()
        );
        assert_eq!(
            cfg.text_config.sliding_window.map(|w| w as u64),
            r["sliding_window"].as_u64(),
            "{model}"
        );
        if let Some(h) = r["head_dim"].as_u64() {
            assert_eq!(cfg.text_config.head_dim as u64, h, "{model}");
        }
    }
    let gemma = config("tiny-llava-gemma").text_config;
    assert_eq!(gemma.family, TextFamily::Gemma);
    assert_eq!((gemma.num_key_value_heads, gemma.head_dim), (1, 24));
    assert!(gemma.tie_word_embeddings);
    let mistral = config("tiny-llava-mistral").text_config;
    assert_eq!(mistral.layer_window(2), Some(8));
    let qwen = config("tiny-llava-qwen2-siglip");
    assert_eq!(qwen.vision_config.family, VisionFamily::Siglip);
    assert_eq!(
        qwen.text_config.layer_window(1),
        None,
        "use_sliding_window false"
    );
    assert!(qwen.text_config.qkv_bias && !qwen.text_config.o_bias);
}

#[test]
fn pixel_values_match_transformers() {
    let img = load_image(&fixtures().join("image.png")).unwrap();
    for model in MODELS {
        let path = fixtures().join(model).join("preprocessor_config.json");
        let p = ImageProcessor::from_file(&path).unwrap();
        for (mode, name) in [
            (ImageMode::Default, "pixel_values"),
            (ImageMode::Pad, "pixel_values_pad"),
            (ImageMode::Resize, "pixel_values_resize"),
        ] {
            let (shape, want) = reference_f32(model, name);
            let got = p.preprocess(&img, mode).unwrap();
            assert_eq!(got.shape.to_vec(), shape, "{model} {mode}");
            let diff = got
                .data
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-6, "{model} {mode}: max |diff| {diff}");
        }
    }
}

#[test]
fn prompts_and_decoding_match_transformers() {
    for model in MODELS {
        let r = reference(model);
        let p = PromptProcessor::from_dir(&fixtures().join(model)).unwrap();
        let n = config(model).num_image_features();
        let enc = p.encode(r["prompt"].as_str().unwrap(), n).unwrap();
        assert_eq!(enc.text, r["rendered_prompt"].as_str().unwrap(), "{model}");
        assert_eq!(enc.ids, u32s(&r["input_ids"]), "{model}");
        let tokens: Vec<String> = r["input_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(enc.tokens, tokens, "{model}");
        assert_eq!(
            enc.image_span.to_vec(),
            u32s(&r["image_span"])
                .iter()
                .map(|&x| x as usize)
                .collect::<Vec<_>>()
        );
        let out = u32s(&r["output_ids"]);
        assert_eq!(
            p.decode(&out),
            r["output_text_skip_special"].as_str().unwrap(),
            "{model}"
        );
        assert_eq!(
            u64::from(p.image_token_id()),
            r["image_token_index"].as_u64().unwrap()
        );
    }
}
