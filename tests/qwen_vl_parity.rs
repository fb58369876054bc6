//! Qwen2-VL and Qwen2.5-VL against transformers on the tiny fixtures: processor output (pixel
//! values, grid, input ids) on the wide and the tall image, vision features and every vision
//! attention (window blocks included), M-RoPE positions, logits and every decoder attention
//! of one forward, and greedy ids with a KV cache (prefill, then decode positions).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lvlmscope::model::config::QwenVlConfig;
use lvlmscope::model::tape::{Site, Tape, Tower};
use lvlmscope::model::{ModelDir, NoTape, QwenVl};
use lvlmscope::processing::qwen_vl::QwenImageConfig;
use lvlmscope::processing::{load_image, PromptProcessor};

const MODELS: [&str; 2] = ["tiny-qwen2-vl", "tiny-qwen2_5-vl"];
const PROMPT: &str = "What is in the picture?";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures()
        .join("reference")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Keeps every attention probability tensor, by site.
#[derive(Default)]
struct Keep {
    vision: Vec<Tensor>,
    text: Vec<Tensor>,
}

impl Tape for Keep {
    fn probs(
        &mut self,
        site: Site,
        probs: Tensor,
        _q_offset: usize,
    ) -> candle_core::Result<Tensor> {
        let kept = probs.squeeze(0)?;
        match site.tower {
            Tower::Vision => self.vision.push(kept),
            Tower::Text => self.text.push(kept),
        }
        Ok(probs)
    }
}

struct Input {
    ids: Vec<u32>,
    pixels: Tensor,
    grid: [usize; 3],
}

fn process(name: &str, image: &str) -> Input {
    let dir = fixtures().join(name);
    let cfg = QwenImageConfig::from_dir(&dir).unwrap();
    let img = load_image(&fixtures().join(image)).unwrap();
    let px = cfg.preprocess(&img).unwrap();
    let prompt = PromptProcessor::from_dir_with_token(&dir, "<|image_pad|>").unwrap();
    let enc = prompt
        .encode(PROMPT, px.num_tokens(cfg.merge_size))
        .unwrap();
    let pixels = Tensor::from_vec(px.data, (px.num_patches, px.patch_len), &Device::Cpu).unwrap();
    Input {
        ids: enc.ids,
        pixels,
        grid: px.grid_thw,
    }
}

