//! Relevancy on demand in the app, through the job-worker seam with fake runners: `r` asks for
//! the selected token, the rows come back as a message and are stored in the session, the
//! relevancy pane draws the text bars and the answer's reliance; errors are notices, Esc
//! cancels, `N` switches the normalisation exactly as `views::prepare_row` says.

mod common;

use common::{look, press, NoModel};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossterm::event::KeyCode;
use lvlmscope::explain::relevancy::views::{self, Normalization};
use lvlmscope::explain::relevancy::RelevancyMaps;
use lvlmscope::job::{JobOutput, JobProgress, ModelJob};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::Session;
use lvlmscope::tui::app::RelSource;
use lvlmscope::tui::jobs::job_request;
use lvlmscope::tui::worker::{spawn_job_worker, JobDone};
use lvlmscope::tui::{draw, update, App, Cmd, JobRunner, Msg};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;

/// The tiny synthetic session with relevancy rows shaped like real ones: `R = I + …`, so the
/// query position carries the identity's 1 and the rest sums to 3 (the residual normalisation
/// then divides by 3).
fn with_relevancy() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    let mut s = synthetic_session(&spec);
    let n = s.num_input();
    let llm = s.relevancy_llm.as_mut().unwrap();
    for t in 0..llm.shape[0] {
        let row = llm.row_mut(&[t]);
        let q = n - 1 + t;
        let sum: f32 = row
            .iter()
            .enumerate()
            .filter(|(p, _)| *p != q)
            .map(|(_, v)| v)
            .sum();
        for (p, v) in row.iter_mut().enumerate() {
            *v = if p == q { 1.0 } else { 3.0 * *v / sum };
        }
    }
    s
}

/// The same session without any relevancy.
fn without_relevancy() -> Session {
    let mut s = with_relevancy();
    s.relevancy_llm = None;
    s.relevancy_vit = None;
    s.relevancy_combined = None;
    s.manifest.relevancy_tokens.clear();
    s
}

/// Answers relevancy jobs with the rows of [`with_relevancy`]; records the jobs it saw.
struct FakeRows {
    full: Session,
    seen: Arc<Mutex<Vec<ModelJob>>>,
}

impl JobRunner for FakeRows {
    fn run_job(
        &mut self,
        session: &Session,
        job: &ModelJob,
        _cancel: &AtomicBool,
        progress: &mut dyn FnMut(JobProgress),
    ) -> Result<JobOutput, String> {
        assert!(
            session.attn_gen.is_none(),
            "the worker gets the session without attention"
        );
        assert_eq!(session.output_ids, self.full.output_ids);
        self.seen.lock().unwrap().push(job.clone());
        progress(JobProgress::Stage("loading model".into()));
        progress(JobProgress::Fraction(0.5));
        let ModelJob::Relevancy { tokens } = job else {
            return Err(format!("unexpected job {job:?}"));
        };
        let row = |a: &Option<lvlmscope::session::Array>, t: usize| {
            a.as_ref().unwrap().row(&[t]).to_vec()
        };
        Ok(JobOutput::Relevancy(RelevancyMaps {
            tokens: tokens.clone(),
            llm: tokens
                .iter()
                .map(|&t| row(&self.full.relevancy_llm, t))
                .collect(),
            vit: tokens
                .iter()
                .map(|&t| row(&self.full.relevancy_vit, t))
                .collect(),
            combined: tokens
                .iter()
                .map(|&t| row(&self.full.relevancy_combined, t))
                .collect(),
            seconds: 0.25,
        }))
    }
}

fn frame(app: &App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    t.backend().buffer().clone()
}

fn lines(buf: &Buffer) -> Vec<String> {
    let a = buf.area;
    (0..a.height)
        .map(|y| {
            (0..a.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect()
        })
        .collect()
}

fn text(app: &App) -> String {
    lines(&frame(app, 160, 48)).join("\n")
}

/// Runs the commands on a job worker around `runner` and applies every message until the
/// job is done; returns how many progress messages came.
fn run_jobs(app: &mut App, cmds: Vec<Cmd>, runner: Box<dyn JobRunner>) -> usize {
    let (tx, rx) = channel();
    let worker = spawn_job_worker(runner, tx);
    for cmd in cmds {
        let Cmd::ModelJob(id, _) = cmd else {
            panic!("expected a model job, got {cmd:?}")
        };
        assert!(worker.submit(job_request(app, id).expect("the job is pending")));
    }
    let mut progress = 0;
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker answers");
        let done = matches!(msg, Msg::JobDone(_));
        progress += usize::from(matches!(msg, Msg::Job(..)));
        update(app, msg);
        if done {
            return progress;
        }
    }
}

