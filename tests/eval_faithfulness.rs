//! Deletion curves and probability drops (`explain::faithfulness`) on the tiny fixture model,
//! checked against transformers' logits and against plain single-image forward passes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lvlmscope::explain::faithfulness::{
    deletion_curve, fill_patches, mean_colour, probability_drop, softmax_at, Deletion,
    FaithfulnessError,
};
use lvlmscope::model::{AttentionRecorder, Llava, ModelDir};
use lvlmscope::session::{
    Array, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session, TokenStrings, SCHEMA,
};

const MODEL: &str = "tiny-llava-gqa";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_model() -> Llava {
    let dir = ModelDir::resolve(fixtures().join(MODEL).to_str().unwrap()).unwrap();
    Llava::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

fn reference() -> std::collections::HashMap<String, Tensor> {
    let path = fixtures().join(format!("reference/{MODEL}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// A session with the reference run's ids and pixel values (what `generate` would record).
fn session(model: &Llava) -> Session {
    let r = reference();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("reference/{MODEL}.json"))).unwrap(),
    )
    .unwrap();
    let span = &json["image_span"];
    let px = &r["pixel_values"];
    let cfg = model.config();
    Session {
        manifest: Manifest {
            schema: SCHEMA.to_string(),
            model: ModelInfo {
                path: MODEL.to_string(),
                architecture: "LlavaForConditionalGeneration".to_string(),
                text_layers: cfg.text_config.num_hidden_layers,
                text_heads: cfg.text_config.num_attention_heads,
                vision_layers: model.vision_layers_run(),
                vision_heads: cfg.vision_config.num_attention_heads,
                image_grid: model.image_grid(),
                family: None,
            },
            prompt: json["prompt"].as_str().unwrap().to_string(),
            image: ImageInfo {
                path: "image.png".to_string(),
                mode: "default".to_string(),
                original_size: [48, 36],
            },
            generation: GenerationInfo {
                max_new_tokens: 8,
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
            },
            tokens: TokenStrings::default(),
            image_span: [
                span[0].as_u64().unwrap() as usize,
                span[1].as_u64().unwrap() as usize,
            ],
            regions: Vec::new(),
            relevancy_tokens: Vec::new(),
            causal: None,
            timings: BTreeMap::new(),
            lens: Vec::new(),
            turns: Vec::new(),
        },
        input_ids: r["input_ids"].to_vec1::<i64>().unwrap(),
        output_ids: r["output_ids"].to_vec1::<i64>().unwrap(),
        pixel_values: Array::new(
            px.dims().to_vec(),
            px.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        )
        .unwrap(),
        attn_gen: None,
        attn_full: BTreeMap::new(),
        attn_vit: None,
        relevancy_llm: None,
        relevancy_vit: None,
        relevancy_combined: None,
        turns: Vec::new(),
    }
}

/// Probability of `output_ids[t]` after one ordinary single-image forward with `pixels`.
fn single_forward_probability(model: &Llava, s: &Session, t: usize, pixels: &Array) -> f32 {
    let mut ids: Vec<u32> = s.input_ids.iter().map(|&i| i as u32).collect();
    ids.extend(s.output_ids[..t].iter().map(|&i| i as u32));
    let px = Tensor::from_vec(pixels.data.clone(), pixels.shape.as_slice(), &Device::Cpu).unwrap();
    let mut rec = AttentionRecorder::off();
    let feats = model.image_features(&px, &mut rec).unwrap();
    let embeds = model.embed(&ids, Some(&feats)).unwrap();
    let mut cache = model.new_cache();
    let logits = model
        .forward(&embeds, 0, &mut cache, &mut rec, false)
        .unwrap();
    let row: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    softmax_at(&row, s.output_ids[t] as usize)
}

/// A map that ranks the patches in a fixed scrambled order (distinct values).
fn scrambled_map(p: usize) -> Vec<f32> {
    (0..p)
        .map(|i| ((i * 7 + 3) % p) as f32 / p as f32)
        .collect()
}

#[test]
fn k_zero_is_the_probability_of_the_ordinary_forward() {
    let model = load_model();
    let s = session(&model);
    let logits = reference()["logits"].to_vec2::<f32>().unwrap();
    let p = 16;
    for t in [0, 3, 7] {
        let curve = deletion_curve(&model, &s, t, &scrambled_map(p), &[0, 4]).unwrap();
        let q = s.num_input() - 1 + t;
        let transformers = softmax_at(&logits[q], s.output_ids[t] as usize);
        assert!(
            (curve[0] - transformers).abs() < 1e-4,
            "token {t}: {} vs transformers {transformers}",
            curve[0]
        );
        let ours = single_forward_probability(&model, &s, t, &s.pixel_values);
        assert!(
            (curve[0] - ours).abs() < 1e-5,
            "token {t}: {} vs {ours}",
            curve[0]
        );
    }
}

#[test]
fn removing_every_patch_gives_the_mean_colour_image() {
    let model = load_model();
    let s = session(&model);
    let colour = mean_colour(&s.pixel_values);
    let plane = s.pixel_values.data.len() / 3;
    let flat: Vec<f32> = colour
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, plane))
        .collect();
    let flat = Array::new(s.pixel_values.shape.clone(), flat).unwrap();
    let ks = [0, 1, 5, 16];
    for t in [0, 2] {
        let curve = deletion_curve(&model, &s, t, &scrambled_map(16), &ks).unwrap();
        assert_eq!(curve.len(), ks.len());
        let expected = single_forward_probability(&model, &s, t, &flat);
        assert!(
            (curve[3] - expected).abs() < 1e-5,
            "token {t}: {} vs {expected}",
            curve[3]
        );
        assert!(curve.iter().all(|p| (0.0..=1.0).contains(p)));
    }
}

