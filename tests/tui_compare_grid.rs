//! The heads × layers pane in the compare split view: on a terminal tall enough each side draws
//! its own under its method pane (its frame lit only on the focused side), Tab reaches the
//! focused side's and its arrows move the layer and head of both sides (linked); short or
//! narrow terminals keep the layout without it, Tab skips it there, and a focus on it moves to
//! the answer when the terminal shrinks.

mod common;
mod compare_support;

use common::press;
use compare_support::{open, screen, session_b};
use crossterm::event::KeyCode;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::tui::compare::draw::{layout, GRID_MIN_ROWS, METHOD_MIN_ROWS};
use lvlmscope::tui::state::{Agg, Pane};
use lvlmscope::tui::{update, App, Msg};
use ratatui::layout::Rect;

const GRID_TITLE: &str = " Heads × layers";

fn resize(app: &mut App, w: u16, h: u16) {
    update(app, Msg::Resize(w, h));
}

/// Tab from the answer pane until the focus comes back; the panes it went through.
fn tab_round(app: &mut App) -> Vec<Pane> {
    app.focus = Pane::Answer;
    let mut seen = Vec::new();
    for _ in 0..6 {
        press(app, KeyCode::Tab);
        seen.push(app.focus);
        if app.focus == Pane::Answer {
            break;
        }
    }
    seen
}

#[test]
fn a_tall_terminal_shows_each_sides_grid_and_tab_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut app = open(dir.path(), &a, &session_b(&a));
    resize(&mut app, 170, 48);
    let l = layout(Rect::new(0, 0, 170, 48), a.manifest.model.text_heads);
    for side in l.sides {
        assert!(side.grid.height >= GRID_MIN_ROWS, "{side:?}");
        assert!(side.method.height >= METHOD_MIN_ROWS, "{side:?}");
        assert_eq!(side.grid.y, side.method.bottom(), "under the method pane");
        assert_eq!(side.grid.x, side.method.x);
    }
    let s = screen(&app, 170, 48);
    assert_eq!(s.matches(GRID_TITLE).count(), 2, "{s}");
    for who in ["Image→Answer", "Question→Answer"] {
        assert_eq!(s.matches(who).count(), 2, "{who} twice in\n{s}");
    }
    // Tab goes through the focused side's grid
    let round = tab_round(&mut app);
    assert!(round.contains(&Pane::Grid), "{round:?}");
    // its arrows move the layer and head; the other side follows (linked)
    app.focus = Pane::Grid;
    let before = app.doc.sel;
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.doc.sel.layer, before.layer + 1);
    assert_eq!((app.doc.sel.agg, app.doc.sel.head), (Agg::Head, 1));
    let other = &app.compare.as_ref().unwrap().other;
    assert_eq!(other.sel, app.doc.sel);
    // only the focused side's grid frame is lit: the other side's frame looks as B's answer
    // pane's does
    let buf = {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(170, 48)).unwrap();
        t.draw(|f| lvlmscope::tui::draw(f, &app)).unwrap();
        t.backend().buffer().clone()
    };
    let [ra, rb] = l.sides.map(|s| s.grid);
    let corner = |r: Rect| buf[(r.x, r.y)].fg;
    assert_ne!(corner(ra), corner(rb), "A's grid lit, B's not");
    assert_eq!(corner(rb), corner(l.sides[1].answer), "B's grid unlit");
}

#[test]
fn short_or_narrow_terminals_keep_the_layout_without_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut app = open(dir.path(), &a, &session_b(&a));
    for (w, h) in [(170, 36), (120, 28), (90, 24)] {
        resize(&mut app, 170, 48);
        app.focus = Pane::Grid;
        resize(&mut app, w, h);
        assert_eq!(
            app.focus,
            Pane::Answer,
            "the focus leaves the grid no longer drawn"
        );
        let s = screen(&app, w, h);
        assert!(!s.contains(GRID_TITLE), "{w}×{h}:\n{s}");
        let l = layout(Rect::new(0, 0, w, h), a.manifest.model.text_heads);
        assert!(l.sides.iter().all(|s| s.grid.area() == 0), "{w}×{h}");
        assert_eq!(l, layout(Rect::new(0, 0, w, h), 0), "today's layout");
        let round = tab_round(&mut app);
        assert!(!round.contains(&Pane::Grid), "{w}×{h}: {round:?}");
    }
}
