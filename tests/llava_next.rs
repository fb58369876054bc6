//! LLaVA-NeXT and LLaVA-OneVision against transformers (tests/fixtures/README.md, "LLaVA-NeXT
//! and LLaVA-OneVision"): pixel values, input ids, newline positions and the packing of the
//! wide and the tall image; the packed image features; greedy ids and every attn.gen row of
//! `lvlmscope run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use lvlmscope::model::{LlavaNext, ModelDir, NoTape};
use lvlmscope::processing::anyres::{AnyresImageConfig, FeatureSource};
use lvlmscope::processing::{load_image, PromptProcessor};
use lvlmscope::session::{self, RegionKind};

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");
const MODELS: [&str; 2] = ["tiny-llava-next", "tiny-llava-onevision"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Fixture {
    model: LlavaNext,
    images: AnyresImageConfig,
    prompts: PromptProcessor,
    json: serde_json::Value,
    tensors: std::collections::HashMap<String, Tensor>,
}

fn fixture(name: &str) -> Fixture {
    let dir = ModelDir::resolve(&fixtures().join(name).display().to_string()).unwrap();
    let model = LlavaNext::load(&dir, candle_core::DType::F32, &Device::Cpu).unwrap();
    let images = AnyresImageConfig::from_dir(
        &dir.root,
        &model.config().image_grid_pinpoints,
        model.token_rule(),
    )
    .unwrap();
    let prompts = PromptProcessor::from_dir(&dir.root).unwrap();
    let reference = fixtures().join("reference");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference.join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let tensors =
        candle_core::safetensors::load(reference.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    Fixture {
        model,
        images,
        prompts,
        json,
        tensors,
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn processor_matches_transformers_on_wide_and_tall_images() {
    for name in MODELS {
        let f = fixture(name);
        for (which, file, prefix) in [
            ("wide", "image.png", ""),
            ("tall", "image_tall.png", "tall_"),
        ] {
            let j = &f.json[which];
            let img = load_image(&fixtures().join(file)).unwrap();
            let px = f.images.preprocess(&img).unwrap();
            let want = &f.tensors[&format!("{prefix}pixel_values")];
            assert_eq!(&px.shape[..], want.dims(), "{name} {which}");
            let d = max_diff(&px.data, &flat(want));
            assert!(d < 1e-5, "{name} {which}: pixel values differ by {d}");
            let layout = &px.layout;
            assert_eq!(
                layout.tiles_hw.to_vec(),
                ids(&j["tile_grid_hw"])
                    .iter()
                    .map(|&x| x as usize)
                    .collect::<Vec<_>>(),
                "{name} {which}"
            );
            assert_eq!(
                layout.grid.to_vec(),
                ids(&j["stitched_grid_hw"])
                    .iter()
                    .map(|&x| x as usize)
                    .collect::<Vec<_>>(),
                "{name} {which}"
            );
            let enc = f
                .prompts
                .encode("What is in the picture?", layout.num_tokens())
                .unwrap();
            assert_eq!(enc.ids, ids(&j["input_ids"]), "{name} {which}: input ids");
            let newlines: Vec<u32> = layout
                .newline_offsets()
                .iter()
                .map(|o| (enc.image_span[0] + o) as u32)
                .collect();
            assert_eq!(
                newlines,
                ids(&j["image_newline_positions"]),
                "{name} {which}"
            );
            // The layout's sources, as a dense [F, views·Pf] matrix, equal transformers' packing.
            let packing = &f.tensors[&format!("{prefix}packing")];
            let (rows, cols) = packing.dims2().unwrap();
            let mut dense = vec![0f32; rows * cols];
            let sources = layout.sources();
            assert_eq!(sources.len(), rows, "{name} {which}");
            for (r, s) in sources.iter().enumerate() {
                if let FeatureSource::Cells(cells) = s {
                    for &(c, w) in cells {
                        dense[r * cols + c] += w;
                    }
                }
            }
            let d = max_diff(&dense, &flat(packing));
            assert!(d < 1e-6, "{name} {which}: packing differs by {d}");
        }
    }
}

#[test]
fn image_features_match_transformers() {
    for name in MODELS {
        let f = fixture(name);
        let img = load_image(&fixtures().join("image.png")).unwrap();
        let px = f.images.preprocess(&img).unwrap();
        let pv = Tensor::from_vec(px.data.clone(), px.shape.to_vec(), &Device::Cpu).unwrap();
        let feats = f
            .model
            .image_features(&pv, &px.layout, &mut NoTape)
            .unwrap();
        let want = &f.tensors["image_features"];
        assert_eq!(feats.dims(), want.dims(), "{name}");
        // f32 against f32 transformers, features up to ~12 (next) and ~160 (onevision): 1e-5
        // relative to the largest (tests/family_parity.rs allows 5e-4 absolute).
        let want = flat(want);
        let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
        let d = max_diff(&flat(&feats), &want);
        eprintln!("{name}: image features max |diff| {d:e}, max |feature| {scale}");
        assert!(
            d < 1e-5 * scale,
            "{name}: image features differ by {d} (largest {scale})"
        );
    }
}

fn run(model: &str, image: &str, save: &Path) -> std::process::Output {
    Command::new(BIN)
        .args([
            "run",
            "--model",
            &fixtures().join(model).display().to_string(),
            "--image",
            &fixtures().join(image).display().to_string(),
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "8",
            "--f32-attention",
            "--save",
            &save.display().to_string(),
        ])
        .output()
        .expect("binary runs")
}

#[test]
fn run_gives_transformers_ids_and_attention_rows() {
    for name in MODELS {
        let f = fixture(name);
        let dir = tempfile::tempdir().unwrap();
        for (which, file) in [("wide", "image.png"), ("tall", "image_tall.png")] {
            let save = dir.path().join(format!("{which}.session"));
            let out = run(name, file, &save);
            assert!(
                out.status.success(),
                "{name} {which}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let s = session::load(&save).unwrap();
            let j = &f.json[which];
            let as_i64 =
                |v: &serde_json::Value| -> Vec<i64> { ids(v).into_iter().map(i64::from).collect() };
            assert_eq!(s.input_ids, as_i64(&j["input_ids"]), "{name} {which}");
            assert_eq!(s.output_ids, as_i64(&j["output_ids"]), "{name} {which}");
            // Two regions in input order: the base view's grid, then the stitched grid whose
            // newline tokens are separators.
            let regions = &s.manifest.regions;
            let kinds: Vec<RegionKind> = regions.iter().map(|r| r.kind).collect();
            assert_eq!(
                kinds,
                [RegionKind::Base, RegionKind::Highres],
                "{name} {which}"
            );
            let [start, len] = ids(&j["image_span"])[..] else {
                panic!("image_span")
            };
            assert_eq!(s.manifest.image_span, [start as usize, len as usize]);
            assert_eq!(regions[0].span, [start as usize, 16], "{name} {which}");
            let hi = &regions[1];
            let grid: Vec<usize> = ids(&j["stitched_grid_hw"])
                .iter()
                .map(|&x| x as usize)
                .collect();
            assert_eq!(hi.grid.to_vec(), grid, "{name} {which}");
            let newlines: Vec<usize> = ids(&j["image_newline_positions"])
                .iter()
                .map(|&x| x as usize)
                .collect();
            assert_eq!(hi.separators, newlines, "{name} {which}");
            assert_eq!(
                hi.span[0] + hi.span[1],
                (start + len) as usize,
                "{name} {which}"
            );
            let [w, h] = s.manifest.image.original_size.map(f64::from);
            let [x0, y0, x1, y1] = hi.rect;
            assert!(
                x0 > -2.0 && y0 > -2.0 && x1 < w + 2.0 && y1 < h + 2.0,
                "{:?}",
                hi.rect
            );
            if which == "tall" {
                continue;
            }
            // attn.gen row t = reference attention row N − 1 + t (zero past N + t).
            let gen = s.attn_gen.as_ref().expect("attn.gen recorded");
            let att = &f.tensors["attentions"];
            let [t_len, layers, heads, positions] = gen.shape[..] else {
                panic!("attn.gen shape {:?}", gen.shape)
            };
            let n = s.input_ids.len();
            let mut worst = 0f32;
            for t in 0..t_len {
                for l in 0..layers {
                    for h in 0..heads {
                        let row: Vec<f32> = att
                            .get(l)
                            .and_then(|a| a.get(h))
                            .and_then(|a| a.get(n - 1 + t))
                            .and_then(|a| a.to_vec1())
                            .unwrap();
                        let base = ((t * layers + l) * heads + h) * positions;
                        for (k, g) in gen.data[base..base + positions].iter().enumerate() {
                            let want = if k < n + t { row[k] } else { 0.0 };
                            worst = worst.max((g - want).abs());
                        }
                    }
                }
            }
            assert!(worst < 1e-5, "{name}: attn.gen differs by {worst}");
            let report = Command::new(BIN)
                .args(["report", &save.display().to_string(), "--json"])
                .output()
                .unwrap();
            assert!(
                report.status.success(),
                "{name}: report: {}",
                String::from_utf8_lossy(&report.stderr)
            );
        }
    }
}
