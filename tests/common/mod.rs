//! Helpers shared by the app's job tests (`tui_relevancy`, `tui_faithfulness`,
//! `tui_interventions`, `tui_turns`).
//! Not every test uses every helper.
#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::explain::knockout::KnockoutResult;
use lvlmscope::explain::lens::{Lens, LensPoint};
use lvlmscope::job::{JobOutput, JobProgress, ModelJob};
use lvlmscope::session::Session;
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::jobs::job_request;
use lvlmscope::tui::worker::spawn_job_worker;
use lvlmscope::tui::{update, App, Cmd, JobRunner, Msg};

/// A job runner that fails as a session opened without its model folder does.
pub struct NoModel;

impl JobRunner for NoModel {
    fn run_job(
        &mut self,
        _session: &Session,
        _job: &ModelJob,
        _cancel: &AtomicBool,
        _progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        Err("could not load the session's model \"synthetic\": no such folder".into())
    }
}

/// The dark theme in true colour.
pub fn look() -> Look {
    Look::new(Theme::dark(), ColorMode::TrueColor)
}

/// Presses `code` (no modifiers) and returns the work the app asks for.
pub fn press(app: &mut App, code: KeyCode) -> Vec<Cmd> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Runs the model jobs among `cmds` on a worker around `runner`, applying every message until
/// each is done; returns the commands the last update asked for.
pub fn run_jobs(app: &mut App, cmds: Vec<Cmd>, runner: Box<dyn JobRunner>) -> Vec<Cmd> {
    let (tx, rx) = channel();
    let worker = spawn_job_worker(runner, tx);
    let mut last = Vec::new();
    for cmd in cmds {
        // A job of the split view's side not focused comes tagged with its session.
        let cmd = match cmd {
            Cmd::ForSession(_, inner) => *inner,
            cmd => cmd,
        };
        let Cmd::ModelJob(id, _) = cmd else {
            panic!("expected a model job, got {cmd:?}")
        };
        assert!(worker.submit(job_request(app, id).expect("the job is pending")));
        loop {
            let msg = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("the worker answers");
            let done = matches!(msg, Msg::JobDone(_));
            last = update(app, msg);
            if done {
                break;
            }
        }
    }
    last
}

/// Answers knockout and lens jobs with made-up numbers.
pub struct FakeInterventions;

impl JobRunner for FakeInterventions {
    fn run_job(
        &mut self,
        session: &Session,
        job: &ModelJob,
        _cancel: &AtomicBool,
        _progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        match job {
            ModelJob::Knockout(r) => Ok(JobOutput::Knockout {
                result: KnockoutResult {
                    token: r.token,
                    token_id: 7,
                    queries: vec![session.query_position(r.token)],
                    keys: vec![3, 4],
                    layers: [*r.layers.start(), *r.layers.end()],
                    p_original: 0.875,
                    p_knockout: 0.125,
                    delta_p: -0.75,
                    greedy_original: 7,
                    greedy_knockout: 9,
                },
                words: vec![(7, "▁purple".into()), (9, "▁red".into())],
            }),
            ModelJob::Lens { token, layer } => {
                let [rows, cols] = session.manifest.model.image_grid;
                let n = rows * cols;
                Ok(JobOutput::Lens {
                    lens: Lens {
                        token: *token,
                        token_id: 7,
                        position: session.query_position(*token),
                        curve: (0..4)
                            .map(|l| LensPoint {
                                layer: l,
                                prob: 0.1 + 0.2 * l as f32,
                                rank: 4 - l,
                                top: if l == 3 { 7 } else { 9 },
                            })
                            .collect(),
                        layer: *layer,
                        grid: [rows, cols],
                        map: (0..n).map(|i| i as f32 / n as f32).collect(),
                        top_ids: vec![9; n],
                        top_probs: vec![0.5; n],
                    },
                    words: vec![(7, "▁purple".into()), (9, "▁red".into())],
                })
            }
            other => Err(format!("unexpected job {other:?}")),
        }
    }
}
