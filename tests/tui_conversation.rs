//! The app's follow-up question (issue 18) on the embedded demo model: `F` opens a one-line
//! prompt (Esc cancels), Enter runs the follow-up on the live-run worker with the real model,
//! the answer streams in and becomes a new turn; `(` and `)` move between the turns; the
//! relevancy view splits a token's relevancy over the image, the question and earlier turns.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::demo::{demo_model_dir, demo_scenes};
use lvlmscope::explain::catalogue::TextPart;
use lvlmscope::generate::{generate, LoadedModel, RunRequest};
use lvlmscope::session::Session;
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::worker::spawn_run;
use lvlmscope::tui::{draw, update, App, Cmd, GenerateRunner, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn key(app: &mut App, code: KeyCode) -> Vec<Cmd> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn screen(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(160, 44)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    t.backend()
        .buffer()
        .content
        .iter()
        .map(|c| c.symbol())
        .collect()
}

/// The demo model and a one-question session of its first scene.
fn demo_session() -> (LoadedModel, Session) {
    let dir = demo_model_dir().expect("the demo model is written to the cache");
    let name = dir.to_string_lossy().to_string();
    let loaded = LoadedModel::load(&name, DType::F32, &Device::Cpu).unwrap();
    let scene = &demo_scenes()[0];
    let image = image::load_from_memory(scene.png).unwrap();
    let request = RunRequest {
        model: name,
        prompt: scene.question.clone(),
        max_new_tokens: 6,
        ..RunRequest::default()
    };
    let cancel = AtomicBool::new(false);
    let session = generate(&loaded, &image, &request, &cancel, &mut |_| {}).unwrap();
    (loaded, session)
}

#[test]
fn a_follow_up_streams_in_as_a_new_turn_and_the_turns_can_be_shown() {
    let (loaded, first) = demo_session();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, first.clone(), None);
    assert_eq!(app.turn_position(), (1, 1));

    // Esc cancels the prompt
    key(&mut app, KeyCode::Char('F'));
    assert!(app.form.form().is_some_and(|f| f.follow_up));
    type_text(&mut app, "never mind");
    assert!(key(&mut app, KeyCode::Esc).is_empty());
    assert!(!app.form.is_open());

    key(&mut app, KeyCode::Char('F'));
    type_text(&mut app, "What colour is it?");
    assert!(screen(&app).contains("Follow-up on the same image"));
    let cmds = key(&mut app, KeyCode::Enter);
    let req = match cmds.as_slice() {
        [Cmd::StartRun(req)] => req.clone(),
        other => panic!("expected one StartRun, got {other:?}"),
    };
    assert_eq!(req.prompt, "What colour is it?");
    assert_eq!(req.history.as_deref(), Some(&first));
    assert!(app.run.active);

    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let handle = spawn_run(Arc::new(GenerateRunner::default()), req, cancel, tx);
    let mut streamed = 0;
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("worker reports");
        let done = matches!(msg, Msg::RunDone(_));
        update(&mut app, msg);
        if done {
            break;
        }
        streamed = streamed.max(app.run.tokens.len());
    }
    handle.join().unwrap();
    let talk = app
        .session
        .clone()
        .expect("the follow-up's session is shown");
    assert!(streamed > 0 && streamed == talk.num_output(), "{streamed}");
    assert_eq!(talk.num_turns(), 2);
    let earlier = talk.turn(0).unwrap();
    assert_eq!(earlier.input_ids, first.input_ids);
    assert_eq!(earlier.output_ids, first.output_ids);
    assert_eq!(earlier.attn_gen, first.attn_gen);
    assert_eq!(earlier.manifest.tokens, first.manifest.tokens);
    assert_eq!(talk.manifest.prompt, "What colour is it?");
    assert_eq!(
        talk.current_turn().unwrap().reused,
        0,
        "the app runs afresh"
    );
    assert_eq!(app.turn_position(), (2, 2));
    assert!(screen(&app).contains("Turn 2/2"));

    // ( and ) move between the turns; the whole conversation stays what is saved
    key(&mut app, KeyCode::Char('('));
    assert_eq!(app.turn_position(), (1, 2));
    assert_eq!(app.session.as_ref().unwrap().output_ids, first.output_ids);
    assert_eq!(app.conversation(), Some(&talk));
    assert!(screen(&app).contains("Turn 1/2"));
    key(&mut app, KeyCode::Char('('));
    assert_eq!(app.turn_position(), (1, 2));
    key(&mut app, KeyCode::Char(')'));
    assert_eq!(app.turn_position(), (2, 2));
    assert_eq!(app.session.as_ref(), Some(&talk));

    // the relevancy view splits the token's relevancy over the parts of the turn
    let mut explained = talk.clone();
    lvlmscope::explain::relevancy::ensure(&loaded.model, &mut explained, &[0], &mut |_| {})
        .unwrap();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, explained, None);
    key(&mut app, KeyCode::Char('2'));
    let parts = app.view.reliance_parts.expect("parts of a later turn");
    let total: f32 = TextPart::ALL.iter().map(|&p| parts.get(p)).sum();
    assert!((total - 1.0).abs() < 1e-4, "{parts:?}");
    assert!(
        parts.earlier_answers > 0.0 && parts.image > 0.0,
        "{parts:?}"
    );
    assert!(screen(&app).contains("earlier answers"));
}
