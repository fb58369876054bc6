//! Faithfulness in the app, through the job-worker seam with fake runners: `f` shows the block
//! and asks the worker for the probability drop of every map of the current token (the
//! attention map as the layer and heads show it, the standard ones, relevancy, causal, random);
//! the numbers come back as a message, are drawn next to the maps (the current one also in the
//! image pane's title, the best one highlighted) and cached per (token, map); moving to another
//! token measures it, a changed map is measured again; errors and Esc stop the automatic
//! computing until `f`.

mod common;

use common::{look, press, run_jobs, NoModel};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crossterm::event::KeyCode;
use lvlmscope::explain::attention::HeadAgg;
use lvlmscope::explain::maps::token_maps;
use lvlmscope::job::{JobOutput, JobProgress, ModelJob};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{CausalHead, CausalParams, CausalResults, CausalToken, Session};
use lvlmscope::tui::{draw, update, App, Cmd, JobRunner, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// The tiny synthetic session with relevancy for every token and a causal result for token 1.
fn session() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    let mut s = synthetic_session(&spec);
    let start = s.manifest.image_span[0];
    let target = s.query_position(1);
    s.manifest.causal = Some(CausalResults {
        params: CausalParams {
            layer: 3,
            ..Default::default()
        },
        tokens: BTreeMap::from([(1, causal_token(start, target, 0.9))]),
    });
    s
}

fn causal_token(start: usize, target: usize, w: f64) -> CausalToken {
    CausalToken {
        target,
        heads: vec![CausalHead {
            head: 0,
            nodes: vec![start + 5, start + 10, target],
            explanation: vec![start + 5, start + 10],
            per_radius: BTreeMap::from([(1, vec![start + 5, start + 10])]),
            importance: 1.0,
            image_weights: BTreeMap::from([(start + 5, w), (start + 10, 0.4)]),
        }],
    }
}

/// A made-up drop per map name, so that the screen can be checked: relevancy.combined is the
/// largest, the random baseline beats the last layer's max.
fn fake_drop(name: &str) -> f32 {
    match name {
        "relevancy.combined" => 0.412,
        "relevancy.decoder" => 0.3,
        "random" => 0.05,
        "attention.last.max" => 0.01,
        "causal" => 0.2,
        _ => 0.125,
    }
}

/// Answers faithfulness jobs with [`fake_drop`]; records the jobs it saw.
struct FakeDrops {
    seen: Arc<Mutex<Vec<ModelJob>>>,
}

impl JobRunner for FakeDrops {
    fn run_job(
        &mut self,
        session: &Session,
        job: &ModelJob,
        _cancel: &AtomicBool,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        assert!(session.attn_gen.is_none(), "the worker gets no attention");
        self.seen.lock().unwrap().push(job.clone());
        let ModelJob::Faithfulness { token, maps, .. } = job else {
            return Err(format!("unexpected job {job:?}"));
        };
        progress(JobProgress::Stage(job.describe()));
        Ok(JobOutput::Faithfulness {
            token: *token,
            original: 0.875,
            drops: maps
                .iter()
                .map(|(n, _)| (n.clone(), fake_drop(n)))
                .collect(),
            images: maps.len() + 1,
            seconds: 0.25,
        })
    }
}

fn text(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(160, 48)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn names(job: &Cmd) -> Vec<String> {
    match job {
        Cmd::ModelJob(_, ModelJob::Faithfulness { maps, .. }) => {
            maps.iter().map(|(n, _)| n.clone()).collect()
        }
        other => panic!("expected a faithfulness job, got {other:?}"),
    }
}

/// The line of the block that names `map`.
fn row<'a>(screen: &'a str, map: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(&format!(" {map} ")) || l.contains(&format!("▶{map} ")))
        .unwrap_or_else(|| panic!("no row {map:?} in\n{screen}"))
}

