//! Model jobs in the compare split view: in linked mode `r`, `f` and the demo's automatic
//! requests ask for both sides' tokens, the job worker runs the two jobs one after the other
//! and each result lands on the side whose session it was asked for, the focused side left
//! as it was (a causal result by the session epoch it carries); Esc cancels both. Closing B
//! while its job or live run is under way cancels them and drops their results with a notice
//! instead of applying them to A.

mod common;
mod compare_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::press;
use compare_support::{cursors, open, screen, session_b};
use crossterm::event::KeyCode;
use lvlmscope::explain::relevancy::RelevancyMaps;
use lvlmscope::job::{JobOutput, JobProgress, ModelJob};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::Session;
use lvlmscope::tui::compare::Which;
use lvlmscope::tui::jobs::job_request;
use lvlmscope::tui::msg::JobDone;
use lvlmscope::tui::worker::spawn_job_worker;
use lvlmscope::tui::{update, App, Cmd, JobRunner, Msg};

/// Sessions A and B with relevancy rows for every token, and the same without them (what the
/// app opens).
fn sessions() -> [(Session, Session); 2] {
    let rows = |seed| {
        synthetic_session(&SyntheticSpec {
            seed,
            relevancy: true,
            ..SyntheticSpec::tiny()
        })
    };
    let a = rows(SyntheticSpec::tiny().seed);
    let mut b = session_b(&a);
    let b_rows = rows(8);
    b.relevancy_llm = b_rows.relevancy_llm;
    b.relevancy_vit = b_rows.relevancy_vit;
    b.relevancy_combined = b_rows.relevancy_combined;
    b.manifest.relevancy_tokens = b_rows.manifest.relevancy_tokens;
    [a, b].map(|full| {
        let mut s = full.clone();
        s.relevancy_llm = None;
        s.relevancy_vit = None;
        s.relevancy_combined = None;
        s.manifest.relevancy_tokens.clear();
        (full, s)
    })
}

/// Answers relevancy jobs with the rows of the full session of the same prompt; records the
/// prompt of every job it ran, in order.
struct Rows {
    full: Vec<Session>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl JobRunner for Rows {
    fn run_job(
        &mut self,
        session: &Session,
        job: &ModelJob,
        _cancel: &AtomicBool,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        let ModelJob::Relevancy { tokens } = job else {
            return Err(format!("unexpected job {job:?}"));
        };
        let prompt = &session.manifest.prompt;
        self.seen.lock().unwrap().push(prompt.clone());
        progress(JobProgress::Stage("relevancy".into()));
        let full = self
            .full
            .iter()
            .find(|s| &s.manifest.prompt == prompt)
            .expect("a known session");
        let rows = |a: &Option<lvlmscope::session::Array>| {
            let a = a.as_ref().unwrap();
            tokens.iter().map(|&t| a.row(&[t]).to_vec()).collect()
        };
        Ok(JobOutput::Relevancy(RelevancyMaps {
            tokens: tokens.clone(),
            llm: rows(&full.relevancy_llm),
            vit: rows(&full.relevancy_vit),
            combined: rows(&full.relevancy_combined),
            seconds: 0.125,
        }))
    }
}

/// The first line of `screen` holding `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} in\n{screen}"))
}

/// The prompt of side `w`'s session.
fn prompt_of(app: &App, w: Which) -> String {
    let c = app.compare.as_ref().expect("split view open");
    let (a, b) = c.sessions(app);
    let s = if w == Which::A { a } else { b };
    s.unwrap().manifest.prompt.clone()
}

/// The tokens side `w`'s session holds relevancy for.
fn relevancy_of(app: &App, w: Which) -> Vec<usize> {
    let c = app.compare.as_ref().expect("split view open");
    let (a, b) = c.sessions(app);
    let s = if w == Which::A { a } else { b };
    s.unwrap().manifest.relevancy_tokens.clone()
}

/// The model job of `cmd`, unwrapped from a side's tag; the tag's epoch, if any.
fn job_of(cmd: &Cmd) -> (Option<u64>, u64, &ModelJob) {
    match cmd {
        Cmd::ModelJob(id, job) => (None, *id, job),
        Cmd::ForSession(epoch, inner) => match &**inner {
            Cmd::ModelJob(id, job) => (Some(*epoch), *id, job),
            other => panic!("expected a model job, got {other:?}"),
        },
        other => panic!("expected a model job, got {other:?}"),
    }
}

