//! The help overlay lists every key of the keymap: at 120×40 the rows take two pages (Space turns
//! the page, any other key closes), at 200×60 one; every help row starts on exactly one page
//! (that no text is cut is checked on the layout itself, in `tui::help`'s unit tests).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::keymap::help_rows;
use lvlmscope::tui::{draw, update, App, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn app(w: u16, h: u16) -> App {
    let s = synthetic_session(&SyntheticSpec::tiny());
    let mut app = App::with_session(Look::new(Theme::dark(), ColorMode::TrueColor), s, None);
    update(&mut app, Msg::Resize(w, h));
    app
}

fn press(app: &mut App, code: KeyCode) {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

/// The frame's text with runs of spaces squeezed, so wrapped texts can be searched word by word.
fn words(app: &App, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer();
    let text: String = (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                + "\n"
        })
        .collect();
    text.split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `text`'s first words (those on its first line, two at most) appear in order,
/// consecutively, among `frame`'s words.
fn shows(frame: &[String], text: &str) -> bool {
    let want: Vec<&str> = text.split_whitespace().take(2).collect();
    frame
        .windows(want.len())
        .any(|w| w.iter().zip(&want).all(|(a, b)| a == b))
}

#[test]
fn help_pages_show_every_row_in_full() {
    let (w, h) = (120, 40);
    let mut app = app(w, h);
    press(&mut app, KeyCode::Char('?'));
    assert!(app.help.open);
    let first = words(&app, w, h);
    assert!(shows(&first, "Keys 1/2"), "{first:?}");
    press(&mut app, KeyCode::Char(' '));
    assert!(app.help.open, "Space turns the page");
    let second = words(&app, w, h);
    assert!(shows(&second, "Keys 2/2"));
    let rows = help_rows(&app.keymap);
    for (_, text) in &rows {
        let on = [&first, &second]
            .iter()
            .filter(|page| shows(page, text))
            .count();
        assert_eq!(on, 1, "{text:?} starts on exactly one page");
    }
    press(&mut app, KeyCode::Char(' '));
    assert!(!app.help.open, "Space on the last page closes");
    press(&mut app, KeyCode::Char('?'));
    assert_eq!(app.help.page, 0, "the help opens on its first page");
    press(&mut app, KeyCode::Char('j'));
    assert!(!app.help.open, "any other key closes");
}

#[test]
fn a_large_terminal_shows_one_page() {
    let (w, h) = (200, 60);
    let mut app = app(w, h);
    press(&mut app, KeyCode::Char('?'));
    let frame = words(&app, w, h);
    assert!(shows(&frame, "Keys (any key closes)"));
    for (_, text) in help_rows(&app.keymap) {
        assert!(shows(&frame, text), "{text:?}");
    }
    press(&mut app, KeyCode::Char(' '));
    assert!(!app.help.open, "with one page Space closes as any key does");
}
