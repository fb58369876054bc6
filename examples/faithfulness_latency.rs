//! Time from pressing `f` in the app to the faithfulness numbers of the token being shown,
//! through the real job worker and model service, on the embedded demo model and on
//! `tests/fixtures/tiny-llava-full`: the first token (the model is loaded) and the next ones
//! (the model is kept; moving the cursor asks for them). The sessions hold relevancy and causal
//! results for every token, so each token has all nine maps.
//!
//! `cargo run --release --example faithfulness_latency [-- TOKENS]` (default 3 tokens per model).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::generate::{Capture, RunRequest};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::jobs::job_request;
use lvlmscope::tui::worker::{spawn_job_worker, JobWorker};
use lvlmscope::tui::{update, App, Cmd, Msg};

fn press(app: &mut App, code: KeyCode) -> Vec<Cmd> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Submits the model job of `cmds` and applies messages until it is done.
fn finish(
    app: &mut App,
    cmds: &[Cmd],
    worker: &JobWorker,
    rx: &Receiver<Msg>,
) -> Result<(), String> {
    let [Cmd::ModelJob(id, _)] = cmds else {
        return Err(format!("expected one model job, got {cmds:?}"));
    };
    if !worker.submit(job_request(app, *id).ok_or("no pending job")?) {
        return Err("the worker is gone".into());
    }
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(600))
            .map_err(|e| e.to_string())?;
        let done = matches!(msg, Msg::JobDone(_));
        update(app, msg);
        if done {
            return Ok(());
        }
    }
}

fn measure(name: &str, request: RunRequest, tokens: usize) -> Result<(), String> {
    let session = lvlmscope::job::run(&request, &AtomicBool::new(false), &mut |_| {})
        .map_err(|e| e.to_string())?;
    let answer = session.num_output();
    let mut app = App::with_session(Look::new(Theme::dark(), ColorMode::NoColor), session, None);
    let (tx, rx) = channel();
    let worker = spawn_job_worker(lvlmscope::tui::default_job_runner(), tx);
    println!("{name}: {answer} answer tokens, grid {:?}", app.grid());
    for t in 0..tokens.min(answer) {
        let started = Instant::now();
        let key = if t == 0 {
            KeyCode::Char('f')
        } else {
            KeyCode::Right
        };
        let cmds = press(&mut app, key);
        finish(&mut app, &cmds, &worker, &rx)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let fv = app.doc.view.faith.as_ref().ok_or("no faithfulness block")?;
        if fv.token != t || fv.rows.iter().any(|r| r.drop.is_none()) {
            return Err(format!(
                "token {t} was not measured: {:?}",
                app.status.notice()
            ));
        }
        let secs = app
            .doc
            .method
            .faith()
            .seconds
            .get(&t)
            .copied()
            .unwrap_or(0.0)
            * 1e3;
        let what = if t == 0 {
            "f: load + measure"
        } else {
            "→: measure"
        };
        let best = fv
            .rows
            .iter()
            .find(|r| r.best)
            .map_or("-".to_string(), |r| {
                format!("{} {:+.3}", r.name, r.drop.unwrap_or(0.0))
            });
        println!(
            "  token {t}: {} maps, key → numbers {ms:.1} ms ({what}; deletions {secs:.1} ms); p {:.3}, best {best}",
            fv.rows.len(),
            fv.original.unwrap_or(0.0)
        );
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let tokens: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let demo = lvlmscope::demo::demo_model_dir().map_err(|e| e.to_string())?;
    let scenes = lvlmscope::demo::demo_scenes_dir().map_err(|e| e.to_string())?;
    let scene = lvlmscope::demo::demo_scenes()
        .into_iter()
        .next()
        .ok_or("no demo scene")?;
    let full = |model: String, image, prompt| RunRequest {
        model,
        image,
        prompt,
        max_new_tokens: 8,
        capture: Capture::Full,
        relevancy: true,
        causal: true,
        ..RunRequest::default()
    };
    measure(
        "demo model",
        full(
            demo.display().to_string(),
            scenes.join(format!("{}.png", scene.name)),
            scene.question,
        ),
        tokens,
    )?;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    measure(
        "tiny-llava-full",
        full(
            fixtures.join("tiny-llava-full").display().to_string(),
            fixtures.join("image.png"),
            "What is in the picture?".into(),
        ),
        tokens,
    )
}
