//! config.json parsing: the defaults transformers applies, rope variants, feature layers.

use std::path::Path;

use lvlmscope::model::config::RopeScaling;
use lvlmscope::model::ops::Activation;
use lvlmscope::model::{LlavaConfig, ModelError};

fn parse(s: &str) -> Result<LlavaConfig, ModelError> {
    LlavaConfig::from_json(s, Path::new("config.json"))
}

#[test]
fn llava_15_7b_defaults() {
    // The config.json of llava-hf/llava-1.5-7b-hf (abridged to the fields it has).
    let cfg = parse(
        r#"{"architectures":["LlavaForConditionalGeneration"],"ignore_index":-100,
        "image_token_index":32000,"model_type":"llava","pad_token_id":32001,
        "projector_hidden_act":"gelu","text_config":{"_name_or_path":"lmsys/vicuna-7b-v1.5",
        "architectures":["LlamaForCausalLM"],"max_position_embeddings":4096,"model_type":"llama",
        "rms_norm_eps":1e-05,"torch_dtype":"float16","vocab_size":32064},
        "tie_word_embeddings":false,"torch_dtype":"float16","vision_config":{"hidden_size":1024,
        "image_size":336,"intermediate_size":4096,"model_type":"clip_vision_model",
        "num_attention_heads":16,"num_hidden_layers":24,"patch_size":14,"projection_dim":768,
        "vocab_size":32000},"vision_feature_layer":-2,"vision_feature_select_strategy":"default",
        "vocab_size":32064}"#,
    )
    .unwrap();
    let t = &cfg.text_config;
    assert_eq!(
        (t.vocab_size, t.hidden_size, t.intermediate_size),
        (32064, 4096, 11008)
    );
    assert_eq!((t.num_hidden_layers, t.num_attention_heads), (32, 32));
    assert_eq!((t.num_key_value_heads, t.head_dim), (32, 128));
    assert_eq!(t.rms_norm_eps, 1e-5);
    assert_eq!(t.rope_theta, 10000.0);
    assert_eq!(t.rope_scaling, RopeScaling::None);
    assert!(!cfg.tie_word_embeddings);
    let v = &cfg.vision_config;
    assert_eq!(
        (v.hidden_size, v.num_hidden_layers, v.grid_side()),
        (1024, 24, 24)
    );
    assert_eq!(v.hidden_act, Activation::QuickGelu);
    assert_eq!(cfg.feature_layers().unwrap(), vec![23]);
    assert_eq!(cfg.num_image_features(), 576);
    assert_eq!(cfg.projector_hidden_act, Activation::Gelu);
}

#[test]
fn empty_config_uses_transformers_defaults() {
    let cfg = parse("{}").unwrap();
    assert_eq!(cfg.text_config.max_position_embeddings, 2048);
    assert_eq!(cfg.text_config.rms_norm_eps, 1e-6);
    assert_eq!(cfg.vision_config.image_size, 336);
    assert_eq!(cfg.vision_config.patch_size, 14);
    assert_eq!(cfg.image_token_index, 32000);
    // A present but empty vision_config takes CLIPVisionConfig's own defaults.
    let cfg = parse(r#"{"vision_config": {}}"#).unwrap();
    assert_eq!(cfg.vision_config.image_size, 224);
    assert_eq!(cfg.vision_config.num_hidden_layers, 12);
}

#[test]
fn rope_variants() {
    let cfg = parse(r#"{"text_config":{"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}"#).unwrap();
    assert_eq!(cfg.text_config.rope_theta, 500000.0);
    assert!(matches!(
        cfg.text_config.rope_scaling,
        RopeScaling::Llama3 { .. }
    ));
    let cfg = parse(r#"{"text_config":{"rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":1000.0}}}"#).unwrap();
    assert_eq!(cfg.text_config.rope_theta, 1000.0);
    assert_eq!(
        cfg.text_config.rope_scaling,
        RopeScaling::Linear { factor: 2.0 }
    );
    let err =
        parse(r#"{"text_config":{"rope_scaling":{"type":"yarn","factor":2.0}}}"#).unwrap_err();
    assert!(err.to_string().contains("yarn"), "{err}");
}

#[test]
fn feature_layer_and_alias() {
    let cfg = parse(r#"{"image_token_id": 7, "vision_feature_layer": [-2, 3], "vision_feature_select_strategy": "full"}"#).unwrap();
    assert_eq!(cfg.image_token_index, 7);
    assert_eq!(cfg.feature_layers().unwrap(), vec![23, 3]);
    assert_eq!(cfg.num_image_features(), 577);
    let err = parse(r#"{"vision_feature_layer": -30}"#).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn malformed_names_the_problem() {
    let err = parse(r#"{"text_config": {"hidden_size": "big"}}"#).unwrap_err();
    assert!(matches!(err, ModelError::MalformedConfig { .. }));
    assert!(err.to_string().contains("config.json"), "{err}");
}
