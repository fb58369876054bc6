//! The heads × layers grid coloured by a head score file (issue 16): `tui --heads FILE` (a
//! file of `eval --heads --json`) colours the image grid by pointing, `G` steps through the
//! scores and back to attention; on the embedded demo the shipped scores apply; a broken or
//! wrong-shaped file is one sentence in the status line and the grid keeps attention.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::explain::catalogue::heads::{read_scores, HeadScore};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{self, AttentionDtype};
use lvlmscope::style::{normalize, ColorMode, Look, Theme};
use lvlmscope::tui::grid::Colouring;
use lvlmscope::tui::{draw, initial_app, update, App, Msg, TuiOptions};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::Terminal;

fn look() -> Look {
    Look::new(Theme::dark(), ColorMode::TrueColor)
}

fn press(app: &mut App, code: KeyCode) {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

const W: u16 = 160;
const H: u16 = 48;

fn render(app: &App) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(W, H)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    t.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The demo's shipped scores (a 4 × 4 model, like the tiny synthetic session).
fn demo_file() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/demo-heads.json"
    ))
    .unwrap()
}

/// Opens the tiny synthetic session (saved to `dir`) with `--heads` `heads`.
fn open(dir: &std::path::Path, heads: &str) -> App {
    let path = dir.join("s.session");
    session::save(
        &synthetic_session(&SyntheticSpec::tiny()),
        &path,
        AttentionDtype::F32,
    )
    .unwrap();
    let file = dir.join("heads.json");
    std::fs::write(&file, heads).unwrap();
    let opts = TuiOptions {
        session: Some(path),
        heads: Some(file),
        ..Default::default()
    };
    initial_app(&opts, look()).0
}

/// The foreground colour of the grid cell of layer `l`, head `h` (an even head: the upper half).
fn cell_colour(app: &App, buf: &Buffer, l: usize, h: usize) -> ratatui::style::Color {
    let hits = lvlmscope::tui::draw::hits(app, Rect::new(0, 0, W, H));
    let g = hits.grid.expect("the grid is drawn");
    buf[(g.x0 + l as u16, g.y0 + (h / 2) as u16)].fg
}

fn expected(app: &App, score: f32) -> ratatui::style::Color {
    app.look
        .color(app.look.map_rgb(normalize(score, (0.0, 1.0))))
}

#[test]
fn a_score_file_colours_the_grid_and_g_steps_through_its_scores() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = open(dir.path(), &demo_file());
    assert!(app.status.notice().is_none(), "{:?}", app.status.notice());
    assert_eq!(app.doc.grid.colouring(), Colouring::Pointing);
    let scores: Vec<HeadScore> = read_scores(&demo_file()).unwrap();
    let score = |l: usize, h: usize| *scores.iter().find(|s| (s.layer, s.head) == (l, h)).unwrap();
    let buf = render(&app);
    let screen = text(&buf);
    assert!(
        screen.contains("Heads × layers · all answer tokens · by pointing"),
        "{screen}"
    );
    // layer 2, head 0 coloured by its pointing score on a fixed 0..1 scale
    assert_eq!(
        cell_colour(&app, &buf, 2, 0),
        expected(&app, score(2, 0).pointing)
    );
    assert_eq!(
        cell_colour(&app, &buf, 0, 2),
        expected(&app, score(0, 2).pointing)
    );
    // the info line names the selected head's score
    press(&mut app, KeyCode::Char('}'));
    let screen = text(&render(&app));
    let want = "l1h1 pointing ";
    let line = screen
        .lines()
        .find(|l| l.contains(want))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(
        line.contains(&format!(
            "pointing {:.3} (heads.json)",
            score(1, 1).pointing
        )),
        "{line}"
    );
    // G: overlap, ±15 px, mass in mask, then attention again
    for (c, f) in [
        (Colouring::Overlap, score(2, 0).pointing_overlap),
        (Colouring::Tolerance, score(2, 0).pointing_tolerance),
        (Colouring::Mass, score(2, 0).mass_in_mask),
    ] {
        press(&mut app, KeyCode::Char('G'));
        assert_eq!(app.doc.grid.colouring(), c);
        let buf = render(&app);
        assert_eq!(cell_colour(&app, &buf, 2, 0), expected(&app, f), "{c:?}");
    }
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(app.doc.grid.colouring(), Colouring::Attention);
    let buf = render(&app);
    assert!(text(&buf).contains("Image→Answer"));
    assert!(!text(&buf).contains("· by "));
}

#[test]
fn wrong_shaped_and_broken_files_are_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    // a file of a 2-layer model
    let two_layers: serde_json::Value = serde_json::from_str(&demo_file()).unwrap();
    let mut v = two_layers.clone();
    let heads: Vec<serde_json::Value> = v["heads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["layer"].as_u64().unwrap() < 2)
        .cloned()
        .collect();
    v["heads"] = serde_json::Value::Array(heads);
    let mut app = open(dir.path(), &v.to_string());
    let notice = app.status.notice().cloned().expect("a notice");
    assert!(notice.error);
    assert_eq!(
        notice.text,
        "the head score file heads.json scores 2 layers × 4 heads, the session's model 4 layers × 4 heads; the grid shows attention"
    );
    assert_eq!(app.doc.grid.colouring(), Colouring::Attention);
    press(&mut app, KeyCode::Char('G'));
    let notice = app.status.notice().unwrap().text.clone();
    assert!(
        notice.starts_with("no head scores for this model"),
        "{notice}"
    );
    // not a score file at all
    let app = open(dir.path(), "{\"heads\": 3}");
    let notice = app.status.notice().cloned().expect("a notice");
    assert!(notice.error);
    assert!(
        notice.text.contains("heads.json: not a head score file"),
        "{}",
        notice.text
    );
    assert!(!notice.text.contains('\n'));
    // a file that is not there
    let opts = TuiOptions {
        heads: Some(dir.path().join("missing.json")),
        ..Default::default()
    };
    let (app, _) = initial_app(&opts, look());
    let notice = app.status.notice().unwrap().text.clone();
    assert!(
        notice.starts_with("cannot read the head score file"),
        "{notice}"
    );
}

#[test]
fn the_demo_uses_its_shipped_scores() {
    let mut s = synthetic_session(&SyntheticSpec::tiny());
    s.manifest.model.path = format!(
        "/cache/lvlmscope/demo-{}",
        lvlmscope::demo::demo_model_hash()
    );
    let mut app = App::with_session(look(), s, None);
    assert_eq!(app.doc.grid.colouring(), Colouring::Attention);
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(app.doc.grid.colouring(), Colouring::Pointing);
    press(&mut app, KeyCode::Char('}'));
    let screen = text(&render(&app));
    assert!(screen.contains("· by pointing"), "{screen}");
    assert!(screen.contains("(demo-heads.json)"), "{screen}");
}