#[test]
fn every_point_matches_a_single_forward_on_the_filled_image() {
    let model = load_model();
    let s = session(&model);
    let map = scrambled_map(16);
    let ks = [0, 1, 2, 3, 8, 13, 16];
    let mut d = Deletion::new(&model, &s, 1).unwrap().with_batch(3);
    let curve = d.curve(&map, &ks).unwrap();
    let order = lvlmscope::explain::faithfulness::patch_order(&map);
    for (i, &k) in ks.iter().enumerate() {
        let filled = fill_patches(&s.pixel_values, [4, 4], &order[..k], d.colour());
        let expected = single_forward_probability(&model, &s, 1, &filled);
        assert!(
            (curve[i] - expected).abs() < 1e-5,
            "k = {k}: {} vs {expected}",
            curve[i]
        );
    }
    // Points already computed are not run again.
    let run = d.images_run();
    assert_eq!(run, ks.len());
    d.curve(&map, &ks).unwrap();
    assert_eq!(d.images_run(), run);
}

#[test]
fn filling_touches_only_the_chosen_patches() {
    let px = Array::new(vec![3, 4, 4], (0..48).map(|v| v as f32).collect()).unwrap();
    let out = fill_patches(&px, [2, 2], &[3], [-1.0, -2.0, -3.0]);
    for c in 0..3 {
        for y in 0..4 {
            for x in 0..4 {
                let i = (c * 4 + y) * 4 + x;
                let expected = if x >= 2 && y >= 2 {
                    -(c as f32) - 1.0
                } else {
                    px.data[i]
                };
                assert_eq!(out.data[i], expected, "c{c} y{y} x{x}");
            }
        }
    }
    assert_eq!(mean_colour(&px), [7.5, 23.5, 39.5]);
}

