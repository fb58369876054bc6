//! Every decoder family and vision tower against transformers and PyTorch autograd on the tiny
//! family fixtures: greedy ids, every generated attention row, image features, and relevancy
//! (decoder, vision, combined). `tiny-llava-imgtok` generates its own image-token id, which is
//! embedded as an ordinary token.

mod fixture_support;

use fixture_support::{argmax, ids, load_fixture, max_diff, reference};

use candle_core::Tensor;
use lvlmscope::model::tracked::TrackedPass;
use lvlmscope::model::{AttentionRecorder, CaptureMode, Llava};

const FAMILIES: [&str; 4] = [
    "tiny-llava-gemma",
    "tiny-llava-mistral",
    "tiny-llava-qwen2-siglip",
    "tiny-llava-imgtok",
];

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Greedy prefill + decode with the KV cache from `feats`, recording the generated rows:
/// (output ids, rows `[T, L, H, S]`).
fn greedy(model: &Llava, input: &[u32], feats: &Tensor, t_len: usize) -> (Vec<u32>, Vec<f32>) {
    let n = input.len();
    let (layers, heads) = (model.num_layers(), model.num_heads());
    let mut rec = AttentionRecorder::new(CaptureMode::default_for(layers));
    let mut cache = model.new_cache();
    let embeds = model.embed(input, Some(feats)).unwrap();
    let mut logits = model
        .forward(&embeds, 0, &mut cache, &mut rec, false)
        .unwrap();
    let mut out = Vec::new();
    for t in 0..t_len {
        let next = argmax(&flat(&logits));
        out.push(next);
        if t + 1 < t_len {
            let e = model.embed_text(&[next]).unwrap();
            logits = model
                .forward(&e, n + t, &mut cache, &mut rec, false)
                .unwrap();
        }
    }
    let (_, rows) = rec.generated_rows(layers, heads, n + t_len - 1).unwrap();
    (out, rows)
}

#[test]
fn greedy_ids_and_attention_rows_match_transformers() {
    for name in FAMILIES {
        let model = load_fixture(name);
        let r = reference(&format!("{name}.safetensors"));
        let (input, want) = (ids(&r["input_ids"]), ids(&r["output_ids"]));
        let (n, t_len) = (input.len(), want.len());
        let s = n + t_len - 1;
        let (layers, heads) = (model.num_layers(), model.num_heads());
        // The whole model, from the pixels: image features and greedy ids.
        let px = r["pixel_values"].unsqueeze(0).unwrap();
        let mut vision = AttentionRecorder::new(CaptureMode {
            vision: true,
            ..CaptureMode::off()
        });
        let feats = model.image_features(&px, &mut vision).unwrap();
        let df = max_diff(&flat(&feats), &flat(&r["image_features"]));
        // as tests/model_parity.rs: f32 against f32 transformers, hidden states up to ~60
        assert!(df < 5e-4, "{name}: image features differ by {df}");
        // only the vision layers that feed the projector run
        let (shape, vit) = vision.vision().unwrap();
        let want_vit = r["vision_attentions"].narrow(0, 0, shape[0]).unwrap();
        assert_eq!(shape, want_vit.dims(), "{name}: attn.vit shape");
        let dv = max_diff(&vit, &flat(&want_vit));
        assert!(dv < 5e-5, "{name}: vision attention differs by {dv}");
        let (out, _) = greedy(&model, &input, &feats, t_len);
        assert_eq!(out, want, "{name}: greedy ids from the pixels");
        // The decoder fed the reference image features: every generated row.
        let (out, rows) = greedy(&model, &input, &r["image_features"], t_len);
        assert_eq!(out, want, "{name}: greedy ids from the reference features");
        let attn = flat(&r["attentions"]);
        let mut worst = 0f32;
        for t in 0..t_len {
            let q = n - 1 + t;
            for lh in 0..layers * heads {
                let got = &rows[(t * layers * heads + lh) * s..][..s];
                let want = &attn[(lh * s + q) * s..][..s];
                worst = worst.max(max_diff(got, want));
            }
        }
        eprintln!("{name}: image features {df:.2e}, attn.vit {dv:.2e}, attn.gen rows {worst:.2e}");
        assert!(worst < 1e-5, "{name}: attention rows differ by {worst}");
    }
}

#[test]
fn relevancy_matches_autograd() {
    for name in FAMILIES {
        let model = load_fixture(name);
        let r = reference(&format!("{name}.safetensors"));
        let rel = reference(&format!("{name}.relevancy.safetensors"));
        let (input, output) = (ids(&r["input_ids"]), ids(&r["output_ids"]));
        let pass = TrackedPass::forward(&model, &input, &output, &r["pixel_values"]).unwrap();
        let tokens: Vec<usize> = (0..output.len()).collect();
        let rows = pass.relevancy(&tokens, 3, &mut |_| {}).unwrap();
        let llm = rel["relevancy_llm"].to_vec2::<f32>().unwrap();
        let combined = rel["relevancy_combined"].to_vec2::<f32>().unwrap();
        // The vit row: CLIP's CLS row of R_v (patch columns); without a class token the mean
        // of R_v's rows.
        let vit: Vec<Vec<f32>> = match rel.get("relevancy_vit") {
            Some(v) => v.to_vec2().unwrap(),
            None => rel["relevancy_vit_matrix"]
                .mean(1)
                .unwrap()
                .to_vec2()
                .unwrap(),
        };
        let mut worst = [0f32; 3];
        for row in &rows {
            let t = row.token;
            let d = [
                max_diff(&row.llm, &llm[t]),
                max_diff(row.vit_patches(), &vit[t]),
                max_diff(row.combined_patches(), &combined[t]),
            ];
            for (w, d) in worst.iter_mut().zip(d) {
                *w = w.max(d);
            }
        }
        eprintln!(
            "{name}: relevancy llm {:.2e} vit {:.2e} combined {:.2e}",
            worst[0], worst[1], worst[2]
        );
        assert!(
            worst.iter().all(|&d| d < 1e-4),
            "{name}: relevancy differs by {worst:?}"
        );
    }
}
