//! Every way a model folder can be wrong gives one clear error naming the problem.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use lvlmscope::model::{device_from_str, Llava, ModelDir, ModelError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of a fixture model folder in a fresh temporary folder.
fn copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    (tmp, dst)
}

fn load(dir: &Path) -> Result<Llava, ModelError> {
    let dir = ModelDir::resolve(dir.to_str().unwrap())?;
    Llava::load(&dir, DType::F32, &Device::Cpu)
}

#[test]
fn missing_folder() {
    let err = ModelDir::resolve("/nonexistent/lvlmscope/model").unwrap_err();
    assert!(matches!(err, ModelError::FolderNotFound(_)));
    assert!(
        err.to_string().contains("/nonexistent/lvlmscope/model"),
        "{err}"
    );
}

#[test]
fn model_id_not_in_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let err = ModelDir::resolve_in_cache("someone/no-such-model", tmp.path()).unwrap_err();
    assert!(matches!(err, ModelError::NotInCache { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("someone/no-such-model") && msg.contains("cache"),
        "{msg}"
    );
}

#[test]
fn model_id_resolves_in_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--tiny--llava-gqa");
    for rev in ["aaaa", "bbbb"] {
        let snap = repo.join("snapshots").join(rev);
        std::fs::create_dir_all(&snap).unwrap();
        for entry in std::fs::read_dir(fixture("tiny-llava-gqa")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, snap.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "aaaa\n").unwrap();
    let dir = ModelDir::resolve_in_cache("tiny/llava-gqa", tmp.path()).unwrap();
    assert!(dir.root.ends_with("snapshots/aaaa"), "{:?}", dir.root);
    assert_eq!(dir.weights.len(), 1);
    assert!(dir.tokenizer_config.is_some());
    assert!(dir.chat_template.is_none());
    // Without refs/main one snapshot is still chosen, and the model loads from it.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    let dir = ModelDir::resolve_in_cache("tiny/llava-gqa", tmp.path()).unwrap();
    assert!(dir.root.starts_with(repo.join("snapshots")));
    Llava::load(&dir, DType::F32, &Device::Cpu).unwrap();
}

#[test]
fn missing_config() {
    let (_tmp, dir) = copy_of("tiny-llava-gqa");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::MissingConfig(_)));
    assert!(err.to_string().contains("no config.json"), "{err}");
}

#[test]
fn malformed_config() {
    let (_tmp, dir) = copy_of("tiny-llava-gqa");
    std::fs::write(
        dir.join("config.json"),
        "{\"text_config\": {\"hidden_size\": 64,}",
    )
    .unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::MalformedConfig { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("malformed") && msg.contains("line"),
        "{msg}"
    );
}

#[test]
fn no_weights() {
    let (_tmp, dir) = copy_of("tiny-llava-gqa");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::NoWeights(_)));
    assert!(err.to_string().contains("no weights"), "{err}");
}

#[test]
fn missing_shard() {
    let (_tmp, dir) = copy_of("tiny-llava-full");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::MissingShard { .. }));
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn missing_tokenizer() {
    let (_tmp, dir) = copy_of("tiny-llava-gqa");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn truncated_weights() {
    let (_tmp, dir) = copy_of("tiny-llava-gqa");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    // Cut in the data, then in the header, then before the header length.
    for cut in [bytes.len() - 100, 20, 5] {
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let err = load(&dir).unwrap_err();
        assert!(
            matches!(err, ModelError::TruncatedWeights { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("model.safetensors") && msg.contains("truncated"),
            "{msg}"
        );
    }
}

#[test]
fn missing_tensor() {
    let (_tmp, dir) = copy_of("tiny-llava-gqa");
    let file = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let gone = "language_model.model.layers.1.mlp.up_proj.weight";
    assert!(tensors.remove(gone).is_some());
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(gone) && msg.contains("missing"), "{msg}");
}

#[test]
fn tensor_of_wrong_shape() {
    let (_tmp, dir) = copy_of("tiny-llava-gqa");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::TensorShape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("mlp.gate_proj.weight") && msg.contains("96"),
        "{msg}"
    );
}

#[test]
fn device_names() {
    assert!(device_from_str("cpu").unwrap().is_cpu());
    let err = device_from_str("tpu").unwrap_err();
    assert!(err.to_string().contains("tpu"), "{err}");
    let err = device_from_str("cuda:x").unwrap_err();
    assert!(matches!(err, ModelError::BadDevice(_)));
    #[cfg(not(feature = "cuda"))]
    {
        let err = device_from_str("cuda:0").unwrap_err();
        assert!(
            err.to_string().contains("without the `cuda` feature"),
            "{err}"
        );
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    use candle_core::Tensor;
    use lvlmscope::model::AttentionRecorder;
    let model = load(&fixture("tiny-llava-gqa")).unwrap();
    let mut rec = AttentionRecorder::off();
    // image_token_index is 3 in the fixtures
    let err = model.embed(&[1, 3, 3], None).unwrap_err().to_string();
    assert!(err.contains("no image features"), "{err}");
    let feats = Tensor::zeros((16, 64), DType::F32, &Device::Cpu).unwrap();
    let err = model
        .embed(&[1, 3, 3], Some(&feats))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 image tokens") && err.contains("16"),
        "{err}"
    );
    let err = model.embed(&[1, 9999], None).unwrap_err().to_string();
    assert!(err.contains("9999") && err.contains("vocabulary"), "{err}");
    let small = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let err = model
        .image_features(&small, &mut rec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("16x16") && err.contains("32x32"), "{err}");
    let embeds = model.embed(&[1, 5], None).unwrap();
    let mut cache = model.new_cache();
    let err = model
        .forward(&embeds, 4, &mut cache, &mut rec, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("offset 4"), "{err}");
    let mut wrong = lvlmscope::model::KvCache::new(1);
    let err = model
        .forward(&embeds, 0, &mut wrong, &mut rec, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("KV cache has 1 layers"), "{err}");
}
