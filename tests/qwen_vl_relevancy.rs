//! Qwen2-VL / Qwen2.5-VL relevancy against PyTorch autograd (`tools/qwen_vl_relevancy.py`):
//! decoder rows, the vision relevancy matrix R_v through the (window) attention and the 2D
//! rotary embedding, and the combined u R_v, for every output token.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lvlmscope::model::tracked::QwenTrackedPass;
use lvlmscope::model::{ModelDir, QwenVl};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference").join(file), &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

fn worst(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn relevancy_equals_autograd() {
    for name in ["tiny-qwen2-vl", "tiny-qwen2_5-vl"] {
        let dir = ModelDir::resolve(fixtures().join(name).to_str().unwrap()).unwrap();
        let model = QwenVl::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let r = load(&format!("{name}.safetensors"));
        let rel = load(&format!("{name}.relevancy.safetensors"));
        let grid = ids(&r["image_grid_thw"]);
        let grid = [grid[0] as usize, grid[1] as usize, grid[2] as usize];
        let input = ids(&r["input_ids"]);
        let output = ids(&r["output_ids"]);
        let pass =
            QwenTrackedPass::forward(&model, &input, &output, &r["pixel_values"], grid).unwrap();
        let d = (pass.logits().unwrap()
            - r["logits"]
                .narrow(0, input.len() - 1, output.len())
                .unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        assert!(d < 1e-4, "{name}: tracked logits differ by {d}");
        let tokens: Vec<usize> = (0..output.len()).collect();
        let rows = pass.relevancy(&tokens, 3).unwrap();
        let llm = rel["relevancy_llm"].to_vec2::<f32>().unwrap();
        let combined = rel["relevancy_combined"].to_vec2::<f32>().unwrap();
        let matrix = rel["relevancy_vit_matrix"].to_vec3::<f32>().unwrap();
        let mut most = [0f32; 3];
        for row in &rows {
            let t = row.token;
            let d = worst(&row.llm, &llm[t]);
            assert!(d < 1e-4, "{name} token {t}: llm differs by {d}");
            let d = worst(&row.combined, &combined[t]);
            assert!(d < 1e-4, "{name} token {t}: combined differs by {d}");
            let p = matrix[t].len();
            let mean: Vec<f32> = (0..p)
                .map(|j| matrix[t].iter().map(|q| q[j]).sum::<f32>() / p as f32)
                .collect();
            let d = worst(&row.vit, &mean);
            assert!(d < 1e-4, "{name} token {t}: vit differs by {d}");
            most[0] = most[0].max(worst(&row.llm, &llm[t]));
            most[1] = most[1].max(worst(&row.combined, &combined[t]));
            most[2] = most[2].max(d);
        }
        eprintln!(
            "{name}: max |diff| llm {:.1e}, combined {:.1e}, vit {:.1e}",
            most[0], most[1], most[2]
        );
        for t in [0, output.len() - 1] {
            let got = pass.vision_matrix(t).unwrap().to_vec2::<f32>().unwrap();
            let d = got
                .iter()
                .zip(&matrix[t])
                .map(|(a, b)| worst(a, b))
                .fold(0.0, f32::max);
            assert!(d < 2e-4, "{name} token {t}: R_v differs by {d}");
        }
    }
}
