//! Faithfulness with the real fixture model: `job::ModelService` measures the probability
//! drop of each map of a token exactly as `explain::faithfulness::probability_drop` does, with
//! the model it keeps; the app's `f` goes through the job worker with it; a session whose
//! model is gone is one sentence in the status line.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::explain::attention::HeadAgg;
use lvlmscope::explain::faithfulness::{probability_drop, Deletion, DEFAULT_DROP_FRACTION};
use lvlmscope::explain::maps::token_maps;
use lvlmscope::generate::{Capture, RunRequest};
use lvlmscope::job::{JobOutput, JobProgress, ModelJob, ModelService, ModelSpec, ServiceError};
use lvlmscope::session::Session;
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::jobs::job_request;
use lvlmscope::tui::worker::spawn_job_worker;
use lvlmscope::tui::{update, App, Cmd, JobRunner, Msg};

const MODEL: &str = "tiny-llava-gqa";
const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A greedy run of the fixture on the fixture image with the full attention of the last layer
/// and the causal explanations (as `lvlmscope run --causal` makes).
fn fixture_session() -> Session {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("reference/{MODEL}.json"))).unwrap(),
    )
    .unwrap();
    let request = RunRequest {
        model: fixtures().join(MODEL).display().to_string(),
        image: fixtures().join("image.png"),
        prompt: json["prompt"].as_str().unwrap().to_string(),
        max_new_tokens: 8,
        capture: Capture::Full,
        causal: true,
        ..RunRequest::default()
    };
    lvlmscope::job::run(&request, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

fn press(app: &mut App, code: KeyCode) -> Vec<Cmd> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Runs the one model job of `cmds` on a worker around `runner`, applying every message.
fn run_job(app: &mut App, cmds: &[Cmd], runner: Box<dyn JobRunner>) -> Vec<Cmd> {
    let [Cmd::ModelJob(id, _)] = cmds else {
        panic!("expected one model job, got {cmds:?}")
    };
    let (tx, rx) = channel();
    let worker = spawn_job_worker(runner, tx);
    assert!(worker.submit(job_request(app, *id).unwrap()));
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("an answer");
        let done = matches!(msg, Msg::JobDone(_));
        let cmds = update(app, msg);
        if done {
            return cmds;
        }
    }
}

#[test]
fn the_service_measures_what_probability_drop_measures() {
    let mut s = fixture_session();
    let t = 2;
    let mut service = ModelService::new();
    service.add_relevancy(&mut s, &[t], &mut |_| {}).unwrap();
    let maps = token_maps(&s, t, Some((0, HeadAgg::Head(1))), 7).unwrap();
    let names: Vec<&str> = maps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "attention.l0.h1",
            "attention.last.mean",
            "attention.layers.mean",
            "attention.last.max",
            "relevancy.decoder",
            "relevancy.vision",
            "relevancy.combined",
            "causal",
            "random",
        ]
    );
    let job = ModelJob::Faithfulness {
        token: t,
        maps: maps.clone(),
        fraction: DEFAULT_DROP_FRACTION,
        region: None,
    };
    let mut stages = Vec::new();
    let out = service
        .run(&s, &job, &AtomicBool::new(false), &mut |p| stages.push(p))
        .unwrap();
    assert_eq!(service.loads(), 1, "the model of the relevancy job is kept");
    let JobOutput::Faithfulness {
        token,
        original,
        drops,
        images,
        ..
    } = out
    else {
        panic!("expected drops, got {out:?}")
    };
    assert_eq!(token, t);
    assert!(images <= maps.len() + 1, "{images} images");
    assert!(stages.contains(&JobProgress::Stage("faithfulness of token 2".into())));
    assert_eq!(stages.last(), Some(&JobProgress::Fraction(1.0)));
    let loaded = service
        .model(&ModelSpec::for_session(&s), &mut |_| {})
        .unwrap();
    let model = loaded.scorer();
    assert_eq!(drops.len(), maps.len());
    let mut differ = 0;
    for ((name, map), (got_name, got)) in maps.iter().zip(&drops) {
        assert_eq!(name, got_name);
        let want = probability_drop(model, &s, t, map, DEFAULT_DROP_FRACTION).unwrap();
        assert!((got - want).abs() < TOL, "{name}: {got} vs {want}");
        differ += usize::from(got.abs() > TOL);
    }
    assert!(differ > 0, "some map changes the answer: {drops:?}");
    let p = Deletion::new(model, &s, t).unwrap().original().unwrap();
    assert!((original - p).abs() < TOL && p > 0.0);
    // errors are one sentence; a cancelled job does nothing
    let bad = ModelJob::Faithfulness {
        token: t,
        maps: vec![("short".into(), vec![1.0; 3])],
        fraction: 0.2,
        region: None,
    };
    let err = service
        .run(&s, &bad, &AtomicBool::new(false), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, ServiceError::Faithfulness(_)), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("the map has 3 values but the image grid has"));
    let err = service
        .run(&s, &job, &AtomicBool::new(true), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, ServiceError::Cancelled));
    assert_eq!(service.loads(), 1);
}

#[test]
fn f_in_the_app_measures_the_token_with_the_real_model() {
    let s = fixture_session();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, s.clone(), None);
    press(&mut app, KeyCode::Right);
    let cmds = press(&mut app, KeyCode::Char('f'));
    let after = run_job(&mut app, &cmds, lvlmscope::tui::default_job_runner());
    assert!(after.is_empty(), "every map measured: {after:?}");
    assert!(app.status.notice().is_none(), "{:?}", app.status.notice());
    let fv = app.doc.view.faith.clone().expect("the block");
    assert_eq!(fv.token, 1);
    // no relevancy in the session: attention (shown layer first), causal, random
    let want = token_maps(&s, 1, Some((app.doc.sel.layer, HeadAgg::Mean)), 1).unwrap();
    assert_eq!(fv.rows.len(), want.len());
    let dir = lvlmscope::model::ModelDir::resolve(&s.manifest.model.path).unwrap();
    let model =
        lvlmscope::model::Llava::load(&dir, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    for (row, (name, map)) in fv.rows.iter().zip(&want) {
        assert_eq!(&row.name, name);
        let direct = probability_drop(&model, &s, 1, map, DEFAULT_DROP_FRACTION).unwrap();
        let got = row.drop.expect("measured");
        assert!((got - direct).abs() < TOL, "{name}: {got} vs {direct}");
    }
    assert_eq!(fv.rows.iter().filter(|r| r.current).count(), 1);
    assert!(fv.original.is_some_and(|p| p > 0.0));
}

#[test]
fn a_session_without_its_model_is_one_sentence() {
    let mut s = fixture_session();
    s.manifest.model.path = "/nonexistent/lvlmscope-model".into();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, s, None);
    let cmds = press(&mut app, KeyCode::Char('f'));
    let after = run_job(&mut app, &cmds, lvlmscope::tui::default_job_runner());
    assert!(after.is_empty(), "no automatic retry");
    let n = app.status.notice().cloned().expect("a notice");
    assert!(n.error);
    assert!(
        n.text.starts_with(
            "faithfulness of token 0 failed: could not load the session's model \"/nonexistent/lvlmscope-model\""
        ),
        "{}",
        n.text
    );
    assert!(!n.text.contains('\n'));
    assert!(app.doc.method.faith().halted.is_some());
}
