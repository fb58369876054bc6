//! Vision-tower attention of LLaVA-NeXT / OneVision runs (docs/design.md, "Session file" and
//! "The catalogue"): the per-view rows a run stores equal transformers' eager
//! `output_attentions` of the tower (tests/fixtures/reference, `vision_attentions`: CLIP's
//! class-token row, SigLIP's attention received), their placement is transformers' feature
//! packing, the catalogue's `attention.vision.*` map has every region's grid with a tile's
//! patch on the cell unpad puts it, and the loader refuses files whose tensors lie.

mod fixture_support;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use fixture_support::{fixtures, max_diff, reference};
use lvlmscope::explain::catalogue::{explain, MapId};
use lvlmscope::generate::RunRequest;
use lvlmscope::session::{self, AttentionDtype, Session, VisionAttention, VisionRow, VisionViews};

const MODELS: [(&str, VisionRow); 2] = [
    ("tiny-llava-next", VisionRow::Class),
    ("tiny-llava-onevision", VisionRow::Received),
];

fn run(model: &str, image: &str) -> Session {
    let request = RunRequest {
        model: fixtures().join(model).display().to_string(),
        image: fixtures().join(image),
        prompt: "What is in the picture?".into(),
        max_new_tokens: 2,
        ..RunRequest::default()
    };
    lvlmscope::job::run(&request, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

fn views(s: &Session) -> &VisionViews {
    match s.attn_vit.as_ref() {
        Some(VisionAttention::Views(v)) => v,
        other => panic!("no per-view vision attention: {other:?}"),
    }
}

/// transformers' row of `[Lall, V, H, n, n]` at (layer, view, head), as `row` reads it.
fn reference_row(all: &[f32], dims: &[usize], at: [usize; 3], row: VisionRow) -> Vec<f32> {
    let [_, v, h, n, _] = dims[..] else {
        panic!("vision_attentions is not 5-D")
    };
    let [l, view, head] = at;
    let start = (((l * v + view) * h) + head) * n * n;
    let m = &all[start..start + n * n];
    match row {
        VisionRow::Class => m[1..n].to_vec(),
        VisionRow::Received => (0..n)
            .map(|j| (0..n).map(|i| m[i * n + j]).sum::<f32>() / n as f32)
            .collect(),
    }
}

#[test]
fn run_stores_the_rows_of_transformers_tower_per_view() {
    for (model, row) in MODELS {
        let s = run(model, "image.png");
        let info = s
            .manifest
            .vision_attention
            .expect("described in the manifest");
        assert_eq!((info.row, info.views), (row, 5), "{model}");
        let v = views(&s);
        assert_eq!(v.row, row);
        let r = reference(&format!("{model}.safetensors"));
        let want = &r["vision_attentions"];
        let dims = want.dims().to_vec();
        let all: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        let mut worst = 0f32;
        for (k, a) in v.views.iter().enumerate() {
            let [layers, heads, p] = a.shape[..] else {
                panic!("{model}: view {k} is not [Lv, Hv, P]")
            };
            assert_eq!((layers, heads, p), (2, 4, 16), "{model} view {k}");
            for l in 0..layers {
                for h in 0..heads {
                    let want = reference_row(&all, &dims, [l, k, h], row);
                    worst = worst.max(max_diff(a.row(&[l, h]), &want));
                }
            }
        }
        eprintln!("{model}: per-view vision rows within {worst:.2e} of transformers");
        assert!(worst <= 1e-5, "{model}: {worst}");

        // Saved in F32 it reads back exactly; in F16 (the default) within half precision.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        session::save(&s, &path, AttentionDtype::F32).unwrap();
        assert_eq!(session::load(&path).unwrap(), s);
        session::save(&s, &path, AttentionDtype::F16).unwrap();
        let back = session::load(&path).unwrap();
        assert_eq!(views(&back).placement, v.placement);
        assert!(max_diff(&views(&back).views[3].data, &v.views[3].data) < 1e-3);
    }
}

#[test]
fn placement_is_transformers_feature_packing() {
    for (model, _) in MODELS {
        let s = run(model, "image.png");
        let p = &views(&s).placement;
        let r = reference(&format!("{model}.safetensors"));
        let packing: Vec<Vec<f32>> = r["packing"].to_vec2().unwrap();
        // The packing's newline rows are zero; the others are the cells in input order.
        let cells: Vec<&Vec<f32>> = packing
            .iter()
            .filter(|row| row.iter().any(|&w| w != 0.0))
            .collect();
        assert_eq!(cells.len(), p.cells(), "{model}");
        for (c, want) in cells.iter().enumerate() {
            let mut got = vec![0f32; want.len()];
            for k in 0..p.taps {
                got[p.source[c * p.taps + k]] += p.weight[c * p.taps + k];
            }
            assert!(max_diff(&got, want) <= 1e-6, "{model}: cell {c}");
        }
    }
}

#[test]
fn catalogue_map_covers_every_region_grid() {
    for (model, _) in MODELS {
        for image in ["image.png", "image_tall.png"] {
            let s = run(model, image);
            let id: MapId = "attention.vision.last.mean".parse().unwrap();
            let e = explain(&s, &[0], &id).unwrap();
            let regions = s.regions();
            assert_eq!(e.regions.len(), regions.len());
            for (m, r) in e.regions.iter().zip(regions.iter()) {
                assert_eq!([m.grid.rows, m.grid.cols], r.grid, "{model} {image}");
                assert_eq!(m.grid.values.len(), r.cells());
                assert_eq!(m.rect, r.rect);
            }
            // The base cells are the base view's last-layer rows, heads averaged.
            let base = &views(&s).views[0];
            let [layers, heads, p] = base.shape[..] else {
                panic!()
            };
            for j in 0..p {
                let want: f32 = (0..heads)
                    .map(|h| base.get(&[layers - 1, h, j]))
                    .sum::<f32>()
                    / heads as f32;
                assert!((e.regions[0].grid.values[j] - want).abs() < 1e-6);
            }
            for bad in ["attention.vision.l2.mean", "attention.vision.last.h4"] {
                let err = explain(&s, &[0], &bad.parse().unwrap()).unwrap_err();
                assert!(err.to_string().contains("vision"), "{err}");
            }
        }
    }
}

#[test]
fn a_tile_patch_lands_on_the_cell_unpad_gives_it() {
    // tiny-llava-next, the 48x36 image: a 2x2-tile 64x64 canvas of 8x8 patches (4x4 a tile),
    // unpadded to 6x8 by dropping one row top and bottom. Tile 2 (top right) patch (2, 1) is
    // canvas cell (2, 4 + 1) and so high-resolution cell (1, 5).
    let mut s = run("tiny-llava-next", "image.png");
    let Some(VisionAttention::Views(v)) = s.attn_vit.as_mut() else {
        panic!("no per-view vision attention")
    };
    for a in v.views.iter_mut() {
        a.data.fill(0.0);
    }
    let view = &mut v.views[2];
    let last = view.shape[0] - 1;
    let heads = view.shape[1];
    for h in 0..heads {
        view.row_mut(&[last, h])[2 * 4 + 1] = 1.0;
    }
    let e = explain(&s, &[0], &"attention.vision.last.mean".parse().unwrap()).unwrap();
    assert!(e.regions[0].grid.values.iter().all(|&x| x == 0.0));
    let hi = &e.regions[1].grid;
    assert_eq!([hi.rows, hi.cols], [6, 8]);
    for r in 0..6 {
        for c in 0..8 {
            let want = if (r, c) == (1, 5) { 1.0 } else { 0.0 };
            assert_eq!(hi.values[r * 8 + c], want, "cell ({r}, {c})");
        }
    }
}

#[test]
fn loader_refuses_vision_attention_that_lies() {
    let s = run("tiny-llava-onevision", "image.png");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    let refused = |bad: &Session, says: &str| {
        session::save(bad, &path, AttentionDtype::F32).unwrap();
        let e = session::load(&path).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    };
    let mut more = s.clone();
    more.manifest.vision_attention.as_mut().unwrap().views = 1 << 40;
    refused(&more, "views of vision attention");
    let mut undescribed = s.clone();
    undescribed.manifest.vision_attention = None;
    refused(&undescribed, "does not describe");
    let mut outside = s.clone();
    if let Some(VisionAttention::Views(v)) = outside.attn_vit.as_mut() {
        v.placement.source[0] = 5 * 16;
    }
    refused(&outside, "attn.vit.source names row 80");
    let mut heads = s.clone();
    if let Some(VisionAttention::Views(v)) = heads.attn_vit.as_mut() {
        v.views[1].shape = vec![2, 2, 32];
    }
    refused(&heads, "attn.vit.v1");
    assert!(Path::new(&path).exists());
}

#[test]
fn the_app_shows_the_vision_map_with_v() {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use lvlmscope::style::{ColorMode, Look, Theme};
    use lvlmscope::tui::{update, App, Msg};
    let s = run("tiny-llava-onevision", "image.png");
    let want = explain(&s, &[0], &"attention.vision.last.mean".parse().unwrap()).unwrap();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, s, None);
    let decoder = app.map_id();
    let v = || Msg::Key(KeyEvent::new(KeyCode::Char('V'), KeyModifiers::NONE));
    update(&mut app, v());
    assert_eq!(app.map_id().to_string(), "attention.vision.last.mean");
    // The app opens on the high-resolution region: its map is the catalogue's there.
    let shown = app.doc.view.map.as_ref().expect("a map is shown");
    assert_eq!(shown.values, want.regions[1].grid.values);
    update(&mut app, v());
    assert_eq!(app.map_id(), decoder);
}

#[test]
fn report_gives_the_vision_map_per_region() {
    let s = run("tiny-llava-next", "image_tall.png");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.safetensors");
    session::save(&s, &file, AttentionDtype::F32).unwrap();
    let want = explain(&s, &[0], &"attention.vision.l1.h2".parse().unwrap()).unwrap();
    for (index, region) in ["base", "highres"].into_iter().enumerate() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
            .arg("report")
            .arg(&file)
            .args([
                "--method",
                "attention.vision.l1.h2",
                "--json",
                "--region",
                region,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["map_id"], "attention.vision.l1.h2");
        let grid = &want.regions[index].grid;
        fixture_support::assert_report_map(&j, grid, region);
    }
}
