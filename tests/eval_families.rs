//! `lvlmscope eval` on the tiny LLaVA-NeXT, OneVision and Qwen2-VL fixtures: the scenes go
//! through each pipeline's own processor, the numbers are scored on the right region (the
//! high-resolution grid of an anyres model by default, `--region base` on request, the merged
//! grid of Qwen2-VL) with the grids a `run` of the same picture has, two runs write the same
//! JSON, and each deletion curve starts at the probability a plain forward of the generation
//! path gives the first answer token. `eval --heads` scores the heads' maps on that region,
//! `eval --sanity` randomises each pipeline's decoder, and a region a model lacks fails in one
//! sentence.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use candle_core::Tensor;
use cli_support::{assert_clear_failure, fixtures, lvlmscope};
use lvlmscope::demo::{self, scene_seed, SceneConfig};
use lvlmscope::eval::pick_question;
use lvlmscope::explain::faithfulness::{fraction_ks, softmax_at};
use lvlmscope::generate::{Capture, RunRequest};
use lvlmscope::job::{ModelSpec, SessionModel};
use lvlmscope::model::{DeviceName, NoTape};
use lvlmscope::session::Session;
use serde_json::Value;

const SEED: u64 = 2;
const SCENES: usize = 3;
const STEPS: usize = 4;

