//! The tracked (gradient) pass against the PyTorch-autograd reference on the tiny fixtures:
//! logits of the tracked forward, decoder relevancy rows, vision relevancy rows, combined rows.

mod fixture_support;

use fixture_support::{fixtures, ids, load_fixture, max_diff, reference};

use candle_core::{DType, Device};
use lvlmscope::model::tracked::TrackedPass;
use lvlmscope::model::{Llava, ModelDir};

const MODELS: [&str; 2] = ["tiny-llava-gqa", "tiny-llava-full"];

#[test]
fn tracked_pass_matches_reference() {
    for name in MODELS {
        let model = load_fixture(name);
        let r = reference(&format!("{name}.safetensors"));
        let rel = reference(&format!("{name}.relevancy.safetensors"));
        let input = ids(&r["input_ids"]);
        let output = ids(&r["output_ids"]);
        let (n, t_len) = (input.len(), output.len());
        let pass = TrackedPass::forward(&model, &input, &output, &r["pixel_values"]).unwrap();
        // logits at N-1.. against transformers
        let logits = pass.logits().unwrap().to_vec2::<f32>().unwrap();
        let ref_logits = r["logits"].to_vec2::<f32>().unwrap();
        for t in 0..t_len {
            let d = max_diff(&logits[t], &ref_logits[n - 1 + t]);
            assert!(d < 1e-3, "{name}: logits of token {t} differ by {d}");
        }
        let tokens: Vec<usize> = (0..t_len).collect();
        let mut seen = Vec::new();
        let rows = pass.relevancy(&tokens, 3, &mut |t| seen.push(t)).unwrap();
        assert_eq!(seen, tokens);
        let ref_llm = rel["relevancy_llm"].to_vec2::<f32>().unwrap();
        let ref_vit = rel["relevancy_vit"].to_vec2::<f32>().unwrap();
        let ref_comb = rel["relevancy_combined"].to_vec2::<f32>().unwrap();
        let mut worst = (0f32, 0f32);
        for row in &rows {
            let d = max_diff(&row.llm, &ref_llm[row.token]);
            worst.0 = worst.0.max(d);
            assert!(
                d < 1e-4,
                "{name}: llm row of token {} differs by {d}",
                row.token
            );
            let d = max_diff(&row.vit[1..], &ref_vit[row.token]);
            worst.1 = worst.1.max(d);
            assert!(
                d < 1e-4,
                "{name}: vit row of token {} differs by {d}",
                row.token
            );
            let d = max_diff(&row.combined[1..], &ref_comb[row.token]);
            assert!(
                d < 1e-4,
                "{name}: combined row of token {} differs by {d}",
                row.token
            );
        }
        eprintln!("{name}: max |diff| llm {:.3e} vit {:.3e}", worst.0, worst.1);
    }
}

#[test]
fn half_precision_pass_stays_close() {
    // f16 weights and activations (softmax, norms and Ā in f32): the rows stay close to the
    // float64 reference (f16 moves the attention itself by up to ~0.05 on these models).
    for name in MODELS {
        let dir = ModelDir::resolve(fixtures().join(name).to_str().unwrap()).unwrap();
        let model = Llava::load(&dir, DType::F16, &Device::Cpu).unwrap();
        let r = reference(&format!("{name}.safetensors"));
        let rel = reference(&format!("{name}.relevancy.safetensors"));
        let (input, output) = (ids(&r["input_ids"]), ids(&r["output_ids"]));
        let pass = TrackedPass::forward(&model, &input, &output, &r["pixel_values"]).unwrap();
        let rows = pass.relevancy(&[0, 7], 2, &mut |_| {}).unwrap();
        let ref_llm = rel["relevancy_llm"].to_vec2::<f32>().unwrap();
        let ref_vit = rel["relevancy_vit"].to_vec2::<f32>().unwrap();
        for row in &rows {
            let dl = max_diff(&row.llm, &ref_llm[row.token]);
            let dv = max_diff(&row.vit[1..], &ref_vit[row.token]);
            eprintln!("{name} f16 token {}: llm {dl:.2e} vit {dv:.2e}", row.token);
            assert!(
                dl < 0.05 && dv < 0.05,
                "{name}: f16 rows off by {dl} / {dv}"
            );
        }
    }
}
