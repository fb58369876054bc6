//! TestBackend snapshots of each view. The text of every frame is compared with the files in
//! `tests/tui_snapshots/`; set `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change (a
//! missing file is written and reported as a failure, so a fresh checkout cannot pass silently).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::job::{JobOutput, ModelJob};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{CausalHead, CausalParams, CausalResults, CausalToken, Session};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::worker::JobDone;
use lvlmscope::tui::{draw, update, App, Cmd, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn session() -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = true;
    synthetic_session(&spec)
}

fn app_with(s: Session, mode: ColorMode) -> App {
    App::with_session(Look::new(Theme::dark(), mode), s, None)
}

fn keys(app: &mut App, keys: &str) {
    for c in keys.chars() {
        let code = match c {
            '\t' => KeyCode::Tab,
            c => KeyCode::Char(c),
        };
        update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }
}

fn text(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let line: String = (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, got: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tui_snapshots");
    let path = dir.join(format!("{name}.txt"));
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    match std::fs::read_to_string(&path) {
        Ok(want) if !update => {
            if want != got {
                let first = want
                    .lines()
                    .zip(got.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                panic!(
                    "snapshot {name} differs from line {first}:\n--- want\n{}\n--- got\n{}\n(UPDATE_SNAPSHOTS=1 rewrites it)",
                    want.lines().nth(first).unwrap_or(""),
                    got.lines().nth(first).unwrap_or("")
                );
            }
        }
        Ok(_) | Err(_) => {
            std::fs::create_dir_all(&dir).unwrap();
            let existed = path.exists();
            std::fs::write(&path, got).unwrap();
            assert!(
                update || existed,
                "snapshot {name} was missing; written, check it and rerun"
            );
        }
    }
}

fn causal_session() -> Session {
    let mut s = session();
    let start = s.manifest.image_span[0];
    let target = s.query_position(1);
    let head = |h: usize, imp: f64| CausalHead {
        head: h,
        nodes: vec![start + 5, start + 6, start + 10, 20, target],
        explanation: vec![start + 5, start + 10, 20],
        per_radius: BTreeMap::from([(1, vec![start + 5, 20]), (2, vec![start + 10])]),
        importance: imp,
        image_weights: BTreeMap::from([(start + 5, 0.9), (start + 10, 0.4)]),
    };
    s.manifest.causal = Some(CausalResults {
        params: CausalParams {
            layer: 3,
            ..Default::default()
        },
        tokens: BTreeMap::from([(
            1,
            CausalToken {
                target,
                heads: vec![head(0, 0.7), head(2, 1.3)],
            },
        )]),
    });
    s
}

#[test]
fn attention_views() {
    let mut app = app_with(session(), ColorMode::TrueColor);
    check("attention_heads", &text(&app, 120, 40));
    keys(&mut app, "v");
    check("attention_share", &text(&app, 120, 40));
    keys(&mut app, "v");
    check("attention_words", &text(&app, 120, 40));
    keys(&mut app, "vp l j ");
    check("attention_patches", &text(&app, 120, 40));
}

#[test]
fn relevancy_and_causal_views() {
    let mut app = app_with(session(), ColorMode::TrueColor);
    keys(&mut app, "2");
    check("relevancy", &text(&app, 120, 40));
    let mut bare = session();
    bare.relevancy_combined = None;
    bare.relevancy_vit = None;
    bare.relevancy_llm = None;
    bare.manifest.relevancy_tokens.clear();
    let mut app = app_with(bare, ColorMode::TrueColor);
    keys(&mut app, "2");
    let t = text(&app, 120, 40);
    assert!(t.contains("no relevancy for token 0 in this session: press r"));
    let mut app = app_with(causal_session(), ColorMode::TrueColor);
    keys(&mut app, "3");
    let t = text(&app, 120, 40);
    assert!(t.contains("no causal explanation for token 0"));
    keys(&mut app, "l");
    check("causal", &text(&app, 120, 40));
}

#[test]
fn overlays_and_small_sizes() {
    let mut app = app_with(session(), ColorMode::TrueColor);
    keys(&mut app, "?");
    check("help", &text(&app, 120, 40));
    let app = app_with(session(), ColorMode::NoColor);
    check("no_color", &text(&app, 80, 24));
    check("too_small", &text(&app, 39, 11));
    let mut empty = App::new(Look::new(Theme::dark(), ColorMode::TrueColor));
    keys(&mut empty, "n");
    check("new_run_form", &text(&empty, 100, 30));
}

#[test]
fn faithfulness_block() {
    let mut app = app_with(session(), ColorMode::TrueColor);
    keys(&mut app, "l");
    let cmds = update(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('f'), KeyModifiers::NONE)),
    );
    check("faithfulness_computing", &text(&app, 120, 40));
    let [Cmd::ModelJob(id, job)] = cmds.as_slice() else {
        panic!("expected one model job, got {cmds:?}")
    };
    let ModelJob::Faithfulness { token, maps, .. } = job else {
        panic!("expected a faithfulness job, got {job:?}")
    };
    let drops = maps
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), 0.3 - 0.05 * i as f32))
        .collect();
    let done = JobDone {
        id: *id,
        epoch: app.doc.epoch,
        job: job.clone(),
        result: Ok(JobOutput::Faithfulness {
            token: *token,
            original: 0.75,
            drops,
            images: maps.len() + 1,
            seconds: 0.5,
        }),
    };
    update(&mut app, Msg::JobDone(done));
    check("faithfulness", &text(&app, 120, 40));
}
