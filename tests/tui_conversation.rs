//! The app's follow-up question (issue 18) on the embedded demo model: `F` opens a one-line
//! prompt (Esc cancels), Enter runs the follow-up on the live-run worker with the real model,
//! the answer streams in and becomes a new turn; `(` and `)` move between the turns; the
//! relevancy view splits a token's relevancy over the image, the question and earlier turns.
//! The worker keeps the model and the conversation's KV cache: a follow-up on a live run (or
//! the second one on a session from a file) runs only its new positions, a cancelled one leaves
//! everything as it was, and the model jobs read the same loaded weights.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::demo::{demo_model_dir, demo_scenes};
use lvlmscope::explain::catalogue::TextPart;
use lvlmscope::generate::{generate, LoadedModel, RunRequest};
use lvlmscope::job::{ModelService, RunSettings, SharedModel};
use lvlmscope::session::Session;
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::worker::spawn_run;
use lvlmscope::tui::{draw, update, App, Cmd, GenerateRunner, LiveRequest, Msg, RunEvent};
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
    assert_eq!(app.doc.turn_position(), (1, 1));

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

    let runner = Arc::new(GenerateRunner::default());
    let (_, streamed) = drive(&mut app, &runner, req, false);
    let talk = app
        .doc
        .session
        .as_ref()
        .cloned()
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
        "the first follow-up on a session from a file runs afresh"
    );
    assert_eq!(app.doc.turn_position(), (2, 2));
    assert!(screen(&app).contains("Turn 2/2"));

    // ( and ) move between the turns; the whole conversation stays what is saved
    key(&mut app, KeyCode::Char('('));
    assert_eq!(app.doc.turn_position(), (1, 2));
    assert_eq!(
        app.doc.session.as_ref().unwrap().output_ids,
        first.output_ids
    );
    assert_eq!(app.doc.conversation(), Some(&talk));
    assert!(screen(&app).contains("Turn 1/2"));
    key(&mut app, KeyCode::Char('('));
    assert_eq!(app.doc.turn_position(), (1, 2));
    key(&mut app, KeyCode::Char(')'));
    assert_eq!(app.doc.turn_position(), (2, 2));
    assert_eq!(app.doc.session.as_ref(), Some(&talk));

    // the relevancy view splits the token's relevancy over the parts of the turn
    let mut explained = talk.clone();
    lvlmscope::explain::relevancy::ensure(&loaded.model, &mut explained, &[0], &mut |_| {})
        .unwrap();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, explained, None);
    key(&mut app, KeyCode::Char('2'));
    let parts = app.doc.view.reliance_parts.expect("parts of a later turn");
    let total: f32 = TextPart::ALL.iter().map(|&p| parts.get(p)).sum();
    assert!((total - 1.0).abs() < 1e-4, "{parts:?}");
    assert!(
        parts.earlier_answers > 0.0 && parts.image > 0.0,
        "{parts:?}"
    );
    assert!(screen(&app).contains("earlier answers"));

    // a second follow-up on the first app's conversation continues from the KV cache the
    // worker kept, with the model it loaded
    let mut app = App::with_session(
        Look::new(Theme::dark(), ColorMode::TrueColor),
        talk.clone(),
        None,
    );
    let (_, talk3) = follow_up(&mut app, &runner, "Where is it?");
    assert_eq!(talk3.num_turns(), 3);
    assert_eq!(
        talk3.current_turn().unwrap().reused,
        talk.num_input() + talk.num_output() - 1
    );
    assert_eq!(runner.loads(), 1);
}

/// Runs `req` on `runner` as the runtime does, feeding every message to the app until the run
/// ends (`cancelled`: with its cancel flag set from the start); the stages it reported and the
/// most tokens shown while it streamed.
fn drive(
    app: &mut App,
    runner: &Arc<GenerateRunner>,
    req: LiveRequest,
    cancelled: bool,
) -> (Vec<String>, usize) {
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(cancelled));
    app.run.cancel = Some(cancel.clone());
    let handle = spawn_run(runner.clone(), req, cancel, tx);
    let mut stages = Vec::new();
    let mut streamed = 0;
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("worker reports");
        if let Msg::Run(RunEvent::Stage(s)) = &msg {
            stages.push(s.clone());
        }
        let done = matches!(msg, Msg::RunDone(_));
        update(app, msg);
        if done {
            break;
        }
        streamed = streamed.max(app.run.tokens.len());
    }
    handle.join().unwrap();
    (stages, streamed)
}

/// `F`, the question, Enter: the follow-up's request.
fn ask(app: &mut App, question: &str) -> LiveRequest {
    key(app, KeyCode::Char('F'));
    type_text(app, question);
    match key(app, KeyCode::Enter).as_slice() {
        [Cmd::StartRun(req)] => req.clone(),
        other => panic!("expected one StartRun, got {other:?}"),
    }
}

/// Asks `question` and runs it to its end; the stages and the conversation after it.
fn follow_up(
    app: &mut App,
    runner: &Arc<GenerateRunner>,
    question: &str,
) -> (Vec<String>, Session) {
    let req = ask(app, question);
    let (stages, _) = drive(app, runner, req, false);
    let talk = app.doc.conversation().cloned().expect("a conversation");
    (stages, talk)
}