/// The bar value printed after the bar of the row labelled `label` in the method pane.
fn bar_value(screen: &str, label: &str) -> f32 {
    let line = screen
        .lines()
        .find(|l| l.contains(&format!("│{label} ")) || l.contains(&format!(" {label} ")))
        .unwrap_or_else(|| panic!("no bar {label:?} in\n{screen}"));
    let after = &line[line.find(label).unwrap() + label.len()..];
    after
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter_map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != '-')
                .parse::<f32>()
                .ok()
        })
        .find(|_| true)
        .unwrap_or_else(|| panic!("no value after {label:?} in {line:?}"))
}

#[test]
fn r_computes_the_token_on_the_worker_and_the_pane_shows_its_bars() {
    let full = with_relevancy();
    let mut app = App::with_session(look(), without_relevancy(), None);
    press(&mut app, KeyCode::Char('2'));
    assert!(text(&app).contains("no relevancy for token 0 in this session: press r"));
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Right);
    let cmds = press(&mut app, KeyCode::Char('r'));
    let job = ModelJob::Relevancy { tokens: vec![2] };
    assert_eq!(cmds, vec![Cmd::ModelJob(1, job.clone())]);
    assert!(text(&app).contains("computing relevancy of token 2… (starting)"));
    // a second r while the job runs is refused
    assert!(press(&mut app, KeyCode::Char('r')).is_empty());
    assert!(app
        .status
        .notice()
        .unwrap()
        .text
        .contains("still being computed"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let runner = FakeRows {
        full: full.clone(),
        seen: seen.clone(),
    };
    let progress = run_jobs(&mut app, cmds, Box::new(runner));
    assert_eq!(progress, 2);
    assert_eq!(*seen.lock().unwrap(), vec![job]);
    assert!(app.doc.job.is_none());
    let s = app.doc.session.as_ref().unwrap();
    assert_eq!(s.manifest.relevancy_tokens, vec![2]);
    let row = |a: &Option<lvlmscope::session::Array>| a.as_ref().unwrap().row(&[2]).to_vec();
    assert_eq!(row(&s.relevancy_llm), row(&full.relevancy_llm));
    assert_eq!(row(&s.relevancy_combined), row(&full.relevancy_combined));
    assert!(app.doc.modified);
    let screen = text(&app);
    assert!(
        screen.contains("relevancy of token 2 computed in 0.25s"),
        "{screen}"
    );
    assert!(screen.contains("unsaved results"));
    // the image map is the combined row; the bars are the words of the llm row
    let map = app.doc.view.map.as_ref().expect("a map");
    assert_eq!(map.values, row(&full.relevancy_combined));
    let q = s.query_position(2);
    let prepared = views::prepare_row(&row(&full.relevancy_llm), q, Normalization::SelfRemoved);
    let want = views::text_relevancy(&prepared, &s.manifest.tokens.input, s.image_range(), q, 12);
    assert!(!want.words.is_empty());
    assert!((bar_value(&screen, "image (max)") - want.image_max).abs() < 5e-5);
    let top = &want.words[0];
    assert!(
        (bar_value(&screen, &top.text) - top.value).abs() < 5e-5,
        "{screen}"
    );
    // token 2 is now cached: r asks for nothing
    assert!(press(&mut app, KeyCode::Char('r')).is_empty());
    assert!(app
        .status
        .notice()
        .unwrap()
        .text
        .contains("already holds relevancy of token 2"));
}

#[test]
fn a_model_that_cannot_load_is_a_notice() {
    let mut app = App::with_session(look(), without_relevancy(), None);
    press(&mut app, KeyCode::Char('2'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    run_jobs(&mut app, cmds, Box::new(NoModel));
    let n = app.status.notice().cloned().expect("a notice");
    assert!(n.error);
    assert_eq!(
        n.text,
        "relevancy of token 0 failed: could not load the session's model \"synthetic\": no such folder"
    );
    assert!(text(&app).contains("relevancy of token 0 failed"));
    assert!(app
        .doc
        .session
        .as_ref()
        .unwrap()
        .manifest
        .relevancy_tokens
        .is_empty());
    assert!(!app.doc.modified && app.doc.job.is_none());
}

#[test]
fn the_real_service_reports_a_missing_model_folder() {
    let mut s = without_relevancy();
    s.manifest.model.path = "/nonexistent/lvlmscope-model".into();
    let mut app = App::with_session(look(), s, None);
    press(&mut app, KeyCode::Char('2'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    run_jobs(&mut app, cmds, lvlmscope::tui::default_job_runner());
    let n = app.status.notice().cloned().expect("a notice");
    assert!(n.error);
    assert!(
        n.text.starts_with(
            "relevancy of token 0 failed: could not load the session's model \"/nonexistent/lvlmscope-model\""
        ),
        "{}",
        n.text
    );
    assert!(!n.text.contains('\n'));
}

#[test]
fn esc_cancels_and_results_of_an_old_session_are_dropped() {
    let full = with_relevancy();
    let mut app = App::with_session(look(), without_relevancy(), None);
    press(&mut app, KeyCode::Char('2'));
    let cmds = press(&mut app, KeyCode::Char('r'));
    let cancel = app.doc.job.as_ref().unwrap().cancel.clone();
    let req = match &cmds[0] {
        Cmd::ModelJob(id, _) => job_request(&app, *id).unwrap(),
        other => panic!("{other:?}"),
    };
    press(&mut app, KeyCode::Esc);
    assert!(cancel.load(Ordering::SeqCst));
    assert!(app.doc.job.is_none());
    assert_eq!(
        app.status.notice().unwrap().text,
        "cancelled relevancy of token 0"
    );
    // a pass that finished anyway is kept
    let maps = |t: usize| {
        let row = |a: &Option<lvlmscope::session::Array>| a.as_ref().unwrap().row(&[t]).to_vec();
        RelevancyMaps {
            tokens: vec![t],
            llm: vec![row(&full.relevancy_llm)],
            vit: vec![row(&full.relevancy_vit)],
            combined: vec![row(&full.relevancy_combined)],
            seconds: 0.1,
        }
    };
    update(
        &mut app,
        Msg::JobDone(JobDone {
            id: req.id,
            epoch: req.epoch,
            job: req.job.clone(),
            result: Ok(JobOutput::Relevancy(maps(0))),
        }),
    );
    assert_eq!(
        app.doc.session.as_ref().unwrap().manifest.relevancy_tokens,
        vec![0]
    );
    assert!(app
        .status
        .notice()
        .unwrap()
        .text
        .contains("after cancel; kept"));
    // a new session: a late result for the old one is not stored in it
    app.set_session(without_relevancy(), None);
    update(
        &mut app,
        Msg::JobDone(JobDone {
            id: req.id,
            epoch: req.epoch,
            job: req.job,
            result: Ok(JobOutput::Relevancy(maps(1))),
        }),
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
}

#[test]
fn n_switches_the_normalisation_of_the_bars_and_the_decoder_map() {
    let s = with_relevancy();
    let mut app = App::with_session(look(), s.clone(), None);
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Right);
    let t = 1;
    let q = s.query_position(t);
    let raw = s.relevancy_llm.as_ref().unwrap().row(&[t]).to_vec();
    let want = |norm| {
        let row = views::prepare_row(&raw, q, norm);
        views::text_relevancy(&row, &s.manifest.tokens.input, s.image_range(), q, 12)
    };
    let (plain, residual) = (
        want(Normalization::SelfRemoved),
        want(Normalization::Residual),
    );
    let top = plain.words[0].text.clone();
    assert_eq!(top, residual.words[0].text);
    let screen = text(&app);
    assert!(screen.contains("Relevancy · relevancy.combined · self-removed (N)"));
    assert!((bar_value(&screen, &top) - plain.words[0].value).abs() < 5e-5);
    assert!((bar_value(&screen, "image (max)") - plain.image_max).abs() < 5e-5);
    press(&mut app, KeyCode::Char('N'));
    let screen = text(&app);
    assert!(screen.contains("Relevancy · relevancy.combined · residual (N)"));
    assert!((bar_value(&screen, &top) - residual.words[0].value).abs() < 5e-5);
    assert!((bar_value(&screen, "image (max)") - residual.image_max).abs() < 5e-5);
    // the rows sum to 3 besides the query: residual values are a third of the plain ones
    assert!((residual.words[0].value * 3.0 - plain.words[0].value).abs() < 1e-5);
    // the decoder map follows the normalisation; the combined map does not
    let combined = app.doc.view.map.clone().unwrap();
    press(&mut app, KeyCode::Char('N'));
    assert_eq!(app.doc.view.map.as_ref(), Some(&combined));
    press(&mut app, KeyCode::Char('m'));
    press(&mut app, KeyCode::Char('m'));
    assert_eq!(app.doc.sel.rel_source, RelSource::Llm);
    let image = s.image_range();
    let plain_map = views::prepare_row(&raw, q, Normalization::SelfRemoved)[image.clone()].to_vec();
    assert_eq!(app.doc.view.map.as_ref().unwrap().values, plain_map);
    press(&mut app, KeyCode::Char('N'));
    let residual_map = views::prepare_row(&raw, q, Normalization::Residual)[image].to_vec();
    assert_eq!(app.doc.view.map.as_ref().unwrap().values, residual_map);
    assert!(app.doc.view.map_title.contains("relevancy.llm · residual"));
}

#[test]
fn the_answer_is_coloured_by_its_reliance_on_the_image() {
    let s = with_relevancy();
    let mut stored = without_relevancy();
    // only tokens 0 and 3 have relevancy
    let pick = |a: &Option<lvlmscope::session::Array>| {
        let mut a = a.clone().unwrap();
        for t in [1, 2, 4, 5, 6, 7] {
            if t < a.shape[0] {
                a.row_mut(&[t]).iter_mut().for_each(|v| *v = 0.0);
            }
        }
        Some(a)
    };
    stored.relevancy_llm = pick(&s.relevancy_llm);
    stored.relevancy_vit = pick(&s.relevancy_vit);
    stored.relevancy_combined = pick(&s.relevancy_combined);
    stored.manifest.relevancy_tokens = vec![0, 3];
    let look = look();
    let mut app = App::with_session(look.clone(), stored.clone(), None);
    press(&mut app, KeyCode::Char('2'));
    let share = |t: usize| {
        let q = s.query_position(t);
        let row = s.relevancy_llm.as_ref().unwrap().row(&[t]);
        let image: f32 = row[s.image_range()].iter().sum();
        let text: f32 = (0..q)
            .filter(|p| !s.image_range().contains(p))
            .map(|p| row[p])
            .sum();
        image / (image + text)
    };
    let reliance = &app.doc.view.reliance;
    assert_eq!(reliance.len(), s.num_output());
    assert!((reliance[0].unwrap() - share(0)).abs() < 1e-5);
    assert!((reliance[3].unwrap() - share(3)).abs() < 1e-5);
    assert!(reliance[1].is_none() && reliance[2].is_none());
    // find the chips on the line after the reliance label
    let buf = frame(&app, 160, 48);
    let rows = lines(&buf);
    let label = rows
        .iter()
        .position(|l| l.contains("reliance on the image (share of relevancy)"))
        .unwrap_or_else(|| panic!("no reliance block in\n{}", rows.join("\n")));
    assert!(
        rows.iter()
            .any(|l| l.contains("text 0") && l.contains("1 image")),
        "a legend"
    );
    let y = label as u16 + 1;
    let x0 = rows[label]
        .find("reliance")
        .map(|b| rows[label][..b].chars().count())
        .unwrap() as u16;
    let words: Vec<String> = s
        .manifest
        .tokens
        .output
        .iter()
        .map(|t| t.replace('▁', " ").trim().to_string())
        .collect();
    let mut x = x0;
    for (t, w) in words.iter().enumerate() {
        let cell = &buf[(x, y)];
        assert_eq!(
            cell.symbol(),
            w.chars().next().unwrap().to_string(),
            "token {t} at {x}"
        );
        let want = match t {
            0 | 3 => look.map_color(share(t)),
            _ => look.color(look.theme.dim),
        };
        assert_eq!(cell.fg, want, "token {t}");
        x += w.chars().count() as u16 + 1;
        if t == 4 {
            break;
        }
    }
    assert_ne!(look.map_color(share(0)), Color::Reset);
}
