//! The components' own lists of the actions they answer (`Component::commands`) agree with the
//! keymap: every such action has a key and a row in the `?` help, under every method and focus;
//! the image pane owns its patch mode, selection, opacity and region.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::component::Component;
use lvlmscope::tui::keymap::HELP;
use lvlmscope::tui::state::Pane;
use lvlmscope::tui::{update, App, Msg};
use ratatui::layout::Rect;

fn press(app: &mut App, code: KeyCode) {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

#[test]
fn every_command_has_a_key_and_a_help_row() {
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, synthetic_session(&SyntheticSpec::tiny()), None);
    let mut seen = 0;
    for method in ['1', '2', '3'] {
        press(&mut app, KeyCode::Char(method));
        for _ in 0..5 {
            let ctx = app.ctx();
            let components: [&dyn Component; 8] = [
                &app.doc.image,
                &app.doc.answer,
                &app.doc.prompt,
                &app.doc.method,
                &app.doc.grid,
                &app.status,
                &app.form,
                &app.help,
            ];
            for c in components {
                for a in c.commands(&ctx) {
                    assert!(!app.keymap.keys(a).is_empty(), "{a:?} has no key");
                    assert!(
                        HELP.iter().any(|r| r.actions.contains(&a)),
                        "{a:?} has no help row"
                    );
                    seen += 1;
                }
            }
            press(&mut app, KeyCode::Tab);
        }
    }
    assert!(seen > 100, "only {seen} commands listed");
}

#[test]
fn image_pane_owns_patch_mode_opacity_and_region() {
    let look = Look::new(Theme::dark(), ColorMode::TrueColor);
    let mut app = App::with_session(look, synthetic_session(&SyntheticSpec::tiny()), None);
    assert!(!app.doc.image.patch_mode());
    press(&mut app, KeyCode::Char('p'));
    assert!(app.doc.image.patch_mode());
    assert_eq!(app.focus, Pane::Image);
    press(&mut app, KeyCode::Char('l'));
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(
        app.doc.image.patches().iter().copied().collect::<Vec<_>>(),
        [1]
    );
    assert!(
        !app.doc.view.patch_heads.is_empty(),
        "the view reads the pane's selection"
    );
    // Esc leaves patch mode and keeps the selection; `x` clears it.
    press(&mut app, KeyCode::Esc);
    assert!(!app.doc.image.patch_mode());
    assert!(app.doc.view.patch_heads.is_empty());
    assert_eq!(app.doc.image.patches().len(), 1);
    press(&mut app, KeyCode::Char('x'));
    assert!(app.doc.image.patches().is_empty());
    // `o` cycles the opacity 0.6 → 1 → 0 → 0.6.
    let mut seen = vec![app.doc.image.opacity()];
    for _ in 0..3 {
        press(&mut app, KeyCode::Char('o'));
        seen.push(app.doc.image.opacity());
    }
    assert_eq!(seen, [0.6, 1.0, 0.0, 0.6]);
    // A region index past the session's regions draws the first region.
    let area = Rect::new(0, 0, 60, 30);
    let first = app.doc.image.geom(&app.ctx(), area).expect("a picture");
    app.doc.image.set_region(7);
    assert_eq!(app.ctx().region, 7);
    assert_eq!(app.doc.image.geom(&app.ctx(), area), Some(first));
    let first_aspect = app.doc.session.as_ref().unwrap().regions()[0].aspect();
    assert_eq!(app.ctx().aspect(), Some(first_aspect));
}
