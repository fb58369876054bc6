//! Vision-tower attention of one-view runs (docs/design.md, "Session file" and "The
//! catalogue"): LLaVA-style runs (CLIP with strategy default and full, SigLIP) and Qwen2-VL /
//! Qwen2.5-VL runs store one view whose rows equal transformers' eager `output_attentions` of
//! the tower (tests/fixtures/reference, `vision_attentions`): CLIP's class-token row, and
//! otherwise the attention each patch receives, averaged over the query patches that can see
//! it (Qwen2.5-VL's window layers: its window). The catalogue's `attention.vision.*` map puts a
//! patch on its cell, and a Qwen merged cell on the mean of its four patches; `report --method`
//! gives it from a saved file, as text and as JSON.

mod cli_support;
mod fixture_support;

use std::collections::HashMap;

use candle_core::Tensor;
use fixture_support::{fixture_run, fixtures, ids, max_diff, reference};
use lvlmscope::explain::catalogue::explain;
use lvlmscope::session::{self, AttentionDtype, Session, VisionAttention, VisionRow, VisionViews};

/// Fixture, the row it keeps and the tower's patches.
const MODELS: [(&str, VisionRow, usize); 7] = [
    ("tiny-llava-gqa", VisionRow::Class, 16),
    ("tiny-llava-full", VisionRow::Class, 16),
    ("tiny-llava-gemma", VisionRow::Class, 16),
    ("tiny-llava-mistral", VisionRow::Class, 16),
    ("tiny-llava-qwen2-siglip", VisionRow::Received, 16),
    ("tiny-qwen2-vl", VisionRow::Received, 48),
    ("tiny-qwen2_5-vl", VisionRow::Received, 48),
];

fn views(s: &Session) -> &VisionViews {
    match s.attn_vit.as_ref() {
        Some(VisionAttention::Views(v)) => v,
        other => panic!("no per-view vision attention: {other:?}"),
    }
}

