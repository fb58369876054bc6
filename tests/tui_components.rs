//! The components' own lists of the actions they answer (`Component::commands`) agree with the
//! keymap: every such action has a key and a row in the `?` help, under every method and focus.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
use lvlmscope::style::{ColorMode, Look, Theme};
use lvlmscope::tui::component::Component;
use lvlmscope::tui::keymap::HELP;
use lvlmscope::tui::{update, App, Msg};

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
            let components: [&dyn Component; 7] = [
                &app.answer,
                &app.prompt,
                &app.method,
                &app.grid,
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
