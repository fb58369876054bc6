//! Model-backed jobs on saved LLaVA-NeXT / OneVision sessions: relevancy on demand equals the
//! rows `run --relevancy` stores, and the deletion experiments re-read the original image
//! through the whole anyres processor exactly (nothing deleted: transformers' probability of
//! every greedy token), deleting the cells of the region asked for.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use lvlmscope::explain::faithfulness::{
    fill_windows, mean_colour, picture_windows, softmax_at, FaithfulnessError,
};
use lvlmscope::generate::{anyres, RunRequest};
use lvlmscope::job::{JobOutput, ModelJob, ModelService, ModelSpec, ServiceError, SessionModel};
use lvlmscope::session::{RegionKind, Session};

const MODELS: [&str; 2] = ["tiny-llava-next", "tiny-llava-onevision"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn request(model: &str, image: &Path, tokens: usize, relevancy: bool) -> RunRequest {
    RunRequest {
        model: fixtures().join(model).display().to_string(),
        image: image.to_path_buf(),
        prompt: "What is in the picture?".into(),
        max_new_tokens: tokens,
        relevancy,
        ..RunRequest::default()
    }
}

fn run(request: &RunRequest) -> Session {
    lvlmscope::job::run(request, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

#[test]
fn relevancy_on_demand_equals_the_rows_of_the_run() {
    for model in MODELS {
        for image in ["image.png", "image_tall.png"] {
            let image = fixtures().join(image);
            let with = run(&request(model, &image, 4, true));
            let mut without = run(&request(model, &image, 4, false));
            assert_eq!(with.output_ids, without.output_ids);
            assert!(without.relevancy_llm.is_none());
            let tokens: Vec<usize> = (0..without.num_output()).collect();
            let mut service = ModelService::new();
            let added = service
                .add_relevancy(&mut without, &tokens, &mut |_| {})
                .unwrap();
            assert_eq!(added, tokens.len());
            for (name, a, b) in [
                ("llm", &with.relevancy_llm, &without.relevancy_llm),
                ("vit", &with.relevancy_vit, &without.relevancy_vit),
                (
                    "combined",
                    &with.relevancy_combined,
                    &without.relevancy_combined,
                ),
            ] {
                let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
                assert_eq!(a.shape, b.shape, "{model} {name}");
                assert_eq!(a.data, b.data, "{model} {name}");
            }
            assert_eq!(service.loads(), 1);
        }
    }
}

/// Softmax probability of each output token at its position in transformers' forward.
fn reference_probs(model: &str, n: usize, out: &[i64]) -> Vec<f32> {
    let path = fixtures().join(format!("reference/{model}.safetensors"));
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let logits: Vec<Vec<f32>> = tensors["logits"].to_vec2().unwrap();
    out.iter()
        .enumerate()
        .map(|(t, &id)| softmax_at(&logits[n - 1 + t], id as usize))
        .collect()
}

#[test]
fn deletion_rereads_the_original_image_and_blanking_cells_changes_the_answer() {
    for model in MODELS {
        let session = run(&request(model, &fixtures().join("image.png"), 8, false));
        let n = session.num_input();
        let expected = reference_probs(model, n, &session.output_ids);
        let spec = ModelSpec::for_session(&session);
        let mut service = ModelService::new();
        let loaded = service.model(&spec, &mut |_| {}).unwrap();
        let SessionModel::Anyres(m) = loaded else {
            panic!("{model} did not load as an anyres model");
        };
        loaded.check_fits(&spec.path, &session).unwrap();
        let image = anyres::session_image(m, &session).unwrap();
        let picture = anyres::picture_of(m, &image);
        let (h, w) = (picture.shape[1], picture.shape[2]);
        let rect = [0.0, 0.0, w as f64, h as f64];
        let windows = picture_windows(&session, rect, h, w);
        let base = session.regions()[0].cells();
        let highres: Vec<usize> = (base..windows.len()).collect();
        let blank = fill_windows(&picture, &windows, &highres, mean_colour(&picture)).data;
        let ids: Vec<u32> = session
            .input_ids
            .iter()
            .chain(&session.output_ids)
            .map(|&i| i as u32)
            .collect();
        let mut changed = 0f32;
        for (t, &want) in expected.iter().enumerate() {
            let rows = loaded
                .scorer()
                .next_token_logits(
                    &ids[..n + t],
                    n,
                    &[picture.data.clone(), blank.clone()],
                    (h, w),
                )
                .unwrap();
            let target = session.output_ids[t] as usize;
            let argmax = (0..rows[0].len())
                .max_by(|&a, &b| rows[0][a].total_cmp(&rows[0][b]))
                .unwrap();
            assert_eq!(argmax, target, "{model} token {t}: not the run's token");
            let p = softmax_at(&rows[0], target);
            assert!(
                (p - want).abs() < 1e-5,
                "{model} token {t}: p {p} but transformers {want}"
            );
            changed = changed.max((p - softmax_at(&rows[1], target)).abs());
        }
        assert!(
            changed > 1e-3,
            "{model}: blanking the high-res cells changes nothing"
        );

        // The deletion scores the high-resolution cells by default, the base view's on request.
        let cells = windows.len();
        let d = loaded.deletion(&session, 0, None).unwrap();
        assert_eq!((d.patches(), d.cells()), (cells - base, cells));
        let d = loaded
            .deletion(&session, 0, Some(RegionKind::Base))
            .unwrap();
        assert_eq!(d.patches(), base);
        let err = loaded
            .deletion(&session, 0, Some(RegionKind::Image))
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                ServiceError::Faithfulness(FaithfulnessError::NoRegion(RegionKind::Image))
            ),
            "{err}"
        );
        // Highest at the base view's last cells and at the high-res grid's first ones.
        let ramp: Vec<f32> = (0..cells)
            .map(|i| if i < base { i as f32 } else { -(i as f32) })
            .collect();
        let mut drops = Vec::new();
        for region in [None, Some(RegionKind::Highres), Some(RegionKind::Base)] {
            let job = ModelJob::Faithfulness {
                token: 0,
                maps: vec![("ramp".into(), ramp.clone())],
                fraction: 0.5,
                region,
            };
            let out = service
                .run(&session, &job, &AtomicBool::new(false), &mut |_| {})
                .unwrap();
            let JobOutput::Faithfulness {
                original, drops: d, ..
            } = out
            else {
                panic!("expected drops, got {out:?}");
            };
            assert!((original - expected[0]).abs() < 1e-5, "{model}: {original}");
            drops.push(d[0].1);
        }
        assert_eq!(
            drops[0], drops[1],
            "{model}: the default is not the high-res region"
        );
        assert_ne!(
            drops[1], drops[2],
            "{model}: base and high-res deletions agree"
        );
        assert_eq!(service.loads(), 1);
    }
}

#[test]
fn a_session_whose_image_is_gone_or_changed_is_refused_in_one_sentence() {
    let dir = std::env::temp_dir().join(format!("lvlmscope-anyres-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("picture.png");
    std::fs::copy(fixtures().join("image.png"), &image).unwrap();
    let session = run(&request("tiny-llava-next", &image, 2, false));
    let mut service = ModelService::new();
    // Another picture of the same size under the same name: refused, not explained.
    let mut other = lvlmscope::processing::load_image(&image).unwrap().to_rgb8();
    for p in other.pixels_mut() {
        p.0[0] = 255 - p.0[0];
    }
    other.save(&image).unwrap();
    let mut copy = session.clone();
    let err = service
        .add_relevancy(&mut copy, &[0], &mut |_| {})
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("not the one the session was made from"),
        "{text}"
    );
    std::fs::remove_file(&image).unwrap();
    let job = ModelJob::Faithfulness {
        token: 0,
        maps: vec![("flat".into(), vec![0.0; session.cell_positions().len()])],
        fraction: 0.2,
        region: None,
    };
    let err = service
        .run(&session, &job, &AtomicBool::new(false), &mut |_| {})
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("original image"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn report_computes_anyres_relevancy_on_demand_as_the_run_stores_it() {
    let dir = std::env::temp_dir().join(format!("lvlmscope-anyres-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = fixtures().join("image_tall.png");
    let report = |session: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
            .arg("report")
            .arg(session)
            .args(["--token", "1", "--method", "relevancy.combined", "--json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    for model in MODELS {
        let with = dir.join(format!("{model}-with.session"));
        let without = dir.join(format!("{model}-without.session"));
        let s = run(&request(model, &image, 3, true));
        lvlmscope::session::save(&s, &with, lvlmscope::session::AttentionDtype::F32).unwrap();
        let s = run(&request(model, &image, 3, false));
        lvlmscope::session::save(&s, &without, lvlmscope::session::AttentionDtype::F32).unwrap();
        let (a, b) = (report(&with), report(&without));
        assert_eq!(a["map_id"], "relevancy.combined", "{model}");
        // The run's backward carries several tokens at once, the report's one: equal to
        // rounding.
        let (x, y) = (
            numbers(&[&a["map"], &a["text"]]),
            numbers(&[&b["map"], &b["text"]]),
        );
        assert_eq!(x.len(), y.len(), "{model}");
        assert!(!x.is_empty(), "{model}");
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() < 1e-6, "{model}: {p} vs {q}");
        }
        assert_eq!(
            a["text"].as_object().unwrap().keys().collect::<Vec<_>>(),
            b["text"].as_object().unwrap().keys().collect::<Vec<_>>(),
            "{model}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Every number in JSON values, in order (objects by key).
fn numbers(values: &[&serde_json::Value]) -> Vec<f64> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Number(n) => out.extend(n.as_f64()),
            serde_json::Value::Array(xs) => xs.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    values.iter().for_each(|v| walk(v, &mut out));
    out
}
