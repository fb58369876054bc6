//! Live runs through the worker seam with fake runners: tokens stream in, the progress gauge
//! follows the stages, the result becomes the session, Esc cancels, failures are notices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::Session;
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::run_form::Field;
use lvlmscope::tui::worker::spawn_run;
use lvlmscope::tui::{draw, update, App, Cmd, LiveRequest, Msg, RunEvent, Runner};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// Streams the tiny session's tokens, then returns it.
struct Streaming;

impl Runner for Streaming {
    fn run(
        &self,
        req: &LiveRequest,
        _cancel: &AtomicBool,
        progress: &mut dyn FnMut(RunEvent),
    ) -> Result<Session, String> {
        assert_eq!(req.prompt, "what is it?");
        let s = synthetic_session(&SyntheticSpec::tiny());
        progress(RunEvent::Stage("loading model".into()));
        progress(RunEvent::Fraction(0.5));
        progress(RunEvent::Stage("decoding".into()));
        for (index, text) in s.manifest.tokens.output.iter().enumerate() {
            progress(RunEvent::Token {
                index,
                text: text.clone(),
            });
        }
        Ok(s)
    }
}

/// Waits for cancellation, then fails as a cancelled run does.
struct UntilCancelled;

impl Runner for UntilCancelled {
    fn run(
        &self,
        _req: &LiveRequest,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(RunEvent),
    ) -> Result<Session, String> {
        progress(RunEvent::Stage("decoding".into()));
        progress(RunEvent::Token {
            index: 0,
            text: "▁partial".into(),
        });
        while !cancel.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Err("the run was cancelled".into())
    }
}

fn key(app: &mut App, code: KeyCode) -> Vec<Cmd> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// Opens the form, fills it and presses Enter; returns the request it asks to start.
fn start_from_form(app: &mut App) -> LiveRequest {
    key(app, KeyCode::Char('n'));
    assert!(app.form.is_open());
    type_text(app, "what is it?");
    key(app, KeyCode::Up);
    type_text(app, "/tmp/picture.png");
    key(app, KeyCode::Up);
    type_text(app, "tiny-model");
    let cmds = key(app, KeyCode::Enter);
    match cmds.as_slice() {
        [Cmd::StartRun(req)] => req.clone(),
        other => panic!("expected one StartRun, got {other:?}"),
    }
}

fn screen(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(200, 40)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    t.backend()
        .buffer()
        .content
        .iter()
        .map(|c| c.symbol())
        .collect()
}

#[test]
fn tokens_stream_in_and_the_result_becomes_the_session() {
    let mut app = App::new(Look::new(Theme::dark(), ColorMode::TrueColor));
    let req = start_from_form(&mut app);
    assert_eq!(req.model, "tiny-model");
    assert_eq!(req.image.to_str(), Some("/tmp/picture.png"));
    assert!(app.run.active);
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let handle = spawn_run(Arc::new(Streaming), req, cancel, tx);
    let mut saw_streaming = false;
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("worker reports");
        let done = matches!(msg, Msg::RunDone(_));
        update(&mut app, msg);
        if !done && app.run.tokens.len() == 3 {
            assert_eq!(app.run.stage, "decoding");
            assert!(screen(&app).contains("streaming · 3 tokens"));
            saw_streaming = true;
        }
        if done {
            break;
        }
    }
    handle.join().unwrap();
    assert!(saw_streaming);
    assert!(!app.run.active);
    assert_eq!(app.num_tokens(), 5);
    assert!(screen(&app).contains("Answer · token 0/5"));
}

#[test]
fn esc_cancels_a_run_and_failures_are_notices() {
    let mut app = App::new(Look::new(Theme::dark(), ColorMode::TrueColor));
    let req = start_from_form(&mut app);
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    app.run.cancel = Some(cancel.clone());
    let handle = spawn_run(Arc::new(UntilCancelled), req, cancel.clone(), tx);
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    update(&mut app, first);
    key(&mut app, KeyCode::Esc);
    assert!(cancel.load(Ordering::SeqCst));
    loop {
        let msg = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let done = matches!(msg, Msg::RunDone(_));
        update(&mut app, msg);
        if done {
            break;
        }
    }
    handle.join().unwrap();
    assert!(!app.run.active && app.doc.session.is_none());
    let notice = app.status.notice().cloned().unwrap();
    assert!(
        notice.error && notice.text.contains("cancelled"),
        "{notice:?}"
    );
    assert!(screen(&app).contains("run failed: the run was cancelled"));
}

#[test]
fn the_form_refuses_empty_fields_and_completes_paths() {
    let mut app = App::new(Look::new(Theme::dark(), ColorMode::TrueColor));
    key(&mut app, KeyCode::Char('n'));
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert!(app.status.notice().unwrap().error);
    assert_eq!(app.form.form().unwrap().field, Field::Model);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("picture-one.png"), b"x").unwrap();
    std::fs::write(dir.path().join("picture-two.png"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("photos")).unwrap();
    key(&mut app, KeyCode::Down);
    type_text(&mut app, &format!("{}/pi", dir.path().display()));
    key(&mut app, KeyCode::Tab);
    let form = app.form.form().cloned().unwrap();
    assert_eq!(form.image, format!("{}/picture-", dir.path().display()));
    assert_eq!(form.completions, vec!["picture-one.png", "picture-two.png"]);
    type_text(&mut app, "t");
    key(&mut app, KeyCode::Tab);
    assert_eq!(
        app.form.form().cloned().unwrap().image,
        format!("{}/picture-two.png", dir.path().display())
    );
    key(&mut app, KeyCode::Esc);
    assert!(!app.form.is_open());
}
