//! config.json of each supported family: configs shaped like the hub checkpoints', the
//! defaults of each transformers config class, both config layouts, and refusals.

use std::path::Path;

use lvlmscope::model::config::{AttentionType, SelectStrategy, TextFamily, VisionFamily};
use lvlmscope::model::ops::Activation;
use lvlmscope::model::{LlavaConfig, ModelError};

fn parse(s: &str) -> Result<LlavaConfig, ModelError> {
    LlavaConfig::from_json(s, Path::new("config.json"))
}

fn text(json: &str) -> lvlmscope::model::TextConfig {
    parse(&format!(r#"{{"text_config": {json}}}"#))
        .unwrap()
        .text_config
}

#[test]
fn gemma_2b_shaped_like_intel_llava_gemma() {
    // Intel/llava-gemma-2b: gemma-2b-it decoder (one KV head, head_dim 256, tied embeddings)
    // with the CLIP ViT-L/14-336 tower.
    let cfg = parse(
        r#"{"architectures":["LlavaForConditionalGeneration"],"image_token_index":256000,
        "model_type":"llava","pad_token_id":0,"projector_hidden_act":"gelu",
        "text_config":{"architectures":["GemmaForCausalLM"],"bos_token_id":2,"eos_token_id":1,
        "head_dim":256,"hidden_act":"gelu","hidden_activation":"gelu_pytorch_tanh",
        "hidden_size":2048,"intermediate_size":16384,"max_position_embeddings":8192,
        "model_type":"gemma","num_attention_heads":8,"num_hidden_layers":18,
        "num_key_value_heads":1,"pad_token_id":0,"rms_norm_eps":1e-06,"rope_theta":10000.0,
        "vocab_size":256128},
        "vision_config":{"hidden_size":1024,"image_size":336,"intermediate_size":4096,
        "model_type":"clip_vision_model","num_attention_heads":16,"num_hidden_layers":24,
        "patch_size":14,"projection_dim":768},
        "vision_feature_layer":-2,"vision_feature_select_strategy":"default"}"#,
    )
    .unwrap();
    let t = &cfg.text_config;
    assert_eq!(t.family, TextFamily::Gemma);
    assert_eq!((t.hidden_size, t.num_hidden_layers), (2048, 18));
    assert_eq!((t.num_attention_heads, t.num_key_value_heads), (8, 1));
    assert_eq!(t.head_dim, 256);
    // hidden_activation wins over the historical "gelu" in hidden_act.
    assert_eq!(t.hidden_act, Activation::GeluTanh);
    assert!(t.tie_word_embeddings && cfg.tie_word_embeddings);
    assert_eq!(
        (t.bos_token_id, t.eos_token_ids.clone()),
        (Some(2), vec![1])
    );
    assert_eq!(t.pad_token_id, Some(0));
    assert!(!t.qkv_bias && !t.o_bias && !t.mlp_bias);
    assert_eq!(t.sliding_window, None);
    assert_eq!(cfg.vision_config.family, VisionFamily::Clip);
    assert_eq!(cfg.num_image_features(), 576);
    assert_eq!(cfg.image_token_index, 256000);
}

#[test]
fn mistral_shaped_like_bakllava() {
    // llava-hf/bakLlava-v1-hf: Mistral-7B decoder, CLIP ViT-L/14-336.
    let cfg = parse(
        r#"{"architectures":["LlavaForConditionalGeneration"],"ignore_index":-100,
        "image_token_index":32000,"model_type":"llava","pad_token_id":32001,
        "projector_hidden_act":"gelu","text_config":{"_name_or_path":"mistralai/Mistral-7B-v0.1",
        "architectures":["MistralForCausalLM"],"intermediate_size":14336,
        "max_position_embeddings":32768,"model_type":"mistral","num_key_value_heads":8,
        "rms_norm_eps":1e-05,"rope_theta":10000.0,"sliding_window":4096,
        "torch_dtype":"bfloat16","vocab_size":32064},"tie_word_embeddings":false,
        "vision_config":{"hidden_size":1024,"image_size":336,"intermediate_size":4096,
        "model_type":"clip_vision_model","num_attention_heads":16,"num_hidden_layers":24,
        "patch_size":14,"projection_dim":768,"vocab_size":32000},
        "vision_feature_layer":-2,"vision_feature_select_strategy":"default","vocab_size":32064}"#,
    )
    .unwrap();
    let t = &cfg.text_config;
    assert_eq!(t.family, TextFamily::Mistral);
    assert_eq!(
        (t.hidden_size, t.num_hidden_layers, t.head_dim),
        (4096, 32, 128)
    );
    assert_eq!((t.num_attention_heads, t.num_key_value_heads), (32, 8));
    assert_eq!(t.sliding_window, Some(4096));
    assert!(t.layer_types.iter().all(|l| *l == AttentionType::Sliding));
    assert_eq!(t.layer_window(31), Some(4096));
    assert_eq!(t.hidden_act, Activation::Silu);
    assert!(!t.qkv_bias && !t.o_bias);
    assert!(!cfg.tie_word_embeddings);
    assert_eq!(t.rms_norm_eps, 1e-5);
}

