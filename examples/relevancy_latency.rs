//! Time from pressing `r` in the app to the relevancy rows arriving, through the real job
//! worker and model service, on the embedded demo model and on `tests/fixtures/tiny-llava-full`:
//! the first token (the model is loaded) and the next ones (the model is kept).
//!
//! `cargo run --release --example relevancy_latency [-- TOKENS [MODEL IMAGE PROMPT]]` (default 3
//! tokens per model); with MODEL, IMAGE and PROMPT that model is timed as well (e.g. the "mini"
//! LLaVA of `tools/bench_vs_transformers.py`).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::generate::RunRequest;
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::jobs::job_request;
use lvlmscope::tui::worker::spawn_job_worker;
use lvlmscope::tui::{update, App, Cmd, Msg};

fn press(app: &mut App, code: KeyCode) -> Vec<Cmd> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn measure(name: &str, request: RunRequest, tokens: usize) -> Result<(), String> {
    let session = lvlmscope::job::run(&request, &AtomicBool::new(false), &mut |_| {})
        .map_err(|e| e.to_string())?;
    let positions = session.num_positions();
    let answer = session.num_output();
    let mut app = App::with_session(Look::new(Theme::dark(), ColorMode::NoColor), session, None);
    let (tx, rx) = channel();
    let worker = spawn_job_worker(lvlmscope::tui::default_job_runner(), tx);
    press(&mut app, KeyCode::Char('2'));
    println!("{name}: {answer} answer tokens, S = {positions} positions");
    for t in 0..tokens.min(answer) {
        let started = Instant::now();
        let cmds = press(&mut app, KeyCode::Char('r'));
        let [Cmd::ModelJob(id, _)] = cmds.as_slice() else {
            return Err(format!("r asked for {cmds:?}"));
        };
        if !worker.submit(job_request(&app, *id).ok_or("no pending job")?) {
            return Err("the worker is gone".into());
        }
        loop {
            let msg = rx
                .recv_timeout(Duration::from_secs(600))
                .map_err(|e| e.to_string())?;
            let done = matches!(msg, Msg::JobDone(_));
            update(&mut app, msg);
            if done {
                break;
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let stored = app
            .doc
            .session
            .as_ref()
            .is_some_and(|s| s.manifest.relevancy_tokens.contains(&t));
        if !stored {
            return Err(format!(
                "token {t} was not stored: {:?}",
                app.status.notice()
            ));
        }
        let what = if t == 0 { "load + pass" } else { "pass only" };
        println!("  token {t}: r → rows stored in {ms:.1} ms ({what})");
        press(&mut app, KeyCode::Right);
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
    measure(
        "demo model",
        RunRequest {
            model: demo.display().to_string(),
            image: scenes.join(format!("{}.png", scene.name)),
            prompt: scene.question,
            max_new_tokens: 8,
            ..RunRequest::default()
        },
        tokens,
    )?;
    let extra: Vec<String> = std::env::args().skip(2).collect();
    if let [model, image, prompt] = extra.as_slice() {
        measure(
            model,
            RunRequest {
                model: model.clone(),
                image: image.into(),
                prompt: prompt.clone(),
                max_new_tokens: 8,
                ..RunRequest::default()
            },
            tokens,
        )?;
    }
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    measure(
        "tiny-llava-full",
        RunRequest {
            model: fixtures.join("tiny-llava-full").display().to_string(),
            image: fixtures.join("image.png"),
            prompt: "What is in the picture?".into(),
            max_new_tokens: 8,
            ..RunRequest::default()
        },
        tokens,
    )
}
