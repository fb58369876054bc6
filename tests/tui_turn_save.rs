//! Results computed in the app on an earlier turn are saved (issue 18): `s` writes what the app
//! keeps per turn into the file's per-turn fields, and `(` on the reopened file shows them.

mod common;

use std::sync::atomic::AtomicBool;

use common::{look, press, run_jobs};
use crossterm::event::KeyCode;
use lvlmscope::explain::catalogue::{self, MapId, RelevancySource};
use lvlmscope::explain::relevancy::views::Normalization;
use lvlmscope::explain::relevancy::RelevancyMaps;
use lvlmscope::job::{JobOutput, JobProgress, ModelJob};
use lvlmscope::session::synthetic::{second_turn, synthetic_session, SyntheticSpec};
use lvlmscope::session::{self, Session};
use lvlmscope::tui::{App, Cmd, JobRunner};

/// The tiny synthetic session as the second turn of a conversation; turn 1 holds no
/// relevancy.
fn conversation() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    second_turn(synthetic_session(&spec), 2, 2)
}

/// Answers relevancy jobs with rows made from the token and position, sized by the session.
struct MadeUpRows;

impl JobRunner for MadeUpRows {
    fn run_job(
        &mut self,
        session: &Session,
        job: &ModelJob,
        _cancel: &AtomicBool,
        _progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        let ModelJob::Relevancy { tokens } = job else {
            return Err(format!("unexpected job {job:?}"));
        };
        let row = |t: usize, len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7 + t * 3) % 11) as f32 / 10.0)
                .collect()
        };
        let cells = session.cell_positions().len();
        Ok(JobOutput::Relevancy(RelevancyMaps {
            tokens: tokens.clone(),
            llm: tokens
                .iter()
                .map(|&t| row(t, session.num_positions()))
                .collect(),
            vit: tokens.iter().map(|&t| row(t + 1, cells)).collect(),
            combined: tokens.iter().map(|&t| row(t + 2, cells)).collect(),
            seconds: 0.1,
        }))
    }
}

fn combined() -> MapId {
    MapId::relevancy(RelevancySource::Combined, Normalization::SelfRemoved)
}

/// What `s` asks the runtime to write, written as the runtime does.
fn save(app: &mut App) -> std::path::PathBuf {
    let cmds = press(app, KeyCode::Char('s'));
    let [Cmd::Save(path)] = cmds.as_slice() else {
        panic!("expected a save, got {cmds:?}")
    };
    let s = app.saved_conversation().expect("a conversation");
    session::save(&s, path, session::AttentionDtype::F16).unwrap();
    path.clone()
}

fn reopen(path: &std::path::Path) -> App {
    App::with_session(look(), session::load(path).unwrap(), Some(path.into()))
}

#[test]
fn relevancy_on_an_earlier_turn_is_saved_and_shown_again_on_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talk.session");
    let mut app = App::with_session(look(), conversation(), Some(path.clone()));
    press(&mut app, KeyCode::Char('('));
    assert_eq!(app.doc.turn_position(), (1, 2));
    press(&mut app, KeyCode::Char('2'));
    assert!(!catalogue::available(
        app.doc.session.as_ref().unwrap(),
        0,
        &combined()
    ));
    let cmds = press(&mut app, KeyCode::Char('r'));
    run_jobs(&mut app, cmds, Box::new(MadeUpRows));
    let computed = app.doc.session.as_ref().cloned().unwrap();
    assert!(catalogue::available(&computed, 0, &combined()));
    // saved while turn 2 is shown (turn 1's rows kept in the app)
    press(&mut app, KeyCode::Char(')'));
    assert_eq!(app.doc.turn_position(), (2, 2));
    let path = save(&mut app);
    let mut again = reopen(&path);
    assert_eq!(again.doc.turn_position(), (2, 2));
    assert!(again.doc.kept.is_empty());
    press(&mut again, KeyCode::Char('('));
    assert_eq!(again.doc.turn_position(), (1, 2));
    let shown = again.doc.session.as_ref().unwrap();
    assert!(catalogue::available(shown, 0, &combined()));
    assert_eq!(shown.manifest.relevancy_tokens, vec![0]);
    assert_eq!(shown.relevancy_combined, computed.relevancy_combined);
    assert_eq!(shown.relevancy_llm, computed.relevancy_llm);
    press(&mut again, KeyCode::Char('2'));
    assert!(again.doc.view.map.is_some(), "the saved relevancy is drawn");
    // the last turn's own results are saved as before
    let file = session::load(&path).unwrap();
    assert_eq!(file.relevancy_llm, conversation().relevancy_llm);
    assert_eq!(
        file.manifest.relevancy_tokens,
        conversation().manifest.relevancy_tokens
    );
}

#[test]
fn saving_while_an_earlier_turn_is_shown_saves_that_turn_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talk.session");
    let mut app = App::with_session(look(), conversation(), Some(path.clone()));
    press(&mut app, KeyCode::Char('('));
    press(&mut app, KeyCode::Char('2'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    run_jobs(&mut app, cmds, Box::new(MadeUpRows));
    let path = save(&mut app);
    let file = session::load(&path).unwrap();
    let first = file.turn(0).unwrap();
    assert_eq!(first.manifest.relevancy_tokens, vec![0]);
    assert_eq!(
        first.relevancy_combined,
        app.doc.session.as_ref().unwrap().relevancy_combined
    );
    // the file's standard fields are still the last turn's
    assert_eq!(file.num_turns(), 2);
    assert_eq!(file.output_ids, conversation().output_ids);
    // a turn with nothing computed saves nothing of its own
    let mut fresh = App::with_session(look(), conversation(), Some(path.clone()));
    press(&mut fresh, KeyCode::Char('('));
    let path = save(&mut fresh);
    let file = session::load(&path).unwrap();
    assert!(file.turns[0].relevancy_llm.is_none());
    assert!(file.manifest.turns[0].relevancy_tokens.is_empty());
}