#[test]
fn probability_drop_is_the_fall_at_the_fraction() {
    let model = load_model();
    let s = session(&model);
    let map = scrambled_map(16);
    let curve = deletion_curve(&model, &s, 0, &map, &[0, 4, 16]).unwrap();
    let drop = probability_drop(&model, &s, 0, &map, 0.25).unwrap();
    assert!((drop - (curve[0] - curve[1])).abs() < 1e-6);
    let all = probability_drop(&model, &s, 0, &map, 1.0).unwrap();
    assert!((all - (curve[0] - curve[2])).abs() < 1e-6);
    assert_eq!(probability_drop(&model, &s, 0, &map, 0.0).unwrap(), 0.0);
}

#[test]
fn different_maps_give_different_curves_and_ties_follow_patch_order() {
    let model = load_model();
    let s = session(&model);
    let ks = [0, 4, 8];
    let mut d = Deletion::new(&model, &s, 0).unwrap();
    // A constant map removes patches 0, 1, 2, ... in index order: the same as a map that
    // decreases with the index.
    let flat = vec![0.5; 16];
    let falling: Vec<f32> = (0..16).map(|i| 1.0 - i as f32 / 16.0).collect();
    let rising: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
    let curves = d.curves(&[flat, falling, rising], &ks).unwrap();
    assert_eq!(curves[0], curves[1]);
    assert_ne!(curves[1][1], curves[2][1], "opposite halves removed");
    assert_eq!(curves[1][0], curves[2][0]);
}

#[test]
fn bad_requests_are_errors() {
    let model = load_model();
    let s = session(&model);
    let map = scrambled_map(16);
    assert!(matches!(
        deletion_curve(&model, &s, 8, &map, &[0]),
        Err(FaithfulnessError::Token { token: 8, count: 8 })
    ));
    assert!(matches!(
        deletion_curve(&model, &s, 0, &map[..15], &[0]),
        Err(FaithfulnessError::MapLength {
            got: 15,
            expected: 16
        })
    ));
    assert!(matches!(
        deletion_curve(&model, &s, 0, &map, &[17]),
        Err(FaithfulnessError::TooMany { k: 17, .. })
    ));
    assert!(matches!(
        Deletion::new(&model, &s, 0)
            .unwrap()
            .probabilities(&[vec![2, 16]]),
        Err(FaithfulnessError::Patch {
            patch: 16,
            patches: 16
        })
    ));
    assert!(matches!(
        probability_drop(&model, &s, 0, &map, 1.5),
        Err(FaithfulnessError::Fraction(_))
    ));
}

#[test]
fn a_batch_of_images_gives_each_image_its_own_features_and_logits() {
    let model = load_model();
    let s = session(&model);
    let px = &s.pixel_values;
    let flipped = Array::new(px.shape.clone(), px.data.iter().rev().copied().collect()).unwrap();
    let single = |a: &Array| {
        let t = Tensor::from_vec(a.data.clone(), a.shape.as_slice(), &Device::Cpu).unwrap();
        model
            .image_features(&t, &mut AttentionRecorder::off())
            .unwrap()
    };
    let mut both = px.data.clone();
    both.extend_from_slice(&flipped.data);
    let batch = Tensor::from_vec(both, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let feats = model.batch_image_features(&batch).unwrap();
    for (b, a) in [px, &flipped].into_iter().enumerate() {
        let diff = (feats.get(b).unwrap() - single(a))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "image {b}: features differ by {diff}");
    }
    // A batch of sequences is refused while attention is recorded.
    let ids: Vec<u32> = s.input_ids.iter().map(|&i| i as u32).collect();
    let e = model.embed(&ids, Some(&single(px))).unwrap();
    let two = Tensor::cat(&[&e, &e], 0).unwrap();
    let mut rec = AttentionRecorder::new(lvlmscope::model::CaptureMode::default_for(3));
    let refused = model.forward(&two, 0, &mut model.new_cache(), &mut rec, false);
    assert!(refused.is_err());
    let logits = model
        .forward(
            &two,
            0,
            &mut model.new_cache(),
            &mut AttentionRecorder::off(),
            false,
        )
        .unwrap();
    assert_eq!(logits.dims(), &[2, 1, 570]);
}