#[test]
fn linked_r_asks_for_both_sides_and_each_result_lands_on_its_side() {
    let dir = tempfile::tempdir().unwrap();
    let [(a_full, a), (b_full, b)] = sessions();
    let mut app = open(dir.path(), &a, &b);
    press(&mut app, KeyCode::Right);
    assert_eq!(cursors(&app), [1, 2], "A's \"ball\" is B's token 2");
    assert!(
        press(&mut app, KeyCode::Char('2')).is_empty(),
        "not the demo"
    );
    let cmds = press(&mut app, KeyCode::Char('r'));
    let [mine, theirs] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    let (None, id_a, ModelJob::Relevancy { tokens }) = job_of(mine) else {
        panic!("{mine:?}")
    };
    assert_eq!(tokens, &[1]);
    let (Some(epoch_b), id_b, ModelJob::Relevancy { tokens }) = job_of(theirs) else {
        panic!("{theirs:?}")
    };
    assert_eq!(tokens, &[2]);
    let c = app.compare.as_ref().unwrap();
    assert_eq!(epoch_b, c.other.epoch);
    assert!(
        app.doc.job.is_some() && c.other.job.is_some(),
        "each side its job"
    );
    let s = screen(&app, 170, 48);
    let b_pane = line_with(&s, "computing relevancy of token 2…");
    assert!(
        b_pane.contains("computing relevancy of token 1…"),
        "A's pane on the same row"
    );
    let (req_a, req_b) = (
        job_request(&app, id_a).unwrap(),
        job_request(&app, id_b).unwrap(),
    );
    assert_eq!(req_a.session.manifest.prompt, a.manifest.prompt);
    assert_eq!(
        (req_b.epoch, &req_b.session.manifest.prompt),
        (epoch_b, &b.manifest.prompt)
    );
    // both through one worker, which runs them one after the other
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rows = Rows {
        full: vec![a_full, b_full],
        seen: seen.clone(),
    };
    let (tx, rx) = channel();
    let worker = spawn_job_worker(Box::new(rows), tx);
    assert!(worker.submit(req_a) && worker.submit(req_b));
    let mut done = 0;
    while done < 2 {
        let msg = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let finished = matches!(&msg, Msg::JobDone(_));
        update(&mut app, msg);
        if finished {
            done += 1;
            if done == 1 {
                assert_eq!(relevancy_of(&app, Which::A), [1]);
                assert!(relevancy_of(&app, Which::B).is_empty());
            }
        }
    }
    let order = seen.lock().unwrap().clone();
    assert_eq!(
        order,
        [a.manifest.prompt.clone(), b.manifest.prompt.clone()]
    );
    // B's result is B's; A, still focused, kept what it had
    assert_eq!(app.compare.as_ref().unwrap().focused, Which::A);
    assert_eq!(prompt_of(&app, Which::A), a.manifest.prompt);
    assert_eq!(relevancy_of(&app, Which::A), [1]);
    assert_eq!(relevancy_of(&app, Which::B), [2]);
    assert!(app.doc.job.is_none() && app.compare.as_ref().unwrap().other.job.is_none());
    assert!(app.doc.modified && app.compare.as_ref().unwrap().other.modified);
    let c = app.compare.as_ref().unwrap();
    let compared = c.result.as_ref().unwrap();
    assert!(compared.maps.is_ok(), "{:?}", compared.maps);
    // asking again: both sides hold their token's rows, nothing to compute
    assert!(press(&mut app, KeyCode::Char('r')).is_empty());
}

