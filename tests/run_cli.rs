//! `lvlmscope run` end to end on the fixture models, checked against transformers' references.

use std::path::{Path, PathBuf};
use std::process::Command;

use lvlmscope::session::{self, Array};

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reads one float or int tensor of a reference file as f64 values with its shape.
fn reference(model: &str, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(fixtures().join(format!("reference/{model}.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    let values = match view.dtype() {
        safetensors::Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::I64 => view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (view.shape().to_vec(), values)
}

/// Runs `lvlmscope run` greedily on a fixture and returns the saved session and stdout.
fn run_fixture(model: &str, extra: &[&str]) -> (session::Session, String) {
    let tmp = tempfile::tempdir().unwrap();
    let save = tmp.path().join("s.session");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("reference/{model}.json"))).unwrap(),
    )
    .unwrap();
    let prompt = json["prompt"].as_str().expect("prompt in reference json");
    let out = Command::new(BIN)
        .args(["run", "--model"])
        .arg(fixtures().join(model))
        .arg("--image")
        .arg(fixtures().join("image.png"))
        .args(["--prompt", prompt, "--max-new-tokens", "8", "--save"])
        .arg(&save)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stderr}");
    assert!(save.exists(), "no session written; stderr: {stderr}");
    (
        session::load(&save).unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn max_row_diff(ours: &Array, reference: &[f64], ref_shape: &[usize], s: usize, n: usize) -> f64 {
    // ours: [T, L, H, S]; reference: [L, H, S, S]
    let (t, l, h) = (ours.shape[0], ours.shape[1], ours.shape[2]);
    assert_eq!(ref_shape, [l, h, s, s]);
    let mut worst = 0.0f64;
    for ti in 0..t {
        let q = n - 1 + ti;
        for li in 0..l {
            for hi in 0..h {
                let row = ours.row(&[ti, li, hi]);
                for (k, &v) in row.iter().enumerate() {
                    let r = reference[((li * h + hi) * s + q) * s + k];
                    worst = worst.max((v as f64 - r).abs());
                }
            }
        }
    }
    worst
}

fn check_model(model: &str) {
    let (s, stdout) = run_fixture(model, &["--f32-attention"]);
    let (_, ids) = reference(model, "input_ids");
    let (_, out_ids) = reference(model, "output_ids");
    let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
    let out_ids: Vec<i64> = out_ids.iter().map(|&v| v as i64).collect();
    assert_eq!(s.input_ids, ids, "input ids");
    assert_eq!(s.output_ids, out_ids, "greedy ids");
    assert!(!stdout.trim().is_empty(), "the answer is printed");
    let (shape, attn) = reference(model, "attentions");
    let positions = s.num_positions();
    let diff = max_row_diff(
        s.attn_gen.as_ref().expect("rows recorded by default"),
        &attn,
        &shape,
        positions,
        s.num_input(),
    );
    assert!(diff <= 1e-5, "{model}: attention rows differ by {diff}");
    let (_, pixels) = reference(model, "pixel_values");
    let worst = s
        .pixel_values
        .data
        .iter()
        .zip(&pixels)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 2e-2, "{model}: pixel values differ by {worst}");
    // One image region: the grid's patches (after a CLS feature under strategy `full`), over
    // the centred crop of the 48x36 image (shortest edge resized to 32, a 32x32 crop).
    assert_eq!(s.manifest.schema, session::SCHEMA);
    let [r] = &s.manifest.regions[..] else {
        panic!("{model}: regions {:?}", s.manifest.regions)
    };
    let [start, len] = s.manifest.image_span;
    assert_eq!(r.kind, session::RegionKind::Image);
    assert_eq!(r.grid, s.manifest.model.image_grid);
    assert_eq!(r.span, [start + len - r.cells(), r.cells()], "{model}");
    let [x0, y0, x1, y1] = r.rect;
    assert!(
        (x0 - 6.0).abs() < 1.0 && (x1 - 42.0).abs() < 1.0,
        "{model}: {:?}",
        r.rect
    );
    assert_eq!((y0, y1), (0.0, 36.0), "{model}");
}

#[test]
fn gqa_model_matches_transformers() {
    check_model("tiny-llava-gqa");
}

#[test]
fn full_strategy_sharded_model_matches_transformers() {
    check_model("tiny-llava-full");
}

#[test]
fn capture_full_stores_the_last_layer_matrix() {
    let model = "tiny-llava-gqa";
    let (s, _) = run_fixture(model, &["--capture", "full", "--f32-attention"]);
    let last = s.manifest.model.text_layers - 1;
    let full = s.attn_full.get(&last).expect("last layer stored");
    let (shape, attn) = reference(model, "attentions");
    let (h, positions) = (shape[1], shape[2]);
    assert_eq!(full.shape, [h, positions, positions]);
    let offset = last * h * positions * positions;
    let worst = full
        .data
        .iter()
        .zip(&attn[offset..])
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 1e-5, "full matrix differs by {worst}");
}

#[test]
fn capture_off_stores_no_attention() {
    let (s, _) = run_fixture("tiny-llava-gqa", &["--capture", "off"]);
    assert!(s.attn_gen.is_none());
    assert!(s.attn_full.is_empty());
}

#[test]
fn sampling_is_reproducible_for_a_seed() {
    let args = ["--temperature", "1.5", "--top-p", "0.9", "--seed", "5"];
    let (a, _) = run_fixture("tiny-llava-gqa", &args);
    let (b, _) = run_fixture("tiny-llava-gqa", &args);
    assert_eq!(a.output_ids, b.output_ids);
    assert_eq!(a.manifest.generation.seed, 5);
}

#[test]
fn causal_flag_explains_every_output_token() {
    let (s, _) = run_fixture("tiny-llava-gqa", &["--causal"]);
    let last = s.manifest.model.text_layers - 1;
    assert!(
        s.attn_full.contains_key(&last),
        "--causal records the last layer"
    );
    let causal = s.manifest.causal.as_ref().expect("causal results stored");
    assert_eq!(causal.params.layer, last);
    assert_eq!(causal.tokens.len(), s.num_output());
    for (t, token) in &causal.tokens {
        assert_eq!(token.target, s.query_position(*t));
        assert_eq!(token.heads.len(), s.manifest.model.text_heads);
        for head in &token.heads {
            assert!(head.explanation.iter().all(|&p| p < token.target));
            assert!(head.nodes.contains(&token.target));
        }
    }
}

#[test]
fn relevancy_flag_matches_the_autograd_reference() {
    let model = "tiny-llava-gqa";
    let (s, _) = run_fixture(model, &["--relevancy"]);
    assert_eq!(
        s.manifest.relevancy_tokens,
        (0..s.num_output()).collect::<Vec<_>>()
    );
    let bytes =
        std::fs::read(fixtures().join(format!("reference/{model}.relevancy.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (ours, name) in [
        (s.relevancy_llm.as_ref(), "relevancy_llm"),
        (s.relevancy_vit.as_ref(), "relevancy_vit"),
    ] {
        let ours = ours.unwrap_or_else(|| panic!("{name} stored"));
        let view = st.tensor(name).unwrap();
        assert_eq!(ours.shape, view.shape());
        let reference: Vec<f64> = match view.dtype() {
            safetensors::Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            _ => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
        };
        let worst = ours
            .data
            .iter()
            .zip(&reference)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-4, "{name} differs by {worst}");
    }
}