#[test]
fn qwen2_siglip_shaped_like_llava_interleave() {
    // llava-hf/llava-interleave-qwen-0.5b-hf: Qwen1.5-0.5B-Chat decoder (qwen2), the SigLIP
    // so400m tower without its head, every position of the last layer fed to the projector.
    let cfg = parse(
        r#"{"architectures":["LlavaForConditionalGeneration"],"ignore_index":-100,
        "image_token_index":151646,"model_type":"llava","projector_hidden_act":"gelu",
        "text_config":{"_name_or_path":"Qwen/Qwen1.5-0.5B-Chat","architectures":["Qwen2ForCausalLM"],
        "bos_token_id":151643,"eos_token_id":151645,"hidden_size":1024,"intermediate_size":2816,
        "max_position_embeddings":32768,"max_window_layers":21,"model_type":"qwen2",
        "num_attention_heads":16,"num_hidden_layers":24,"num_key_value_heads":16,
        "rope_theta":1000000.0,"sliding_window":32768,"tie_word_embeddings":true,
        "torch_dtype":"bfloat16","use_sliding_window":false,"vocab_size":152000},
        "vision_config":{"hidden_size":1152,"image_size":384,"intermediate_size":4304,
        "model_type":"siglip_vision_model","num_attention_heads":16,"num_hidden_layers":26,
        "patch_size":14,"vision_use_head":false},
        "vision_feature_layer":-1,"vision_feature_select_strategy":"full"}"#,
    )
    .unwrap();
    let t = &cfg.text_config;
    assert_eq!(t.family, TextFamily::Qwen2);
    assert_eq!(
        (t.hidden_size, t.head_dim, t.num_key_value_heads),
        (1024, 64, 16)
    );
    assert_eq!(t.rope_theta, 1_000_000.0);
    assert_eq!(t.sliding_window, None, "use_sliding_window is false");
    assert_eq!(t.layer_window(23), None);
    assert!(t.qkv_bias && !t.o_bias);
    assert!(cfg.tie_word_embeddings);
    assert_eq!(t.eos_token_ids, vec![151645]);
    let v = &cfg.vision_config;
    assert_eq!(v.family, VisionFamily::Siglip);
    assert_eq!(v.hidden_act, Activation::GeluTanh);
    assert_eq!(v.layer_norm_eps, 1e-6);
    assert_eq!(v.projection_dim, None);
    assert_eq!((v.grid_side(), v.num_positions()), (27, 729));
    assert_eq!(cfg.vision_feature_select_strategy, SelectStrategy::Full);
    assert_eq!(cfg.feature_layers().unwrap(), vec![26]);
    // No CLS token: `full` keeps the 729 patches; `default` drops the first position whatever
    // it holds, as transformers does.
    assert_eq!(cfg.num_image_features(), 729);
    let mut dropped = cfg.clone();
    dropped.vision_feature_select_strategy = SelectStrategy::Default;
    assert_eq!(dropped.num_image_features(), 728);
}