fn model_dir(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// `eval --model NAME --scenes 3 --steps 4 --json` (plus `extra`): the JSON text.
fn eval_json(dir: &Path, name: &str, file: &str, extra: &[&str]) -> String {
    let json = dir.join(file);
    let model = model_dir(name);
    let scenes = SCENES.to_string();
    let steps = STEPS.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args(["eval", "--model", model.to_str().unwrap()])
        .args(["--scenes", &scenes, "--steps", &steps, "--seed", "2"])
        .args(["--json", json.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eval on {name} failed: {stderr}");
    std::fs::read_to_string(json).expect("the JSON file is written")
}

fn load(name: &str) -> SessionModel {
    let spec = ModelSpec {
        path: model_dir(name).display().to_string(),
        dtype: candle_core::DType::F32,
        device: DeviceName::Cpu,
    };
    SessionModel::load(&spec, &candle_core::Device::Cpu).unwrap()
}

/// Scene `index` of the run: its picture and question.
fn scene(index: usize) -> (image::RgbImage, String) {
    let config = SceneConfig::default();
    let seed = scene_seed(SEED, index as u64);
    let scene = demo::generate(seed, &config);
    let question = pick_question(&scene, index, seed, &config).expect("a scored scene");
    (scene.image, question.question)
}

/// `lvlmscope run`'s session of `name` on scene `index`'s picture written to a PNG file.
fn run_session(dir: &Path, name: &str, index: usize) -> Session {
    let (picture, prompt) = scene(index);
    let path = dir.join(format!("{name}-scene{index}.png"));
    picture.save(&path).unwrap();
    let request = RunRequest {
        model: model_dir(name).display().to_string(),
        image: path,
        prompt,
        max_new_tokens: 1,
        ..RunRequest::default()
    };
    lvlmscope::job::run(&request, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

/// The probability of `session`'s first answer token after one forward of the generation
/// path (the processor on `image`, the image features, the prompt embedded with them).
fn first_token_probability(model: &SessionModel, image: &image::DynamicImage, s: &Session) -> f32 {
    let ids: Vec<u32> = s.input_ids.iter().map(|&i| i as u32).collect();
    let logits = match model {
        SessionModel::Anyres(m) => {
            let llava = m.model.llava();
            let px = m.images.preprocess(image).unwrap();
            let pv = Tensor::from_vec(px.data.clone(), px.shape.to_vec(), llava.device()).unwrap();
            let features = m
                .model
                .image_features(&pv, &px.layout, &mut NoTape)
                .unwrap();
            let embeds = llava.embed(&ids, Some(&features)).unwrap();
            llava
                .forward(&embeds, 0, &mut llava.new_cache(), &mut NoTape, false)
                .unwrap()
        }
        SessionModel::Qwen(m) => {
            let px = m.images.preprocess(image).unwrap();
            let pv = Tensor::from_vec(
                px.data.clone(),
                (px.num_patches, px.patch_len),
                m.model.device(),
            )
            .unwrap();
            let features = m
                .model
                .image_features(&pv, px.grid_thw, &mut NoTape)
                .unwrap()
                .features;
            let pos = m
                .model
                .positions(&ids, &[px.merged_grid(m.images.merge_size)])
                .unwrap();
            let embeds = m.model.embed(&ids, Some(&features)).unwrap();
            let mut cache = m.model.new_cache();
            m.model
                .forward(&embeds, 0, &pos, &mut cache, &mut NoTape, false)
                .unwrap()
        }
        SessionModel::Llava(_) => panic!("the LLaVA path is checked in eval_faithfulness"),
    };
    let row: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    softmax_at(&row, s.output_ids[0] as usize)
}

fn grid_of(v: &Value) -> [usize; 2] {
    [
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    ]
}

#[test]
fn eval_scores_the_region_grids_a_run_has_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, scored, grids) in [
        (
            "tiny-llava-next",
            "highres",
            vec![("base", [4, 4]), ("highres", [8, 8])],
        ),
        (
            "tiny-llava-onevision",
            "highres",
            vec![("base", [4, 4]), ("highres", [4, 4])],
        ),
        ("tiny-qwen2-vl", "image", vec![("image", [4, 4])]),
        ("tiny-qwen2_5-vl", "image", vec![("image", [4, 4])]),
    ] {
        let first = eval_json(tmp.path(), name, "a.json", &[]);
        let second = eval_json(tmp.path(), name, "b.json", &[]);
        assert_eq!(first, second, "{name}: two runs with one seed differ");
        let v: Value = serde_json::from_str(&first).unwrap();
        let p = &v["parameters"];

        // The regions and grids are those of a `run` on the same picture read from a file.
        let session = run_session(tmp.path(), name, 0);
        let run_grids: Vec<(&str, [usize; 2])> = session
            .regions()
            .iter()
            .map(|r| (r.kind.name(), r.grid))
            .collect();
        assert_eq!(run_grids, grids, "{name}: the run's regions");
        let json_grids: Vec<(&str, [usize; 2])> = p["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["region"].as_str().unwrap(), grid_of(&r["grid"])))
            .collect();
        assert_eq!(json_grids, grids, "{name}: the JSON's regions");
        assert_eq!(p["region"], scored, "{name}");
        let grid = grids.iter().find(|(k, _)| *k == scored).unwrap().1;
        assert_eq!(grid_of(&p["image_grid"]), grid, "{name}");
        let ks: Vec<usize> = p["ks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(ks, fraction_ks(grid[0] * grid[1], STEPS), "{name}");

        let scenes = v["scenes"].as_array().unwrap();
        assert_eq!(scenes.len(), SCENES, "{name}: every scene has a question");
        for s in scenes {
            for m in s["methods"].as_array().unwrap() {
                assert_eq!(m["deletion"].as_array().unwrap().len(), ks.len());
                let regions = m.get("regions").and_then(Value::as_array);
                if grids.len() == 1 {
                    assert!(regions.is_none(), "{name}: one region, no breakdown");
                    continue;
                }
                let regions = regions.expect("a breakdown per region");
                let kinds: Vec<&str> = regions
                    .iter()
                    .map(|r| r["region"].as_str().unwrap())
                    .collect();
                assert_eq!(kinds, ["base", "highres"], "{name}");
                // The scored region's entry is the method's own pointing and mass.
                assert_eq!(regions[1]["pointing"], m["pointing"], "{name}");
                assert_eq!(regions[1]["mass_in_mask"], m["mass_in_mask"], "{name}");
            }
        }
        for m in v["methods"].as_array().unwrap() {
            let n = m.get("regions").map_or(0, |r| r.as_array().unwrap().len());
            assert_eq!(n, if grids.len() == 1 { 0 } else { 2 }, "{name}");
        }
    }
}

#[test]
fn nothing_deleted_is_the_probability_of_the_generation_path() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["tiny-llava-next", "tiny-llava-onevision", "tiny-qwen2-vl"] {
        let v: Value = serde_json::from_str(&eval_json(tmp.path(), name, "e.json", &[])).unwrap();
        let model = load(name);
        for s in v["scenes"].as_array().unwrap() {
            let index = s["index"].as_u64().unwrap() as usize;
            let (picture, prompt) = scene(index);
            assert_eq!(s["question"], prompt.as_str());
            let image = image::DynamicImage::ImageRgb8(picture);
            let request = RunRequest {
                model: model.name().to_string(),
                image: "scene".into(),
                prompt,
                max_new_tokens: 1,
                capture: Capture::Off,
                ..RunRequest::default()
            };
            let session = model
                .generate(&image, &request, &AtomicBool::new(false), &mut |_| {})
                .unwrap();
            let expected = first_token_probability(&model, &image, &session);
            let methods = s["methods"].as_array().unwrap();
            for m in methods {
                let curve = m["deletion"].as_array().unwrap();
                let k0 = curve[0].as_f64().unwrap() as f32;
                assert!(
                    (k0 - expected).abs() <= 1e-5,
                    "{name} scene {index} {}: p with nothing deleted {k0}, the forward's {expected}",
                    m["method"]
                );
            }
            // Deleting the whole scored region changes the probability.
            let last = methods[0]["deletion"].as_array().unwrap().last().unwrap();
            assert_ne!(
                last.as_f64().unwrap() as f32,
                expected,
                "{name} scene {index}"
            );
        }
    }
}

#[test]
fn region_base_scores_the_base_view_of_an_anyres_model() {
    let tmp = tempfile::tempdir().unwrap();
    let name = "tiny-llava-next";
    let v: Value = serde_json::from_str(&eval_json(
        tmp.path(),
        name,
        "base.json",
        &["--region", "base"],
    ))
    .unwrap();
    let p = &v["parameters"];
    assert_eq!(p["region"], "base");
    assert_eq!(grid_of(&p["image_grid"]), [4, 4]);
    let ks: Vec<u64> = p["ks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_u64().unwrap())
        .collect();
    assert_eq!(ks, [0, 4, 8, 12, 16]);
    for s in v["scenes"].as_array().unwrap() {
        for m in s["methods"].as_array().unwrap() {
            let base = &m["regions"][0];
            assert_eq!(base["region"], "base");
            assert_eq!(base["pointing"], m["pointing"]);
            assert_eq!(base["mass_in_mask"], m["mass_in_mask"]);
        }
    }
}

#[test]
fn modes_and_regions_a_model_lacks_fail_in_one_sentence() {
    let qwen = model_dir("tiny-qwen2-vl");
    let next = model_dir("tiny-llava-next");
    let (q, n) = (qwen.to_str().unwrap(), next.to_str().unwrap());
    assert_clear_failure(
        lvlmscope(&["eval", "--model", q, "--scenes", "2", "--region", "base"]),
        "no such image region",
    );
    assert_clear_failure(
        lvlmscope(&["eval", "--model", n, "--scenes", "2", "--steps", "65"]),
        "--steps must be between 1 and the number of patches (64)",
    );
    assert_clear_failure(
        lvlmscope(&[
            "eval", "--sanity", "--model", q, "--scenes", "2", "--region", "highres",
        ]),
        "no such image region",
    );
}

#[test]
fn randomising_no_layer_keeps_the_model_and_every_layer_changes_it() {
    for name in ["tiny-llava-next", "tiny-qwen2-vl"] {
        let model = load(name);
        let (layers, _) = model.decoder_shape();
        let (picture, prompt) = scene(0);
        let image = image::DynamicImage::ImageRgb8(picture);
        let request = RunRequest {
            model: model.name().to_string(),
            image: "scene".into(),
            prompt,
            max_new_tokens: 1,
            capture: Capture::Off,
            ..RunRequest::default()
        };
        let session = model
            .generate(&image, &request, &AtomicBool::new(false), &mut |_| {})
            .unwrap();
        let trained = first_token_probability(&model, &image, &session);
        let none = model.load_randomized(layers..layers, 7).unwrap();
        assert_eq!(
            first_token_probability(&none, &image, &session),
            trained,
            "{name}"
        );
        let all = model.load_randomized(0..layers, 7).unwrap();
        let p = first_token_probability(&all, &image, &session);
        assert!((p - trained).abs() > 1e-4, "{name}: {p} vs {trained}");
        let again = model.load_randomized(0..layers, 7).unwrap();
        assert_eq!(
            first_token_probability(&again, &image, &session),
            p,
            "{name}: seeded"
        );
    }
}

#[test]
fn the_sanity_check_runs_on_anyres_and_qwen_models() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, region) in [
        ("tiny-llava-onevision", "highres"),
        ("tiny-qwen2-vl", "image"),
    ] {
        let run = |file: &str| {
            let json = tmp.path().join(file);
            let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
                .args([
                    "eval",
                    "--sanity",
                    "--model",
                    model_dir(name).to_str().unwrap(),
                ])
                .args(["--scenes", "3", "--json", json.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::read_to_string(json).unwrap()
        };
        let first = run("s1.json");
        assert_eq!(first, run("s2.json"), "{name}: two runs differ");
        let v: Value = serde_json::from_str(&first).unwrap();
        let p = &v["parameters"];
        assert_eq!(p["region"], region, "{name}");
        assert_eq!(p["scored"], 3, "{name}");
        assert_eq!(p["steps"], serde_json::json!([[1, 1], [0, 1]]), "{name}");
        for m in v["methods"].as_array().unwrap() {
            let method = m["method"].as_str().unwrap();
            let rho: Vec<f64> = m["rho"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_f64().unwrap())
                .collect();
            assert_eq!(rho.len(), 2, "{name} {method}");
            match method {
                // The control: the same seeded map whatever the weights.
                "random" => assert!(rho.iter().all(|&r| r == 1.0) && m["flagged"] == true),
                // The last layer's attention changes once that layer is noise.
                "attention.last.mean" => {
                    assert!(rho[0] < 0.9 && m["flagged"] == false, "{name}: {rho:?}")
                }
                _ => assert!(
                    rho.iter().all(|r| (-1.0..=1.0).contains(r)),
                    "{name} {method}"
                ),
            }
        }
    }
}

#[test]
fn heads_are_scored_on_the_scored_region_of_each_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, region, grid) in [
        ("tiny-llava-next", "highres", [8, 8]),
        ("tiny-qwen2-vl", "image", [4, 4]),
    ] {
        let run = |file: &str| {
            let json = tmp.path().join(file);
            let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
                .args([
                    "eval",
                    "--heads",
                    "--model",
                    model_dir(name).to_str().unwrap(),
                ])
                .args(["--scenes", "3", "--json", json.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                std::fs::read_to_string(json).unwrap(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (first, table) = run("h1.json");
        assert_eq!(first, run("h2.json").0, "{name}: two runs differ");
        let v: Value = serde_json::from_str(&first).unwrap();
        let p = &v["parameters"];
        assert_eq!(p["region"], region, "{name}");
        assert_eq!(grid_of(&p["grid"]), grid, "{name}");
        assert_eq!(
            (p["layers"].as_u64(), p["heads"].as_u64()),
            (Some(2), Some(4))
        );
        assert_eq!(p["scored"], 3);
        assert_eq!(v["heads"].as_array().unwrap().len(), 8);
        for h in v["heads"].as_array().unwrap() {
            for key in ["pointing", "pointing_overlap", "pointing_tolerance"] {
                // A share of the 3 scenes.
                let x = h[key].as_f64().unwrap() * 3.0;
                assert!(
                    (x - x.round()).abs() < 1e-5 && (0.0..=3.0).contains(&x),
                    "{key} {h}"
                );
            }
            let mass = h["mass_in_mask"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&mass));
        }
        assert_eq!(
            table.contains("scored on the highres region's 8x8 grid"),
            region == "highres",
            "{name}: {table}"
        );
    }
}

#[test]
fn a_heads_mass_in_mask_is_that_of_its_map_on_the_highres_cells() {
    use lvlmscope::eval::metrics::{mass_in_mask, region_coverage};
    use lvlmscope::explain::attention::HeadAgg;
    use lvlmscope::explain::catalogue::{self, MapId};
    use lvlmscope::session::RegionKind;

    let tmp = tempfile::tempdir().unwrap();
    let name = "tiny-llava-next";
    let json = tmp.path().join("one.json");
    let out = Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args([
            "eval",
            "--heads",
            "--model",
            model_dir(name).to_str().unwrap(),
        ])
        .args(["--scenes", "1", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();

    let model = load(name);
    let config = SceneConfig::default();
    let seed = scene_seed(SEED, 0);
    let scene = demo::generate(seed, &config);
    let question = pick_question(&scene, 0, seed, &config).unwrap();
    let mask = &scene.objects[question.object.unwrap()].mask;
    let image = image::DynamicImage::ImageRgb8(scene.image.clone());
    let request = RunRequest {
        model: model.name().to_string(),
        image: "scene".into(),
        prompt: question.question.clone(),
        max_new_tokens: 1,
        ..RunRequest::default()
    };
    let session = model
        .generate(&image, &request, &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    let highres: Vec<_> = session
        .regions()
        .iter()
        .filter(|r| r.kind == RegionKind::Highres)
        .cloned()
        .collect();
    let coverage = region_coverage(mask, &highres, session.manifest.image.original_size);
    let layers = 2;
    for h in v["heads"].as_array().unwrap() {
        let (l, head) = (h["layer"].as_u64().unwrap(), h["head"].as_u64().unwrap());
        let id = MapId::attention(l as usize, layers, HeadAgg::Head(head as usize));
        let e = catalogue::explain(&session, &[0], &id).unwrap();
        let map = &e
            .regions
            .iter()
            .find(|m| m.kind == RegionKind::Highres)
            .unwrap()
            .grid
            .values;
        let expected = mass_in_mask(map, &coverage);
        let got = h["mass_in_mask"].as_f64().unwrap() as f32;
        assert!(
            (got - expected).abs() < 1e-6,
            "l{l}h{head}: {got} vs {expected}"
        );
    }
}