#[test]
fn f_measures_every_map_of_the_token_and_shows_the_drops() {
    let s = session();
    let mut app = App::with_session(look(), s.clone(), None);
    press(&mut app, KeyCode::Right);
    let cmds = press(&mut app, KeyCode::Char('f'));
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    // layer 1 of 4, mean of heads: the shown attention map first, then the standard ones
    assert_eq!(
        names(&cmds[0]),
        [
            "attention.l1.mean",
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
    let want = token_maps(&s, 1, Some((1, HeadAgg::Mean)), 1).unwrap();
    let Cmd::ModelJob(
        id,
        ModelJob::Faithfulness {
            token,
            maps,
            fraction,
            ..
        },
    ) = &cmds[0]
    else {
        unreachable!()
    };
    assert_eq!((*id, *token, *fraction), (1, 1, 0.2));
    assert_eq!(*maps, want);
    let screen = text(&app);
    assert!(screen.contains("computing faithfulness of token 1… (starting)"));
    assert!(screen.contains("faithfulness · token 1"), "{screen}");
    assert!(row(&screen, "causal").contains('…'));

    let seen = Arc::new(Mutex::new(Vec::new()));
    let after = run_jobs(&mut app, cmds, Box::new(FakeDrops { seen: seen.clone() }));
    assert!(after.is_empty(), "nothing left to measure: {after:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(app.doc.job.is_none());
    let screen = text(&app);
    assert!(
        screen.contains("faithfulness · token 1 \"ball\" · p 0.875 · Δp@20% · 0.25s"),
        "{screen}"
    );
    for (name, _) in &want {
        assert!(
            row(&screen, name).contains(&format!("{:+.3}", fake_drop(name))),
            "{name}: {screen}"
        );
    }
    // the current map is marked and its Δp is in the image pane's title; the best is named
    assert!(row(&screen, "attention.l1.mean").contains("▶attention.l1.mean"));
    assert!(screen.contains("Image · Δp +0.125"), "{screen}");
    assert!(row(&screen, "relevancy.combined").contains("+0.412 best"));
    assert!(!row(&screen, "random").contains("best"));
    assert!(row(&screen, "attention.last.max").contains("+0.010"));
    let fv = app.doc.view.faith.as_ref().unwrap();
    assert_eq!(
        fv.rows
            .iter()
            .filter(|r| r.best)
            .map(|r| &r.name)
            .collect::<Vec<_>>(),
        ["relevancy.combined"]
    );
    assert_eq!(fv.original, Some(0.875));
    assert!(fv.missing.is_empty());
    // the relevancy map shown: its drop goes into the title
    press(&mut app, KeyCode::Char('2'));
    assert!(text(&app).contains("Image · Δp +0.412"));
    press(&mut app, KeyCode::Char('1'));
    // the next token is measured as soon as the cursor gets there (no causal result there)
    let cmds = press(&mut app, KeyCode::Right);
    let next = names(&cmds[0]);
    assert!(
        !next.contains(&"causal".to_string()) && next.len() == 8,
        "{next:?}"
    );
    run_jobs(&mut app, cmds, Box::new(FakeDrops { seen }));
    // back on token 1: cached, nothing asked
    assert!(press(&mut app, KeyCode::Left).is_empty());
    assert!(text(&app).contains("Image · Δp +0.125"));
    // f hides the block; the title keeps the number
    assert!(press(&mut app, KeyCode::Char('f')).is_empty());
    let screen = text(&app);
    assert!(!screen.contains("faithfulness · token"));
    assert!(screen.contains("Image · Δp +0.125"));
}

#[test]
fn a_changed_map_is_measured_again_and_only_it() {
    let s = session();
    let mut app = App::with_session(look(), s.clone(), None);
    press(&mut app, KeyCode::Right);
    let cmds = press(&mut app, KeyCode::Char('f'));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fake = || Box::new(FakeDrops { seen: seen.clone() });
    run_jobs(&mut app, cmds, fake());
    // another layer: only the shown attention map is new
    let cmds = press(&mut app, KeyCode::Char(']'));
    assert_eq!(names(&cmds[0]), ["attention.l2.mean"]);
    run_jobs(&mut app, cmds, fake());
    // the last layer's mean is one of the standard maps: nothing new, and it is current
    assert!(press(&mut app, KeyCode::Char(']')).is_empty());
    let fv = app.doc.view.faith.clone().unwrap();
    let current: Vec<_> = fv.rows.iter().filter(|r| r.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].name, "attention.last.mean");
    // one head of the causal method: its own map
    press(&mut app, KeyCode::Char('3'));
    let cmds = press(&mut app, KeyCode::Char('}'));
    assert_eq!(names(&cmds[0]), ["attention.l3.h1", "causal.h1"]);
    run_jobs(&mut app, cmds, fake());
    assert!(press(&mut app, KeyCode::Char('m')).is_empty());
    // a causal result recomputed with other weights changes the causal map
    let start = s.manifest.image_span[0];
    let params = app.doc.method.causal().params.clone();
    let ct = causal_token(start, s.query_position(1), 0.1);
    let cmds = update(&mut app, Msg::CausalDone(1, params, Ok(ct)));
    assert_eq!(names(&cmds[0]), ["causal"]);
    run_jobs(&mut app, cmds, fake());
    // new relevancy rows change the relevancy maps
    let s2 = app.doc.session.as_mut().unwrap();
    for table in [
        &mut s2.relevancy_llm,
        &mut s2.relevancy_vit,
        &mut s2.relevancy_combined,
    ] {
        let a = table.as_mut().unwrap();
        a.row_mut(&[1])
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32);
    }
    let cmds = press(&mut app, KeyCode::Char('2'));
    assert_eq!(
        names(&cmds[0]),
        [
            "relevancy.decoder",
            "relevancy.vision",
            "relevancy.combined"
        ]
    );
    assert_eq!(seen.lock().unwrap().len(), 4);
}

#[test]
fn a_model_that_cannot_load_is_a_notice_and_f_retries() {
    let mut app = App::with_session(look(), session(), None);
    let cmds = press(&mut app, KeyCode::Char('f'));
    let after = run_jobs(&mut app, cmds, Box::new(NoModel));
    assert!(after.is_empty(), "no automatic retry: {after:?}");
    let n = app.status.notice().cloned().expect("a notice");
    assert!(n.error);
    assert_eq!(
        n.text,
        "faithfulness of token 0 failed: could not load the session's model \"synthetic\": no such folder"
    );
    let screen = text(&app);
    assert!(
        screen.contains("stopped (f retries): could not load the session's model"),
        "{screen}"
    );
    // moving does not retry either
    assert!(press(&mut app, KeyCode::Right).is_empty());
    assert!(app
        .doc
        .view
        .faith
        .as_ref()
        .unwrap()
        .rows
        .iter()
        .all(|r| r.drop.is_none()));
    // f does, for the current token
    let cmds = press(&mut app, KeyCode::Char('f'));
    assert!(matches!(
        cmds.as_slice(),
        [Cmd::ModelJob(_, ModelJob::Faithfulness { token: 1, .. })]
    ));
    assert!(app.doc.method.faith().shown);
}

#[test]
fn esc_cancels_until_f_and_nothing_without_a_session() {
    let mut app = App::with_session(look(), session(), None);
    let cmds = press(&mut app, KeyCode::Char('f'));
    assert_eq!(cmds.len(), 1);
    let cancel = app.doc.job.as_ref().unwrap().cancel.clone();
    assert!(press(&mut app, KeyCode::Esc).is_empty());
    assert!(cancel.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        app.status.notice().unwrap().text,
        "cancelled faithfulness of token 0"
    );
    assert!(press(&mut app, KeyCode::Right).is_empty());
    assert!(text(&app).contains("stopped (f retries): cancelled"));
    assert_eq!(press(&mut app, KeyCode::Char('f')).len(), 1);

    let mut empty = App::new(look());
    assert!(press(&mut empty, KeyCode::Char('f')).is_empty());
    assert_eq!(empty.status.notice().unwrap().text, "no session loaded");
    // the status line and the help name the key
    let mut app = App::with_session(look(), session(), None);
    assert!(text(&app).contains("f faithfulness"));
    press(&mut app, KeyCode::Char('?'));
    assert!(text(&app).contains("faithfulness: Δp of each map"));
}

/// Answers with drops that all read +0.000.
struct Flat;

impl JobRunner for Flat {
    fn run_job(
        &mut self,
        _session: &Session,
        job: &ModelJob,
        _cancel: &AtomicBool,
        _progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        let ModelJob::Faithfulness { token, maps, .. } = job else {
            return Err(format!("unexpected job {job:?}"));
        };
        Ok(JobOutput::Faithfulness {
            token: *token,
            original: 1.0,
            drops: maps
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (n.clone(), 1e-4 * i as f32 - 2e-4))
                .collect(),
            images: 2,
            seconds: 0.01,
        })
    }
}

#[test]
fn no_map_is_best_when_none_changes_the_answer() {
    let mut app = App::with_session(look(), session(), None);
    let cmds = press(&mut app, KeyCode::Char('f'));
    assert!(run_jobs(&mut app, cmds, Box::new(Flat)).is_empty());
    let fv = app.doc.view.faith.as_ref().unwrap();
    assert!(fv.rows.iter().all(|r| r.drop.is_some() && !r.best));
    assert!(!text(&app).contains(" best"));
}
