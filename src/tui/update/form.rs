//! Keys while the new-run form is open: editing, path completion, starting the run.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent};

use super::super::app::App;
use super::super::run_form::Field;
use super::{Cmd, LiveRequest};

pub(super) fn form_key(app: &mut App, k: KeyEvent) -> Vec<Cmd> {
    let Some(form) = app.form.as_mut() else {
        return Vec::new();
    };
    match k.code {
        KeyCode::Esc => app.form = None,
        KeyCode::Up => form.move_field(false),
        KeyCode::Down => form.move_field(true),
        KeyCode::Tab => form.complete(),
        KeyCode::Backspace => {
            form.current().pop();
        }
        KeyCode::Char(c) => form.current().push(c),
        KeyCode::Enter => {
            if app.run.active {
                app.notify("a run is already in progress (Esc cancels it)", true);
                return Vec::new();
            }
            let missing = [
                (Field::Model, &form.model),
                (Field::Image, &form.image),
                (Field::Prompt, &form.prompt),
            ]
            .into_iter()
            .find(|(_, v)| v.trim().is_empty())
            .map(|(f, _)| f);
            if let Some(field) = missing {
                form.field = field;
                app.notify("fill in model, image and prompt first", true);
                return Vec::new();
            }
            let req = LiveRequest {
                model: form.model.trim().to_string(),
                image: PathBuf::from(form.image.trim()),
                prompt: form.prompt.clone(),
                max_new_tokens: 64,
            };
            app.form = None;
            app.run.active = true;
            app.run.stage = "starting".into();
            app.run.fraction = 0.0;
            app.run.tokens.clear();
            return vec![Cmd::StartRun(req)];
        }
        _ => {}
    }
    Vec::new()
}
