//! The compare split view (`tui --session A --compare B`): session B beside A in the method
//! pane's place, driven by the same keys; for the selected token and the shown map, B's map
//! and A − B with Spearman ρ when both saw the same pixels — the numbers of
//! `explain::compare` (what `lvlmscope compare` prints).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::explain::compare;
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::session::{self, AttentionDtype, Session};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::{draw, initial_app, update, App, Msg, TuiOptions};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn press(app: &mut App, code: KeyCode) {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn text(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(170, 48)).unwrap();
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

fn open(dir: &std::path::Path, a: &Session, b: &Session) -> App {
    let (pa, pb) = (dir.join("a.session"), dir.join("b.session"));
    session::save(a, &pa, AttentionDtype::F32).unwrap();
    session::save(b, &pb, AttentionDtype::F32).unwrap();
    let opts = TuiOptions {
        session: Some(pa),
        compare: Some(pb),
        ..Default::default()
    };
    initial_app(&opts, Look::new(Theme::dark(), ColorMode::TrueColor)).0
}

#[test]
fn b_follows_the_token_and_map_of_a_with_the_compare_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut b = synthetic_session(&SyntheticSpec {
        seed: 8,
        ..SyntheticSpec::tiny()
    });
    b.pixel_values = a.pixel_values.clone();
    b.manifest.prompt = "What shape is the red object?".into();
    let mut app = open(dir.path(), &a, &b);
    assert!(app.status.notice().is_none(), "{:?}", app.status.notice());
    // saved and loaded as F32: the numbers are those of the sessions on disk
    let (a, b) = (
        session::load(&dir.path().join("a.session")).unwrap(),
        session::load(&dir.path().join("b.session")).unwrap(),
    );
    for t in [0, 1] {
        let id = app.map_id();
        let want = compare::compare(&a, &b, &[t], &id).unwrap();
        let rho = want.maps[0].rank_correlation.expect("same image");
        let screen = text(&app);
        assert!(screen.contains("Compare · B = b.session"), "{screen}");
        assert!(screen.contains("B prompt  What shape is the red object?"));
        let head = format!("token {t} · ");
        let line = screen
            .lines()
            .find(|l| l.contains(&head))
            .unwrap_or_else(|| panic!("{head} in\n{screen}"));
        assert!(line.contains(&format!("Spearman ρ {rho:.3}")), "{line}");
        assert!(screen.contains("A − B (±"), "{screen}");
        press(&mut app, KeyCode::Right);
    }
    // the method keys drive both: relevancy, which neither session holds, is one sentence
    press(&mut app, KeyCode::Char('2'));
    let screen = text(&app);
    let line = screen
        .lines()
        .find(|l| l.contains("session A: "))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(line.contains("relevancy"), "{line}");
}

#[test]
fn different_images_show_no_difference_and_a_bad_b_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_session(&SyntheticSpec::tiny());
    let mut b = a.clone();
    for v in b.pixel_values.data.iter_mut() {
        *v = -*v;
    }
    let app = open(dir.path(), &a, &b);
    let screen = text(&app);
    assert!(
        screen.contains("different images: no difference"),
        "{screen}"
    );
    assert!(!screen.contains("A − B (±"));
    let opts = TuiOptions {
        session: Some(dir.path().join("a.session")),
        compare: Some(dir.path().join("missing.session")),
        ..Default::default()
    };
    let (app, _) = initial_app(&opts, Look::new(Theme::dark(), ColorMode::TrueColor));
    assert!(app.compare.is_none());
    let notice = app.status.notice().unwrap();
    assert!(
        notice.error && notice.text.starts_with("cannot compare with "),
        "{}",
        notice.text
    );
}