fn load(name: &str) -> QwenVl {
    let dir = ModelDir::resolve(fixtures().join(name).to_str().unwrap()).unwrap();
    QwenVl::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

fn merged(model: &QwenVl, grid: [usize; 3]) -> [usize; 2] {
    let m = model.config().vision_config.spatial_merge_size;
    [grid[1] / m, grid[2] / m]
}

/// Greedy ids with a KV cache: prefill, then one token per call.
fn greedy(model: &QwenVl, input: &Input, steps: usize) -> Vec<u32> {
    let out = model
        .image_features(&input.pixels, input.grid, &mut NoTape)
        .unwrap();
    let pos = model
        .positions(&input.ids, &[merged(model, input.grid)])
        .unwrap();
    let mut cache = model.new_cache();
    let embeds = model.embed(&input.ids, Some(&out.features)).unwrap();
    let mut logits = model
        .forward(&embeds, 0, &pos, &mut cache, &mut NoTape, false)
        .unwrap();
    let mut got = Vec::new();
    for t in 0..steps {
        let next = logits
            .flatten_all()
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        got.push(next);
        if t + 1 == steps {
            break;
        }
        let e = model.embed_text(&[next]).unwrap();
        let offset = input.ids.len() + t;
        logits = model
            .forward(&e, offset, &pos, &mut cache, &mut NoTape, false)
            .unwrap();
    }
    got
}

#[test]
fn processor_output_equals_transformers() {
    for name in MODELS {
        let r = reference(name);
        for (image, prefix) in [("image.png", ""), ("image_tall.png", "tall_")] {
            let input = process(name, image);
            assert_eq!(
                input.ids,
                ids(&r[&format!("{prefix}input_ids")]),
                "{name} {image}"
            );
            let grid = ids(&r[&format!("{prefix}image_grid_thw")].flatten_all().unwrap());
            assert_eq!(
                input.grid.map(|g| g as u32).to_vec(),
                grid,
                "{name} {image}"
            );
            let d = max_diff(&input.pixels, &r[&format!("{prefix}pixel_values")]);
            assert!(d < 1e-5, "{name} {image}: pixel values differ by {d}");
        }
    }
}

#[test]
fn vision_features_and_attentions_equal_transformers() {
    for name in MODELS {
        let r = reference(name);
        let model = load(name);
        let input = process(name, "image.png");
        let mut keep = Keep::default();
        let out = model
            .image_features(&r["pixel_values"], input.grid, &mut keep)
            .unwrap();
        // The hidden state reaches |x| ≈ 20: compare relative to its size (f32 rounding).
        let want = &r["vision_last_hidden"];
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = max_diff(&out.last_hidden, want);
        assert!(
            d < 1e-5 * scale.max(1.0),
            "{name}: last vision hidden state differs by {d}"
        );
        let d = max_diff(&out.features, &r["image_features"]);
        assert!(d < 1e-5, "{name}: image features differ by {d}");
        let got = Tensor::stack(&keep.vision, 0).unwrap();
        let d = max_diff(&got, &r["vision_attentions"]);
        assert!(d < 1e-5, "{name}: vision attentions differ by {d}");
    }
}

/// With a tape that observes no vision site, Qwen2.5-VL's windowed blocks run window by
/// window (batched by window size); the features must equal transformers' as the masked path's
/// do, on images whose edge windows are smaller than the inner ones.
#[test]
fn window_by_window_features_equal_transformers() {
    for name in MODELS {
        let r = reference(name);
        let model = load(name);
        let input = process(name, "image.png");
        let out = model
            .image_features(&r["pixel_values"], input.grid, &mut NoTape)
            .unwrap();
        let d = max_diff(&out.features, &r["image_features"]);
        assert!(d < 1e-5, "{name}: image features differ by {d}");
        let tall = process(name, "image_tall.png");
        let mut keep = Keep::default();
        let masked = model
            .image_features(&tall.pixels, tall.grid, &mut keep)
            .unwrap();
        let windowed = model
            .image_features(&tall.pixels, tall.grid, &mut NoTape)
            .unwrap();
        let d = max_diff(&masked.last_hidden, &windowed.last_hidden);
        assert!(d < 1e-4, "{name}: windowed and masked paths differ by {d}");
    }
}

#[test]
fn positions_logits_and_attentions_equal_transformers() {
    for name in MODELS {
        let r = reference(name);
        let model = load(name);
        let input = process(name, "image.png");
        let out = model
            .image_features(&input.pixels, input.grid, &mut NoTape)
            .unwrap();
        let mut seq = input.ids.clone();
        let outputs = ids(&r["output_ids"]);
        seq.extend_from_slice(&outputs[..outputs.len() - 1]);
        let pos = model
            .positions(&input.ids, &[merged(&model, input.grid)])
            .unwrap();
        let want = r["position_ids"].to_vec2::<i64>().unwrap();
        let got = pos.range(0, seq.len());
        for (i, p) in got.iter().enumerate() {
            assert_eq!(
                *p,
                [want[0][i], want[1][i], want[2][i]],
                "{name}: position {i}"
            );
        }
        let embeds = model
            .embed_sequence(&seq, input.ids.len(), Some(&out.features))
            .unwrap();
        let mut keep = Keep::default();
        let mut cache = model.new_cache();
        let logits = model
            .forward(&embeds, 0, &pos, &mut cache, &mut keep, true)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let d = max_diff(&logits, &r["logits"]);
        assert!(d < 1e-4, "{name}: logits differ by {d}");
        let got = Tensor::stack(&keep.text, 0).unwrap();
        let d = max_diff(&got, &r["attentions"]);
        assert!(d < 1e-5, "{name}: decoder attentions differ by {d}");
    }
}

#[test]
fn greedy_ids_equal_transformers_on_wide_and_tall_images() {
    for name in MODELS {
        let r = reference(name);
        let model = load(name);
        for (image, prefix) in [("image.png", ""), ("image_tall.png", "tall_")] {
            let input = process(name, image);
            let want = ids(&r[&format!("{prefix}output_ids")]);
            assert_eq!(greedy(&model, &input, want.len()), want, "{name} {image}");
            let pos = model
                .positions(&input.ids, &[merged(&model, input.grid)])
                .unwrap();
            let want_pos = r[&format!("{prefix}position_ids")]
                .to_vec2::<i64>()
                .unwrap();
            let s = want_pos[0].len();
            for (i, p) in pos.range(0, s).iter().enumerate() {
                let w = [want_pos[0][i], want_pos[1][i], want_pos[2][i]];
                assert_eq!(*p, w, "{name} {image}: position {i}");
            }
        }
    }
}

#[test]
fn both_config_layouts_parse() {
    for name in MODELS {
        let cfg = QwenVlConfig::from_file(&fixtures().join(name).join("config.json")).unwrap();
        assert_eq!(cfg.mrope_section, vec![2, 3, 3]);
        assert_eq!(cfg.text_config.rope_theta, 1e6);
        assert_eq!(cfg.image_token_id, 5);
    }
}
