//! Key layouts and projector kinds: the same weights under other names load to the same model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use lvlmscope::model::weights::KeyLayout;
use lvlmscope::model::{AttentionRecorder, Llava, ModelDir};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    (tmp, dst)
}

fn load(dir: &Path) -> Llava {
    let dir = ModelDir::resolve(dir.to_str().unwrap()).unwrap();
    Llava::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

/// Rewrite a safetensors file with `f` applied to every name (`None` drops the tensor).
fn rewrite(file: &Path, f: impl Fn(&str) -> Option<String>) {
    let tensors = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    let out: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| f(&k).map(|k| (k, v)))
        .collect();
    candle_core::safetensors::save(&out, file).unwrap();
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    let p = fixtures()
        .join("reference")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn features(model: &Llava, r: &HashMap<String, Tensor>) -> Vec<f32> {
    let px = r["pixel_values"].unsqueeze(0).unwrap();
    model
        .image_features(&px, &mut AttentionRecorder::off())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn logits(model: &Llava, r: &HashMap<String, Tensor>) -> Vec<f32> {
    let ids: Vec<u32> = r["input_ids"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let px = r["pixel_values"].unsqueeze(0).unwrap();
    let f = model
        .image_features(&px, &mut AttentionRecorder::off())
        .unwrap();
    let e = model.embed(&ids, Some(&f)).unwrap();
    let mut cache = model.new_cache();
    model
        .forward(&e, 0, &mut cache, &mut AttentionRecorder::off(), true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn legacy_renamed_to_current_gives_the_same_model() {
    let name = "tiny-llava-gqa";
    let r = reference(name);
    let legacy = load(&fixtures().join(name));
    let (_tmp, dir) = copy_of(name);
    rewrite(&dir.join("model.safetensors"), |k| {
        Some(
            if let Some(rest) = k.strip_prefix("language_model.model.") {
                format!("model.language_model.{rest}")
            } else if k == "language_model.lm_head.weight" {
                "lm_head.weight".to_string()
            } else {
                format!("model.{k}")
            },
        )
    });
    let current = load(&dir);
    assert_eq!(current.layout(), KeyLayout::Current);
    assert_eq!(logits(&current, &r), logits(&legacy, &r));
}

#[test]
fn vision_tower_without_vision_model_level_loads() {
    // transformers 5 saves `model.vision_tower.*` without CLIP's `vision_model.` level.
    let name = "tiny-llava-full";
    let r = reference(name);
    let original = load(&fixtures().join(name));
    let (_tmp, dir) = copy_of(name);
    let strip =
        |k: &str| Some(k.replace("model.vision_tower.vision_model.", "model.vision_tower."));
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        rewrite(&dir.join(shard), strip);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replace("model.vision_tower.vision_model.", "model.vision_tower."),
    )
    .unwrap();
    let renamed = load(&dir);
    assert_eq!(features(&renamed, &r), features(&original, &r));
}

#[test]
fn linear_projector_is_detected_from_the_weights() {
    let name = "tiny-llava-gqa";
    let r = reference(name);
    let (_tmp, dir) = copy_of(name);
    rewrite(&dir.join("model.safetensors"), |k| {
        (!k.starts_with("multi_modal_projector.linear_2")).then(|| k.to_string())
    });
    let model = load(&dir);
    assert_eq!(model.projector_depth(), 1);
    // Expected: linear_1 applied to the reference's selected vision hidden states, CLS dropped.
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let w = &all["multi_modal_projector.linear_1.weight"];
    let b = &all["multi_modal_projector.linear_1.bias"];
    let hidden = r["vision_selected_hidden"].i(1..).unwrap();
    let want = hidden
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(b)
        .unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let got = features(&model, &r);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert_eq!(got.len(), want.len());
    assert!(diff <= 1e-4, "linear projector features differ by {diff}");
}
