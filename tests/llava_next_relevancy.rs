//! LLaVA-NeXT / OneVision relevancy against the autograd references of
//! tools/anyres_relevancy.py: the decoder rows, and per view (base, then the tiles) the vision
//! row (CLIP's CLS row) and the combined row `u_view R_v,view`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lvlmscope::model::tracked::AnyresTrackedPass;
use lvlmscope::model::{LlavaNext, ModelDir};
use lvlmscope::processing::anyres::AnyresImageConfig;
use lvlmscope::processing::load_image;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn worst(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    (d, scale)
}

#[test]
fn relevancy_matches_autograd_per_view() {
    for name in ["tiny-llava-next", "tiny-llava-onevision"] {
        let dir = ModelDir::resolve(&fixtures().join(name).display().to_string()).unwrap();
        let model = LlavaNext::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let images = AnyresImageConfig::from_dir(
            &dir.root,
            &model.config().image_grid_pinpoints,
            model.token_rule(),
        )
        .unwrap();
        let reference = fixtures().join("reference");
        let r = candle_core::safetensors::load(
            reference.join(format!("{name}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let rel = candle_core::safetensors::load(
            reference.join(format!("{name}.relevancy.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let ids = |t: &Tensor| -> Vec<u32> {
            t.to_vec1::<i64>()
                .unwrap()
                .into_iter()
                .map(|i| i as u32)
                .collect()
        };
        let (input, output) = (ids(&r["input_ids"]), ids(&r["output_ids"]));
        let px = images
            .preprocess(&load_image(&fixtures().join("image.png")).unwrap())
            .unwrap();
        let pv = Tensor::from_vec(px.data.clone(), px.shape.to_vec(), &Device::Cpu).unwrap();
        let pass = AnyresTrackedPass::forward(&model, &input, &output, &pv, &px.layout).unwrap();
        let tokens: Vec<usize> = (0..output.len()).collect();
        let rows = pass.relevancy(&tokens, 4).unwrap();
        let llm_want: Vec<Vec<f32>> = rel["relevancy_llm"].to_vec2().unwrap();
        let comb_want: Vec<Vec<Vec<f32>>> = rel["relevancy_combined"].to_vec3().unwrap();
        let vit_want: Option<Vec<Vec<Vec<f32>>>> =
            rel.get("relevancy_vit").map(|t| t.to_vec3().unwrap());
        let (mut d_llm, mut d_comb, mut d_vit) = (0f32, 0f32, 0f32);
        for row in &rows {
            let t = row.token;
            let (d, s) = worst(&row.llm, &llm_want[t]);
            d_llm = d_llm.max(d / s.max(1.0));
            let skip = usize::from(row.class_token);
            for (v, comb) in row.combined.iter().enumerate() {
                let (d, s) = worst(&comb[skip..], &comb_want[t][v]);
                d_comb = d_comb.max(d / s.max(1.0));
                if let Some(vw) = &vit_want {
                    let (d, s) = worst(&row.vit[v][skip..], &vw[t][v]);
                    d_vit = d_vit.max(d / s.max(1.0));
                }
            }
        }
        eprintln!("{name}: llm {d_llm:e}, combined {d_comb:e}, vit {d_vit:e} (relative to max(1, largest))");
        assert!(d_llm < 1e-4, "{name}: relevancy.llm differs by {d_llm}");
        assert!(d_comb < 1e-4, "{name}: combined differs by {d_comb}");
        assert!(d_vit < 1e-4, "{name}: vit differs by {d_vit}");
    }
}

#[test]
fn run_with_relevancy_places_the_rows_on_both_regions() {
    let bin = env!("CARGO_BIN_EXE_lvlmscope");
    for name in ["tiny-llava-next", "tiny-llava-onevision"] {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("s.session");
        let out = std::process::Command::new(bin)
            .args([
                "run",
                "--model",
                &fixtures().join(name).display().to_string(),
                "--image",
                &fixtures().join("image.png").display().to_string(),
                "--prompt",
                "What is in the picture?",
                "--max-new-tokens",
                "8",
                "--relevancy",
                "--causal",
                "--save",
                &save.display().to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = lvlmscope::session::load(&save).unwrap();
        let rel = candle_core::safetensors::load(
            fixtures()
                .join("reference")
                .join(format!("{name}.relevancy.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let llm_want: Vec<Vec<f32>> = rel["relevancy_llm"].to_vec2().unwrap();
        let comb_want: Vec<Vec<Vec<f32>>> = rel["relevancy_combined"].to_vec3().unwrap();
        let r = candle_core::safetensors::load(
            fixtures()
                .join("reference")
                .join(format!("{name}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let packing: Vec<Vec<f32>> = r["packing"].to_vec2().unwrap();
        let llm = s.relevancy_llm.as_ref().expect("relevancy.llm stored");
        let comb = s.relevancy_combined.as_ref().expect("relevancy.combined");
        let (s_len, p) = (llm.shape[1], comb.shape[1]);
        let hi = &s.manifest.regions[1];
        assert_eq!(
            p,
            16 + hi.grid[0] * hi.grid[1],
            "{name}: base and stitched cells"
        );
        // The stitched cells' features, in order (newline rows of the packing left out).
        let hi_rows: Vec<&Vec<f32>> = packing[16..]
            .iter()
            .filter(|row| row.iter().any(|&x| x != 0.0))
            .collect();
        assert_eq!(hi_rows.len(), hi.grid[0] * hi.grid[1]);
        for t in 0..s.num_output() {
            let (d, sc) = worst(&llm.data[t * s_len..(t + 1) * s_len], &llm_want[t]);
            assert!(d < 1e-4 * sc.max(1.0), "{name} token {t}: llm {d}");
            let row = &comb.data[t * p..(t + 1) * p];
            let (d, sc) = worst(&row[..16], &comb_want[t][0]);
            assert!(
                d < 1e-4 * sc.max(1.0),
                "{name} token {t}: base combined {d}"
            );
            // A stitched cell holds its tile patch's value (pooled: mixed by the packing).
            let flat: Vec<f32> = comb_want[t].concat();
            let want: Vec<f32> = hi_rows
                .iter()
                .map(|pk| pk.iter().zip(&flat).map(|(a, b)| a * b).sum())
                .collect();
            let (d, sc) = worst(&row[16..], &want);
            assert!(
                d < 1e-4 * sc.max(1.0),
                "{name} token {t}: stitched combined {d}"
            );
        }
        assert!(s.manifest.causal.is_some(), "{name}: causal results");
    }
}