/// The query patches (processor order) that see each patch in every vision block of
/// transformers' run of `model`: Qwen2.5-VL's window blocks run window by window
/// (`vision_chunk_sizes_per_block`, over the window order `vision_patch_permutation` gives);
/// every other block, and every other tower, sees the whole image.
fn windows(model: &str, r: &HashMap<String, Tensor>, blocks: usize, n: usize) -> Vec<Vec<usize>> {
    let path = fixtures().join("reference").join(format!("{model}.json"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let whole = || vec![0; n];
    let Some(chunks) = meta["vision_chunk_sizes_per_block"].as_array() else {
        return vec![whole(); blocks];
    };
    let perm: Vec<usize> = match r.get("vision_patch_permutation") {
        Some(t) => ids(t).into_iter().map(|i| i as usize).collect(),
        None => (0..n).collect(),
    };
    chunks
        .iter()
        .map(|sizes| {
            let mut window = whole();
            let mut at = 0;
            for (w, size) in sizes.as_array().unwrap().iter().enumerate() {
                let size = size.as_u64().unwrap() as usize;
                for &patch in &perm[at..at + size] {
                    window[patch] = w;
                }
                at += size;
            }
            window
        })
        .collect()
}

/// transformers' `[n, n]` matrix `m` read as `row`: the class token's row over the patches, or
/// each column's mean over the query rows in the patch's window (`window`).
fn reference_row(m: &[f32], n: usize, row: VisionRow, window: &[usize]) -> Vec<f32> {
    match row {
        VisionRow::Class => m[1..n].to_vec(),
        VisionRow::Received => (0..n)
            .map(|j| {
                let seers: Vec<usize> = (0..n).filter(|&i| window[i] == window[j]).collect();
                seers.iter().map(|&i| m[i * n + j]).sum::<f32>() / seers.len() as f32
            })
            .collect(),
    }
}

#[test]
fn one_view_runs_store_the_rows_of_transformers_tower() {
    for (model, row, patches) in MODELS {
        let s = fixture_run(model, "image.png", 2);
        let info = s
            .manifest
            .vision_attention
            .expect("described in the manifest");
        assert_eq!((info.row, info.views), (row, 1), "{model}");
        let v = views(&s);
        let view = &v.views[0];
        let [layers, heads, p] = view.shape[..] else {
            panic!("{model}: the view is not [Lv, Hv, P]")
        };
        assert_eq!(p, patches, "{model}");
        assert_eq!(heads, s.manifest.model.vision_heads, "{model}");
        let r = reference(&format!("{model}.safetensors"));
        let want = &r["vision_attentions"];
        let [all, h_ref, n, _] = want.dims()[..] else {
            panic!("{model}: vision_attentions is not 4-D")
        };
        // Only the layers that feed the projector run (LLaVA's feature layer −2 stops early).
        assert!(layers >= 1 && layers <= all && h_ref == heads, "{model}");
        let all: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        let windows = windows(model, &r, layers, n);
        assert!(windows.len() >= layers, "{model}");
        let mut worst = 0f32;
        for (l, window) in windows.iter().enumerate().take(layers) {
            for h in 0..heads {
                let start = (l * heads + h) * n * n;
                let want = reference_row(&all[start..start + n * n], n, row, window);
                worst = worst.max(max_diff(view.row(&[l, h]), &want));
            }
        }
        eprintln!("{model}: vision rows within {worst:.2e} of transformers ({layers} layers)");
        assert!(worst <= 1e-5, "{model}: {worst}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        session::save(&s, &path, AttentionDtype::F32).unwrap();
        assert_eq!(session::load(&path).unwrap(), s, "{model}");
    }
}

#[test]
fn the_catalogue_places_patches_on_cells() {
    for (model, _, patches) in MODELS {
        let s = fixture_run(model, "image.png", 1);
        let region = &s.regions()[0];
        let group = patches / region.cells();
        assert_eq!(
            group,
            if model.contains("qwen2") && model.contains("-vl") {
                4
            } else {
                1
            }
        );
        let view = &views(&s).views[0];
        let layers = view.shape[0];
        for l in [0, layers - 1] {
            for h in [0, view.shape[1] - 1] {
                let id = format!("attention.vision.l{l}.h{h}").parse().unwrap();
                let e = explain(&s, &[0], &id).unwrap();
                let grid = &e.regions[0].grid;
                assert_eq!([grid.rows, grid.cols], region.grid, "{model}");
                let row = view.row(&[l, h]);
                let want: Vec<f32> = row
                    .chunks(group)
                    .map(|c| c.iter().sum::<f32>() / group as f32)
                    .collect();
                assert!(max_diff(&grid.values, &want) < 1e-6, "{model} l{l} h{h}");
                assert!(e.title.contains(&format!("layer {l}")), "{}", e.title);
            }
        }
        let last: lvlmscope::explain::catalogue::MapId =
            "attention.vision.last.mean".parse().unwrap();
        assert_eq!(explain(&s, &[0], &last).unwrap().layer, Some(layers - 1));
        let beyond = format!("attention.vision.l{layers}.mean").parse().unwrap();
        let err = explain(&s, &[0], &beyond).unwrap_err().to_string();
        assert!(err.contains("vision"), "{model}: {err}");
    }
}

#[test]
fn window_layers_average_over_the_window() {
    // tiny-qwen2_5-vl's blocks 0 and 2 attend within windows of 2×2 merged cells, block 1 over
    // the whole image. A window's query rows each sum to 1 over the window, so the mean over
    // the rows that see a patch sums to 1 over a window: the number of windows over the image
    // in a window layer, 1 in the full layer (the plain column mean). The 3×4 merged grid of
    // image.png has 4 windows (16, 16, 8 and 8 patches), the 6×3 of image_tall.png 6.
    for (image, windows) in [("image.png", 4.0), ("image_tall.png", 6.0)] {
        let s = fixture_run("tiny-qwen2_5-vl", image, 1);
        let view = &views(&s).views[0];
        for l in 0..view.shape[0] {
            for h in 0..view.shape[1] {
                let total: f32 = view.row(&[l, h]).iter().sum();
                let want = if l == 1 { 1.0 } else { windows };
                assert!((total - want).abs() < 1e-4, "{image} l{l} h{h}: {total}");
            }
        }
    }
}

#[test]
fn report_gives_the_vision_map_of_a_saved_run() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["tiny-llava-full", "tiny-qwen2-vl"] {
        let file = cli_support::make_session(dir.path(), model);
        let s = session::load(&file).unwrap();
        let method = "attention.vision.l1.h2";
        let want = explain(&s, &[0], &method.parse().unwrap()).unwrap();
        let out = cli_support::on_session(&["report", "--method", method, "--json"], &file);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["map_id"], method, "{model}");
        let grid = &want.regions[0].grid;
        fixture_support::assert_report_map(&j, grid, model);

        let out =
            cli_support::on_session(&["report", "--method", "attention.vision.last.max"], &file);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("vision attention · layer 1 · max of heads"),
            "{model}: {text}"
        );
        let beyond =
            cli_support::on_session(&["report", "--method", "attention.vision.l9.mean"], &file);
        assert!(!beyond.status.success(), "{model}");
        let err = String::from_utf8_lossy(&beyond.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{model}: {err}");
        assert!(err.contains("vision"), "{model}: {err}");
    }
}
