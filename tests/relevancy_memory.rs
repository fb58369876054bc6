//! The tracked pass's memory estimate for LLaVA-1.5-7B (the numbers quoted in
//! `explain::relevancy::memory`'s documentation) and its growth with the sequence length.

use std::path::Path;

use candle_core::DType;
use lvlmscope::explain::relevancy::{estimate_tracked_bytes, memory};
use lvlmscope::model::LlavaConfig;

const LLAVA_7B: &str = r#"{
  "architectures": ["LlavaForConditionalGeneration"],
  "model_type": "llava",
  "image_token_index": 32000,
  "projector_hidden_act": "gelu",
  "vision_feature_layer": -2,
  "vision_feature_select_strategy": "default",
  "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "vocab_size": 32064, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05},
  "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024,
    "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "image_size": 336, "patch_size": 14, "projection_dim": 768}
}"#;

const GIB: f64 = (1u64 << 30) as f64;

#[test]
fn llava_7b_at_650_positions_in_bf16() {
    let cfg = LlavaConfig::from_json(LLAVA_7B, Path::new("config.json")).unwrap();
    let plan = memory::plan(&cfg, 650, DType::BF16);
    let fixed = plan.fixed as f64 / GIB;
    let per_token = plan.per_token as f64 / GIB;
    let four = plan.peak(4) as f64 / GIB;
    eprintln!(
        "7B bf16 S=650: fixed {fixed:.2} GiB, per token {per_token:.3} GiB, 4 tokens {four:.2} GiB"
    );
    // the documented figures: ~4.5 GiB kept, ~0.3 GiB per token, ~5.7 GiB with 4 tokens
    assert!((4.2..4.8).contains(&fixed), "fixed {fixed}");
    assert!((0.25..0.35).contains(&per_token), "per token {per_token}");
    assert!((5.4..6.0).contains(&four), "four tokens {four}");
    assert_eq!(estimate_tracked_bytes(&cfg, 650, DType::BF16), plan.peak(1));
    // f32 needs more, and the attention part grows quadratically
    assert!(estimate_tracked_bytes(&cfg, 650, DType::F32) > plan.peak(1));
    let long = estimate_tracked_bytes(&cfg, 1300, DType::BF16) as f64;
    assert!(long > 2.5 * plan.peak(1) as f64);
}