#[test]
fn linked_f_and_the_demo_ask_for_both_sides_and_esc_cancels_both() {
    let dir = tempfile::tempdir().unwrap();
    let [(_, a), (_, mut b)] = sessions();
    let hash = lvlmscope::demo::demo_model_hash();
    b.manifest.model.path = dir
        .path()
        .join(format!("demo-{hash}"))
        .display()
        .to_string();
    let mut app = open(dir.path(), &a, &b);
    // A is not the demo, B is: choosing relevancy asks for B's token in the background
    let cmds = press(&mut app, KeyCode::Char('2'));
    let [cmd] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    let (Some(epoch), id, ModelJob::Relevancy { tokens }) = job_of(cmd) else {
        panic!("{cmd:?}")
    };
    assert_eq!(tokens, &[0]);
    assert_eq!(epoch, app.compare.as_ref().unwrap().other.epoch);
    assert_eq!(
        job_request(&app, id).unwrap().session.manifest.prompt,
        b.manifest.prompt
    );
    // w while it runs: B's job is already asked for, nothing new
    assert!(press(&mut app, KeyCode::Char('w')).is_empty());
    assert!(app.doc.job.is_some());
    press(&mut app, KeyCode::Char('w'));
    // Esc on A, which has no job: B's is cancelled
    let cancel = job_request(&app, id).unwrap().cancel;
    press(&mut app, KeyCode::Esc);
    assert!(cancel.load(Ordering::SeqCst));
    assert!(app.compare.as_ref().unwrap().other.job.is_none());
    // f shows the faithfulness block on both sides; each measures its own token
    press(&mut app, KeyCode::Char('1'));
    let cmds = press(&mut app, KeyCode::Char('f'));
    let [mine, theirs] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    let (None, id_a, ModelJob::Faithfulness { .. }) = job_of(mine) else {
        panic!("{mine:?}")
    };
    let (Some(_), id_b, ModelJob::Faithfulness { .. }) = job_of(theirs) else {
        panic!("{theirs:?}")
    };
    let c = app.compare.as_ref().unwrap();
    assert!(app.doc.method.faith().shown && c.other.method.faith().shown);
    assert_eq!(
        job_request(&app, id_b).unwrap().session.manifest.prompt,
        b.manifest.prompt
    );
    // Esc cancels both
    let cancels = [id_a, id_b].map(|id| job_request(&app, id).unwrap().cancel);
    press(&mut app, KeyCode::Esc);
    assert!(cancels.iter().all(|c| c.load(Ordering::SeqCst)));
    let c = app.compare.as_ref().unwrap();
    assert!(app.doc.job.is_none() && c.other.job.is_none());
    assert!(c.other.method.faith().halted.is_some());
}