#[test]
fn follow_ups_on_a_live_run_run_only_their_new_positions() {
    let dir = demo_model_dir().expect("the demo model is written to the cache");
    let scenes = lvlmscope::demo::demo_scenes_dir().expect("the demo scenes are written");
    let scene = &demo_scenes()[0];
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::new(look);
    let shared = SharedModel::default();
    let runner = Arc::new(GenerateRunner::new(shared.clone(), RunSettings::default()));
    let req = LiveRequest {
        model: dir.to_string_lossy().to_string(),
        image: scenes.join(format!("{}.png", scene.name)),
        prompt: scene.question.clone(),
        max_new_tokens: 6,
        history: None,
    };
    drive(&mut app, &runner, req, false);
    let first = app
        .doc
        .session
        .as_ref()
        .cloned()
        .expect("the live run's session");
    assert_eq!(first.manifest.generation.dtype.as_deref(), Some("f32"));
    assert_eq!(first.manifest.generation.device.as_deref(), Some("cpu"));
    let cached = first.num_input() + first.num_output() - 1;
    assert_eq!(runner.cached(), cached);

    let (stages, talk) = follow_up(&mut app, &runner, "What colour is it?");
    assert_eq!(talk.num_turns(), 2);
    let info = talk.current_turn().unwrap();
    assert_eq!(
        info.reused, cached,
        "the follow-up continues from the cache"
    );
    let run = talk.manifest.timings["prefill_positions"];
    assert_eq!(run, (talk.num_input() - cached) as f64);
    let shown = format!("prefill: {run} new positions, {cached} from the cache");
    assert!(stages.contains(&shown), "{stages:?}");
    assert_eq!(runner.loads(), 1, "the follow-up loads nothing");

    // a cancelled follow-up leaves the conversation as it was, the cache cut back to it
    let req = ask(&mut app, "Why?");
    drive(&mut app, &runner, req, true);
    assert!(app.status.notice().is_some_and(|n| n.error));
    assert!(
        app.doc.conversation() == Some(&talk),
        "the cancel changed the conversation"
    );
    let cached = talk.num_input() + talk.num_output() - 1;
    assert_eq!(runner.cached(), cached);

    let (_, third) = follow_up(&mut app, &runner, "Where is it?");
    assert_eq!(third.num_turns(), 3);
    assert_eq!(third.current_turn().unwrap().reused, cached);
    let second = third.turn(1).unwrap();
    assert!(second.input_ids == talk.input_ids && second.output_ids == talk.output_ids);

    // the same turn on a worker without the conversation: loaded, encoded and run afresh
    let fresh = Arc::new(GenerateRunner::default());
    let mut other = App::with_session(
        Look::new(Theme::dark(), ColorMode::TrueColor),
        first.clone(),
        None,
    );
    let (_, afresh) = follow_up(&mut other, &fresh, "What colour is it?");
    assert_eq!(afresh.current_turn().unwrap().reused, 0);
    assert_eq!(
        afresh.manifest.timings["prefill_positions"],
        afresh.num_input() as f64
    );
    assert_eq!(afresh.output_ids, talk.output_ids);
    let seconds = |s: &Session, keys: &[&str]| -> f64 {
        keys.iter().filter_map(|k| s.manifest.timings.get(*k)).sum()
    };
    eprintln!(
        "demo turn 2: cache {} positions, {:.4} s prefill + decode; afresh {} positions, {:.4} s \
         (+ {:.4} s loading the model)",
        run,
        seconds(&talk, &["prefill", "decode"]),
        afresh.num_input(),
        seconds(&afresh, &["prefill", "decode"]),
        seconds(&afresh, &["load_model"]),
    );

    // model jobs on the conversation read the weights the live worker loaded
    let mut service = ModelService::shared(shared, RunSettings::default());
    let mut explained = third.clone();
    service
        .add_relevancy(&mut explained, &[0], &mut |_| {})
        .unwrap();
    assert_eq!(service.loads(), 0);

    // a follow-up on another session drops the conversation and resumes that one, with the
    // model kept
    let mut other = App::with_session(
        Look::new(Theme::dark(), ColorMode::TrueColor),
        first.clone(),
        None,
    );
    let (_, again) = follow_up(&mut other, &runner, "What colour is it?");
    assert_eq!(again.current_turn().unwrap().reused, 0);
    assert_eq!(runner.cached(), again.num_input() + again.num_output() - 1);
    // and a new run drops it for its own
    let req = LiveRequest {
        model: dir.to_string_lossy().to_string(),
        image: scenes.join(format!("{}.png", demo_scenes()[1].name)),
        prompt: demo_scenes()[1].question.clone(),
        max_new_tokens: 6,
        history: None,
    };
    drive(&mut app, &runner, req, false);
    let new = app
        .doc
        .session
        .as_ref()
        .cloned()
        .expect("the new run's session");
    assert_eq!(new.num_turns(), 1);
    assert_eq!(runner.cached(), new.num_input() + new.num_output() - 1);
    assert_eq!(runner.loads(), 1);
}

#[test]
fn a_follow_up_past_the_context_is_refused_before_anything_runs() {
    let (_, first) = demo_session();
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, first.clone(), None);
    let runner = Arc::new(GenerateRunner::default());
    let req = ask(&mut app, &"Why is it there? ".repeat(200));
    let (stages, streamed) = drive(&mut app, &runner, req, false);
    let notice = app.status.notice().cloned().expect("a notice");
    assert!(
        notice.error && notice.text.contains("context"),
        "{notice:?}"
    );
    assert!(!notice.text.contains('\n'), "{notice:?}");
    assert_eq!(streamed, 0);
    assert!(
        !stages
            .iter()
            .any(|s| s == "encoding image" || s.starts_with("prefill")),
        "{stages:?}"
    );
    assert_eq!(runner.cached(), 0);
    assert!(app.doc.conversation() == Some(&first));
}
