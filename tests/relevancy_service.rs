//! Relevancy on demand with the real fixture models: `job::ModelService` loads the session's
//! model once and computes rows equal to the PyTorch-autograd reference; the app's `r` goes
//! through the job worker with it; `report --method relevancy` computes what the session lacks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::time::Duration;

use candle_core::{Device, Tensor};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::generate::RunRequest;
use lvlmscope::job::{JobOutput, ModelJob, ModelService, ServiceError};
use lvlmscope::session::{self, AttentionDtype, Session};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::jobs::job_request;
use lvlmscope::tui::worker::spawn_job_worker;
use lvlmscope::tui::{update, App, Cmd, Msg};

const TOL: f32 = 1e-4;
const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(model: &str) -> HashMap<String, Vec<Vec<f32>>> {
    let file = fixtures().join(format!("reference/{model}.relevancy.safetensors"));
    candle_core::safetensors::load(file, &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(_, t)| t.rank() == 2)
        .map(|(k, t): (String, Tensor)| {
            let t = t.to_dtype(candle_core::DType::F32).unwrap();
            (k, t.to_vec2::<f32>().unwrap())
        })
        .collect()
}

/// A greedy run of the fixture on the fixture image (no relevancy), as `lvlmscope run` makes.
fn fixture_session(model: &str) -> Session {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("reference/{model}.json"))).unwrap(),
    )
    .unwrap();
    let request = RunRequest {
        model: fixtures().join(model).display().to_string(),
        image: fixtures().join("image.png"),
        prompt: json["prompt"].as_str().unwrap().to_string(),
        max_new_tokens: 8,
        ..RunRequest::default()
    };
    let s = lvlmscope::job::run(&request, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let want: Vec<i64> = json["output_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(
        s.output_ids, want,
        "the run reproduces the reference answer"
    );
    assert!(s.manifest.relevancy_tokens.is_empty());
    s
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_service_loads_once_and_matches_the_autograd_reference() {
    let model = "tiny-llava-gqa";
    let mut s = fixture_session(model);
    let want = reference(model);
    let mut service = ModelService::new();
    let mut stages = Vec::new();
    let job = ModelJob::Relevancy { tokens: vec![3] };
    let out = service
        .run(&s, &job, &AtomicBool::new(false), &mut |p| stages.push(p))
        .unwrap();
    let JobOutput::Relevancy(maps) = out else {
        panic!("expected relevancy rows, got {out:?}")
    };
    assert_eq!(maps.tokens, vec![3]);
    for (got, key) in [
        (&maps.llm[0], "relevancy_llm"),
        (&maps.vit[0], "relevancy_vit"),
        (&maps.combined[0], "relevancy_combined"),
    ] {
        let d = max_diff(got, &want[key][3]);
        assert!(d < TOL, "{key} of token 3 differs by {d}");
    }
    assert_eq!(service.loads(), 1);
    assert!(format!("{stages:?}").contains("loading model"));
    // the next token reuses the loaded model, and stores into the session
    assert_eq!(
        service.add_relevancy(&mut s, &[5, 3], &mut |_| {}).unwrap(),
        2
    );
    assert_eq!(service.loads(), 1);
    assert_eq!(s.manifest.relevancy_tokens, vec![3, 5]);
    let llm = s.relevancy_llm.as_ref().unwrap();
    assert!(max_diff(llm.row(&[5]), &want["relevancy_llm"][5]) < TOL);
    // nothing left to compute for these tokens
    assert_eq!(
        service.add_relevancy(&mut s, &[3, 5], &mut |_| {}).unwrap(),
        0
    );
    // a cancelled job does nothing
    let err = service
        .run(
            &s,
            &ModelJob::Relevancy { tokens: vec![0] },
            &AtomicBool::new(true),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(err, ServiceError::Cancelled));
}

#[test]
fn a_model_that_does_not_fit_the_session_is_refused() {
    let mut s = fixture_session("tiny-llava-gqa");
    s.manifest.model.path = fixtures().join("tiny-llava-full").display().to_string();
    let err = ModelService::new()
        .add_relevancy(&mut s, &[0], &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, ServiceError::Mismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("layers"), "{err}");
    s.manifest.model.path = String::new();
    let err = ModelService::new()
        .add_relevancy(&mut s, &[0], &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, ServiceError::NoModel));
}

#[test]
fn r_in_the_app_computes_the_reference_rows_with_the_real_model() {
    let model = "tiny-llava-full";
    let want = reference(model);
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, fixture_session(model), None);
    let key =
        |app: &mut App, c: KeyCode| update(app, Msg::Key(KeyEvent::new(c, KeyModifiers::NONE)));
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Right);
    let cmds = key(&mut app, KeyCode::Char('r'));
    let [Cmd::ModelJob(id, _)] = cmds.as_slice() else {
        panic!("expected one model job, got {cmds:?}")
    };
    let (tx, rx) = channel();
    let worker = spawn_job_worker(lvlmscope::tui::default_job_runner(), tx);
    assert!(worker.submit(job_request(&app, *id).unwrap()));
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("an answer");
        let done = matches!(msg, Msg::JobDone(_));
        update(&mut app, msg);
        if done {
            break;
        }
    }
    let s = app.doc.session.as_ref().unwrap();
    assert_eq!(
        s.manifest.relevancy_tokens,
        vec![1],
        "{:?}",
        app.status.notice()
    );
    for (got, key) in [
        (&s.relevancy_llm, "relevancy_llm"),
        (&s.relevancy_vit, "relevancy_vit"),
        (&s.relevancy_combined, "relevancy_combined"),
    ] {
        let d = max_diff(got.as_ref().unwrap().row(&[1]), &want[key][1]);
        assert!(d < TOL, "{key} of token 1 differs by {d}");
    }
    assert!(app.doc.modified);
    assert!(app.doc.view.rel_text.is_some() && app.doc.view.map.is_some());
}

#[test]
fn report_computes_missing_relevancy_with_the_sessions_model() {
    let model = "tiny-llava-gqa";
    let want = reference(model);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("s.session");
    let s = fixture_session(model);
    session::save(&s, &file, AttentionDtype::F16).unwrap();
    let out = Command::new(BIN)
        .arg("report")
        .arg(&file)
        .args(["--method", "relevancy", "--token", "2", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("computing the relevancy of token 2"),
        "{stderr}"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let map: Vec<f32> = j["map"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert!(max_diff(&map, &want["relevancy_combined"][2]) < TOL);
    assert!(!j["words"].as_array().unwrap().is_empty());
    assert!(j["reliance"]["image_share"].as_f64().unwrap() > 0.0);
    // the file is not changed
    assert!(session::load(&file)
        .unwrap()
        .manifest
        .relevancy_tokens
        .is_empty());
    // without its model, one sentence and a failure
    let mut moved = s;
    moved.manifest.model.path = tmp.path().join("gone").display().to_string();
    session::save(&moved, &file, AttentionDtype::F16).unwrap();
    let out = Command::new(BIN)
        .arg("report")
        .arg(&file)
        .args(["--method", "relevancy", "--token", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("lvlmscope: the session holds no relevancy for token 2, and it could not be computed: could not load the session's model"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}
