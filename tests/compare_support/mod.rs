//! Helpers shared by the compare split view's tests (`tui_compare`, `tui_compare_jobs`): two
//! sessions saved and opened side by side, the screen as text, both sides' cursors.
#![allow(dead_code)]

use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{self, AttentionDtype, Session};
use lvlmscope::tui::compare::Which;
use lvlmscope::tui::{draw, initial_app, App, TuiOptions};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::common::look;

/// The screen of `app` drawn on a `w` × `h` terminal, as text.
pub fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
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

/// Session B: another seed on A's pixels, another prompt, and an answer that says A's words
/// at other places ("A red ball here" against "The ball is red").
pub fn session_b(a: &Session) -> Session {
    let mut b = synthetic_session(&SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::tiny()
    });
    b.pixel_values = a.pixel_values.clone();
    b.manifest.prompt = "What shape is the red object?".into();
    b.manifest.tokens.output = ["▁A", "▁red", "▁ball", "▁here", "</s>"]
        .map(String::from)
        .to_vec();
    b
}

pub fn save(dir: &std::path::Path, name: &str, s: &Session) -> std::path::PathBuf {
    let p = dir.join(name);
    session::save(s, &p, AttentionDtype::F32).unwrap();
    p
}

pub fn open(dir: &std::path::Path, a: &Session, b: &Session) -> App {
    let opts = TuiOptions {
        session: Some(save(dir, "a.session", a)),
        compare: Some(save(dir, "b.session", b)),
        ..Default::default()
    };
    initial_app(&opts, look()).0
}

/// The answer cursors of A and B.
pub fn cursors(app: &App) -> [usize; 2] {
    let c = app.compare.as_ref().expect("split view open");
    let (mine, other) = (app.doc.answer.cursor(), c.other.answer.cursor());
    match c.focused {
        Which::A => [mine, other],
        Which::B => [other, mine],
    }
}