#[test]
fn closing_b_drops_its_job_live_run_and_save_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let [(a_full, a), (b_full, b)] = sessions();
    let mut app = open(dir.path(), &a, &b);
    // B takes the keys and asks for relevancy: A's token is asked for too (linked)
    press(&mut app, KeyCode::Char('w'));
    press(&mut app, KeyCode::Char('2'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    let [mine, theirs] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    let (None, id_b, job_b) = job_of(mine) else {
        panic!("{mine:?}")
    };
    let (Some(_), id_a, job_a) = job_of(theirs) else {
        panic!("{theirs:?}")
    };
    let (req_b, req_a) = (
        job_request(&app, id_b).unwrap(),
        job_request(&app, id_a).unwrap(),
    );
    assert_eq!(req_b.session.manifest.prompt, b.manifest.prompt);
    // and a follow-up question, a live run on B's conversation
    press(&mut app, KeyCode::Char('F'));
    for ch in "Why?".chars() {
        press(&mut app, KeyCode::Char(ch));
    }
    let cmds = press(&mut app, KeyCode::Enter);
    assert!(matches!(cmds.as_slice(), [Cmd::StartRun(_)]), "{cmds:?}");
    assert!(app.run.active);
    let run_cancel = Arc::new(AtomicBool::new(false));
    app.run.cancel = Some(run_cancel.clone());
    // and a save of B
    let cmds = press(&mut app, KeyCode::Char('s'));
    let [Cmd::Save(b_path)] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    assert!(b_path.ends_with("b.session"));
    let b_path = b_path.clone();
    // X: A stays with its job; B's job and run are cancelled
    press(&mut app, KeyCode::Char('X'));
    assert!(app.compare.is_none());
    let notice = app.status.notice().unwrap().text.clone();
    assert!(
        notice.contains("cancelled") && notice.contains("live run"),
        "{notice}"
    );
    assert_eq!(notice.lines().count(), 1);
    assert!(req_b.cancel.load(Ordering::SeqCst) && run_cancel.load(Ordering::SeqCst));
    assert!(!req_a.cancel.load(Ordering::SeqCst));
    assert_eq!(app.doc.job.as_ref().map(|j| j.id), Some(id_a));
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.prompt,
        a.manifest.prompt
    );
    // B's results come back: dropped, each with a notice, A untouched
    let mut rows = Rows {
        full: vec![a_full, b_full],
        seen: Default::default(),
    };
    let mut answer = |req: &lvlmscope::tui::worker::JobRequest, job: &ModelJob| {
        let r = rows.run_job(&req.session, job, &AtomicBool::new(false), &mut |_| {});
        Msg::JobDone(JobDone {
            id: req.id,
            epoch: req.epoch,
            job: job.clone(),
            result: r,
        })
    };
    update(&mut app, answer(&req_b, job_b));
    let notice = app.status.notice().unwrap().text.clone();
    assert!(
        notice.starts_with("dropped relevancy") && notice.ends_with("B is closed"),
        "{notice}"
    );
    assert!(app
        .doc
        .session
        .as_ref()
        .unwrap()
        .manifest
        .relevancy_tokens
        .is_empty());
    assert!(!app.doc.modified);
    let talk = {
        let mut s = b.clone();
        s.manifest.prompt = "Why?".into();
        s
    };
    update(&mut app, Msg::RunDone(Ok(Box::new(talk))));
    assert!(!app.run.active);
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.prompt,
        a.manifest.prompt
    );
    let notice = app.status.notice().unwrap().text.clone();
    assert_eq!(notice, "dropped the live run asked on B: B is closed");
    update(&mut app, Msg::Saved(Ok(b_path.clone())));
    let notice = app.status.notice().unwrap().text.clone();
    assert_eq!(
        notice,
        format!("saved B's session to {} (B is closed)", b_path.display())
    );
    assert!(app
        .doc
        .session_path
        .as_ref()
        .unwrap()
        .ends_with("a.session"));
    // A's own job still lands on A
    update(&mut app, answer(&req_a, job_a));
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.relevancy_tokens,
        [0]
    );
    assert!(app.doc.job.is_none());
}

#[test]
fn the_demos_causal_result_for_the_other_side_lands_there_by_its_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let [(_, a), (_, mut b)] = sessions();
    let hash = lvlmscope::demo::demo_model_hash();
    b.manifest.model.path = dir
        .path()
        .join(format!("demo-{hash}"))
        .display()
        .to_string();
    let mut app = open(dir.path(), &a, &b);
    // choosing causal on A (not the demo) asks for B's token 0 in the background
    let cmds = press(&mut app, KeyCode::Char('3'));
    let epoch = app.compare.as_ref().unwrap().other.epoch;
    let [Cmd::ForSession(e, inner)] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    let Cmd::ComputeCausal(0, params) = &**inner else {
        panic!("{inner:?}")
    };
    assert_eq!(*e, epoch);
    let (_, shown_b) = app.compare.as_ref().unwrap().sessions(&app);
    let ct = lvlmscope::explain::causal::compute_token(shown_b.unwrap(), 0, params).unwrap();
    let done = Msg::CausalDone(0, params.clone(), Ok(ct.clone()));
    update(&mut app, Msg::ForSession(epoch, Box::new(done)));
    let causal = |s: Option<&Session>| s.and_then(|s| s.manifest.causal.clone());
    let (on_a, on_b) = app.compare.as_ref().unwrap().sessions(&app);
    assert!(causal(on_a).is_none(), "A is left as it was");
    assert_eq!(causal(on_b).unwrap().tokens.get(&0), Some(&ct));
    assert_eq!(app.compare.as_ref().unwrap().focused, Which::A);
    // a result for a session no side shows any more is dropped
    let stale = Msg::CausalDone(1, params.clone(), Ok(ct));
    update(&mut app, Msg::ForSession(epoch + 7, Box::new(stale)));
    let (on_a, on_b) = app.compare.as_ref().unwrap().sessions(&app);
    assert!(causal(on_a).is_none());
    assert_eq!(causal(on_b).unwrap().tokens.len(), 1);
}
