//! `explain_session` on a small in-memory session.

use std::collections::BTreeMap;

use lvlmscope::explain::causal::{
    explain_session, explain_token, total_image_weights, CausalError,
};
use lvlmscope::session::{
    Array, CausalParams, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session, TokenStrings,
    SCHEMA,
};

const N: usize = 20; // input positions
const T: usize = 3; // output tokens
const S: usize = N + T - 1;
const SPAN: (usize, usize) = (2, 12);

fn session_with(layer: usize) -> Session {
    // deterministic causal attention: a sink, two strong image columns, softmax-like rows
    let heads = 2;
    let mut data = vec![0f32; heads * S * S];
    for h in 0..heads {
        for q in 0..S {
            let mut row: Vec<f64> = (0..=q)
                .map(|k| 1.0 + ((k * 7 + q * 3 + h * 5) % 11) as f64 / 5.0)
                .collect();
            row[0] += 4.0;
            for hot in [4 + h, 9] {
                if hot <= q {
                    row[hot] += 3.0;
                }
            }
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            for (k, v) in row.iter().enumerate() {
                data[(h * S + q) * S + k] = (v.exp() / z) as f32;
            }
        }
    }
    let manifest = Manifest {
        schema: SCHEMA.to_string(),
        model: ModelInfo {
            path: "test".into(),
            architecture: "LlavaForConditionalGeneration".into(),
            text_layers: 2,
            text_heads: heads,
            vision_layers: 1,
            vision_heads: 1,
            image_grid: [3, 4],
            family: None,
        },
        prompt: "what?".into(),
        image: ImageInfo {
            path: "none".into(),
            mode: "default".into(),
            original_size: [4, 3],
        },
        generation: GenerationInfo {
            max_new_tokens: T,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            dtype: None,
            device: None,
        },
        tokens: TokenStrings {
            input: vec!["x".into(); N],
            output: vec!["y".into(); T],
        },
        image_span: [SPAN.0, SPAN.1],
        regions: Vec::new(),
        relevancy_tokens: Vec::new(),
        causal: None,
        timings: BTreeMap::new(),
        lens: Vec::new(),
        turns: Vec::new(),
        vision_attention: None,
    };
    let mut attn_full = BTreeMap::new();
    attn_full.insert(layer, Array::new(vec![heads, S, S], data).unwrap());
    Session {
        manifest,
        input_ids: vec![0; N],
        output_ids: vec![0; T],
        pixel_values: Array::zeros(&[3, 2, 2]),
        attn_gen: None,
        attn_full,
        attn_vit: None,
        relevancy_llm: None,
        relevancy_vit: None,
        relevancy_combined: None,
        turns: Vec::new(),
    }
}

#[test]
fn explains_each_requested_token_at_its_query_position() {
    let s = session_with(1);
    let params = CausalParams {
        layer: 1,
        ..CausalParams::default()
    };
    let res = explain_session(&s, &[0, 2], &params).expect("layer 1 is present");
    assert_eq!(res.params, params);
    assert_eq!(res.tokens.keys().copied().collect::<Vec<_>>(), [0, 2]);
    for (&t, tok) in &res.tokens {
        assert_eq!(tok.target, N - 1 + t);
        assert_eq!(tok.heads.len(), 2);
        let direct = explain_token(&s.attn_full[&1], SPAN, tok.target, &params);
        assert_eq!(&direct, tok);
        let total = total_image_weights(tok, SPAN);
        assert_eq!(total.len(), SPAN.1);
        let sum: f64 = tok
            .heads
            .iter()
            .flat_map(|h| h.image_weights.values())
            .sum();
        assert!((total.iter().sum::<f64>() - sum).abs() < 1e-12);
    }
}

#[test]
fn missing_layer_and_bad_tokens_are_errors() {
    let s = session_with(1);
    let params = CausalParams {
        layer: 0,
        ..CausalParams::default()
    };
    let err = explain_session(&s, &[0], &params).unwrap_err();
    assert_eq!(err, CausalError::MissingLayer(0));
    assert!(err.to_string().contains("layer 0"));
    let params = CausalParams {
        layer: 1,
        ..CausalParams::default()
    };
    let err = explain_session(&s, &[T], &params).unwrap_err();
    assert!(matches!(err, CausalError::TokenOutOfRange { token: 3, .. }));
}
