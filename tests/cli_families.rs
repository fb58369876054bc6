//! Unsupported model folders are refused for their configuration, before the tokenizer or
//! the weights are looked at: one sentence naming the model_type and what is supported. A
//! Qwen2-VL folder is read as one (and refused only for what it lacks).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A tokenizer without any `<image>` token, as Qwen2-VL's has none.
const TOKENIZER_WITHOUT_IMAGE: &str = r#"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
"decoder":null,"model":{"type":"WordLevel","vocab":{"<unk>":0,"hello":1},"unk_token":"<unk>"}}"#;

/// Qwen2-VL-2B-Instruct's config.json, abridged: the decoder fields at the top level and a
/// vision_config the LLaVA reader does not know.
const QWEN2_VL: &str = r#"{"architectures":["Qwen2VLForConditionalGeneration"],
"attention_dropout":0.0,"bos_token_id":151643,"eos_token_id":151645,"vision_start_token_id":151652,
"vision_end_token_id":151653,"vision_token_id":151654,"image_token_id":151655,
"video_token_id":151656,"hidden_act":"silu","hidden_size":1536,"initializer_range":0.02,
"intermediate_size":8960,"max_position_embeddings":32768,"max_window_layers":28,
"model_type":"qwen2_vl","num_attention_heads":12,"num_hidden_layers":28,"num_key_value_heads":2,
"rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":32768,"tie_word_embeddings":true,
"torch_dtype":"bfloat16","use_cache":true,"use_sliding_window":false,
"vision_config":{"depth":32,"embed_dim":1280,"mlp_ratio":4,"num_heads":16,"in_chans":3,
"hidden_size":1536,"patch_size":14,"spatial_merge_size":2,"spatial_patch_size":14,
"temporal_patch_size":2},"rope_scaling":{"type":"mrope","mrope_section":[16,24,24]},
"vocab_size":151936}"#;

/// A model folder holding `config` and the image-less tokenizer, no weights.
fn folder(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), TOKENIZER_WITHOUT_IMAGE).unwrap();
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"image_processor_type":"Qwen2VLImageProcessor","min_pixels":3136,"max_pixels":12845056,"patch_size":14,"merge_size":2}"#,
    )
    .unwrap();
    dir
}

/// Runs `lvlmscope run` on the model folder; returns (exit code, stderr).
fn run(model: &Path) -> (i32, String) {
    let out = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "--model",
            &model.display().to_string(),
            "--image",
            &fixtures().join("image.png").display().to_string(),
            "--prompt",
            "What is it?",
            "--save",
            &out.path().join("x.session").display().to_string(),
        ])
        .env("HF_HUB_CACHE", "/nonexistent-hf-cache")
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(config: &str, found: &str, supported: &[&str]) {
    let dir = folder(config);
    let (code, stderr) = run(dir.path());
    assert_ne!(code, 0, "must fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    let line = lines[0];
    assert!(line.contains(found), "{found} missing: {line}");
    for name in supported {
        assert!(line.contains(name), "{name} missing: {line}");
    }
    assert!(
        !line.contains("image token"),
        "refused for the tokenizer: {line}"
    );
    assert!(!line.contains("weights"), "refused for the weights: {line}");
}

#[test]
fn qwen2_vl_is_read_as_qwen_vl_not_refused_for_its_tokenizer() {
    // Qwen2-VL runs now: a folder without weights is refused for its weights, in one line.
    let dir = folder(QWEN2_VL);
    let (code, stderr) = run(dir.path());
    assert_ne!(code, 0, "must fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(lines[0].contains("no weights"), "{}", lines[0]);
    assert!(!lines[0].contains("model_type"), "{}", lines[0]);
}

#[test]
fn later_llava_variants_are_refused_by_name() {
    for mt in ["llava_next", "llava_onevision"] {
        let config = format!(r#"{{"model_type":"{mt}","image_grid_pinpoints":[[336,672]]}}"#);
        assert_refused(&config, &format!("'{mt}'"), &["llava", "gemma"]);
    }
}

#[test]
fn unknown_decoder_and_tower_are_refused_by_name() {
    assert_refused(
        r#"{"model_type":"llava","text_config":{"model_type":"phi3","rope_scaling":{"type":"longrope","long_factor":[1.0]}}}"#,
        "'phi3'",
        &["llama", "mistral", "gemma", "qwen2"],
    );
    assert_refused(
        r#"{"model_type":"llava","vision_config":{"model_type":"dinov2","hidden_act":"gelu"}}"#,
        "'dinov2'",
        &["clip_vision_model", "siglip_vision_model"],
    );
}