#[test]
fn class_defaults_per_family() {
    let m = text(r#"{"model_type":"mistral"}"#);
    assert_eq!((m.intermediate_size, m.num_key_value_heads), (14336, 8));
    assert_eq!(m.max_position_embeddings, 131072);
    assert_eq!(m.sliding_window, Some(4096));
    let g = text(r#"{"model_type":"gemma"}"#);
    assert_eq!(
        (g.vocab_size, g.hidden_size, g.head_dim),
        (256000, 3072, 256)
    );
    assert_eq!((g.num_attention_heads, g.num_key_value_heads), (16, 16));
    assert_eq!(g.hidden_act, Activation::GeluTanh);
    assert!(g.tie_word_embeddings);
    let q = text(r#"{"model_type":"qwen2"}"#);
    assert_eq!(
        (q.vocab_size, q.intermediate_size, q.max_position_embeddings),
        (151936, 22016, 32768)
    );
    assert_eq!(q.num_key_value_heads, 32);
    assert_eq!((q.bos_token_id, q.eos_token_ids.len()), (None, 0));
    let l = text("{}");
    assert_eq!(l.family, TextFamily::Llama);
    assert_eq!(
        (l.bos_token_id, l.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    // Gemma without hidden_activation uses hidden_act, whose legacy "gelu" transformers runs
    // as the tanh approximation; hidden_activation, when given, wins.
    let g = text(r#"{"model_type":"gemma","hidden_act":"gelu"}"#);
    assert_eq!(g.hidden_act, Activation::GeluTanh);
    let g = text(r#"{"model_type":"gemma","hidden_act":"silu"}"#);
    assert_eq!(g.hidden_act, Activation::Silu);
    let g = text(r#"{"model_type":"gemma","hidden_act":"silu","hidden_activation":"gelu"}"#);
    assert_eq!(g.hidden_act, Activation::Gelu);
    // An empty SigLIP config takes SiglipVisionConfig's own defaults.
    let v = parse(r#"{"vision_config":{"model_type":"siglip_vision_model"}}"#)
        .unwrap()
        .vision_config;
    assert_eq!((v.hidden_size, v.image_size, v.patch_size), (768, 224, 16));
}

#[test]
fn null_is_not_missing() {
    // Mistral v0.2 writes "sliding_window": null: no window at all.
    let m = text(r#"{"model_type":"mistral","sliding_window":null}"#);
    assert_eq!(m.sliding_window, None);
    assert!(m.layer_types.iter().all(|l| *l == AttentionType::Full));
    // A null num_key_value_heads means as many as the query heads.
    let m = text(r#"{"model_type":"mistral","num_key_value_heads":null}"#);
    assert_eq!(m.num_key_value_heads, 32);
}

#[test]
fn qwen2_sliding_layers() {
    let q = text(
        r#"{"model_type":"qwen2","num_hidden_layers":4,"use_sliding_window":true,
        "sliding_window":16,"max_window_layers":2}"#,
    );
    assert_eq!(q.sliding_window, Some(16));
    let windows: Vec<_> = (0..4).map(|i| q.layer_window(i)).collect();
    assert_eq!(windows, vec![None, None, Some(16), Some(16)]);
    // transformers 5 writes layer_types; they win over max_window_layers.
    let q = text(
        r#"{"model_type":"qwen2","num_hidden_layers":2,"use_sliding_window":true,
        "sliding_window":8,"layer_types":["sliding_attention","full_attention"],
        "rope_parameters":{"rope_type":"default","rope_theta":1000000.0}}"#,
    );
    assert_eq!((q.layer_window(0), q.layer_window(1)), (Some(8), None));
    assert_eq!(q.rope_theta, 1_000_000.0);
    let err = parse(
        r#"{"text_config":{"model_type":"qwen2","num_hidden_layers":3,"use_sliding_window":true,
        "layer_types":["full_attention"]}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("layer_types"), "{err}");
}

#[test]
fn biases_follow_transformers_classes() {
    let l = text(r#"{"attention_bias":true,"mlp_bias":true}"#);
    assert!(l.qkv_bias && l.o_bias && l.mlp_bias);
    // MistralAttention builds no bias whatever attention_bias says.
    let m = text(r#"{"model_type":"mistral","attention_bias":true,"mlp_bias":true}"#);
    assert!(!m.qkv_bias && !m.o_bias && !m.mlp_bias);
    let g = text(r#"{"model_type":"gemma","attention_bias":true}"#);
    assert!(g.qkv_bias && g.o_bias);
    let q = text(r#"{"model_type":"qwen2","attention_bias":false}"#);
    assert!(q.qkv_bias && !q.o_bias);
}

#[test]
fn unsupported_model_types_name_what_was_found() {
    let both = ["llava", "gemma", "qwen2", "siglip_vision_model"];
    for (json, found, supported) in [
        (r#"{"model_type":"qwen2_vl"}"#, "'qwen2_vl'", &both[..]),
        (r#"{"model_type":"llava_next"}"#, "'llava_next'", &both[..]),
        (
            r#"{"model_type":"llava_onevision"}"#,
            "'llava_onevision'",
            &both[..],
        ),
        (r#"{"model_type":"qwen2_5_vl"}"#, "'qwen2_5_vl'", &both[..]),
        (r#"{"model_type":"blip-2"}"#, "'blip-2'", &both[..]),
        (
            r#"{"text_config":{"model_type":"phi3"}}"#,
            "'phi3'",
            &["llama", "mistral", "gemma", "qwen2"][..],
        ),
        (
            r#"{"vision_config":{"model_type":"dinov2"}}"#,
            "'dinov2'",
            &["clip_vision_model", "siglip_vision_model"][..],
        ),
    ] {
        let err = parse(json).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelError::UnsupportedConfig(_)), "{msg}");
        assert!(msg.contains(found), "{msg}");
        for name in supported {
            assert!(msg.contains(name), "{name} missing: {msg}");
        }
        assert_eq!(msg.matches(". ").count(), 0, "one sentence: {msg}");
    }
}
