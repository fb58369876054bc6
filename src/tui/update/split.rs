//! The compare split view's part of `update`: opening session B (the path prompt, the file
//! read on a worker), closing the view, moving the keys to the other side, linking, Tab over
//! the panes the split view shows, clicks on the other side, and what workers send back (a
//! model job's result, a live run's session, a save, a causal result) applied on the side that
//! asked for it.

use std::path::PathBuf;

use crossterm::event::KeyEvent;

use crate::session::Session;

use super::super::app::App;
use super::super::compare::open::{name_of, PromptOutcome};
use super::super::compare::{self, draw::side_at, Which};
use super::super::keymap::Action;
use super::super::msg::{Cmd, Msg};
use super::super::state::Pane;

/// Does `action` if it is the split view's; `None` when it is not.
pub(super) fn act(app: &mut App, action: Action) -> Option<Vec<Cmd>> {
    let open = app.compare.is_some();
    match action {
        Action::CompareOpen => app.open_b.open(),
        Action::CompareClose if compare::close(app) => {
            app.notify("closed the compare view", false);
        }
        Action::CompareFocus if open => {
            compare::switch(app);
            let w = app.compare.as_ref().map_or(Which::A, |c| c.focused);
            app.notify(format!("keys act on side {}", w.letter()), false);
            // As when the method is chosen: the demo's missing result is asked for at once.
            return Some(super::show_method(app, app.sel.method));
        }
        Action::CompareLink if open => {
            let Some(c) = app.compare.as_mut() else {
                return Some(Vec::new());
            };
            c.linked = !c.linked;
            let text = if c.linked {
                "linked: the other side follows token, patches, method, layer and region"
            } else {
                "unlinked: keys move the focused side alone"
            };
            app.notify(text, false);
        }
        Action::CompareClose | Action::CompareFocus | Action::CompareLink => {
            app.notify("no compare view: B opens a session beside this one", true);
        }
        Action::NextPane | Action::PrevPane if open => {
            let step = if action == Action::NextPane { 1 } else { -1 };
            app.focus = app.focus.cycle(step);
            if app.focus == Pane::Grid {
                app.focus = app.focus.cycle(step);
            }
        }
        _ => return None,
    }
    Some(Vec::new())
}

/// A key while the path prompt is open.
pub(super) fn prompt_key(app: &mut App, k: KeyEvent) -> Vec<Cmd> {
    match app.open_b.key(k) {
        PromptOutcome::Editing | PromptOutcome::Cancelled => Vec::new(),
        PromptOutcome::Refused(why) => {
            app.notify(why, true);
            Vec::new()
        }
        PromptOutcome::Load(cmd) => {
            if let Cmd::LoadCompare(p) = &cmd {
                app.notify(format!("reading {}…", p.display()), false);
            }
            vec![cmd]
        }
    }
}

/// A session file for the split view was read: opens it as side B (as the session, when none
/// is open), or says why not.
pub(super) fn loaded(app: &mut App, path: PathBuf, r: Result<Box<Session>, String>) {
    let s = match r {
        Ok(s) => *s,
        Err(e) => return app.notify(e, true),
    };
    let name = name_of(&path);
    if app.session.is_none() {
        app.set_session(s, Some(path));
        app.notify(
            format!("opened {name}: B opens a second session beside it"),
            false,
        );
        return;
    }
    compare::open_b(app, s, name.clone(), Some(path));
    app.notify(
        format!("comparing with {name}: w gives it the keys, u unlinks, X closes"),
        false,
    );
}

/// Applies a message from a worker on the side it belongs to: a model job's result on the
/// side whose session epoch it carries; a live run's session, a save and a causal result on the
/// side that asked for them (the focus may have moved since).
pub(super) fn from_worker(app: &mut App, msg: Msg) {
    let side = app.compare.as_mut().and_then(|c| match &msg {
        Msg::JobDone(d) => (c.other.epoch == d.epoch).then(|| c.focused.other()),
        Msg::RunDone(_) => c.asked.run.take(),
        Msg::Saved(_) => c.asked.save.take(),
        Msg::CausalDone(..) => c.asked.causal.take(),
        _ => None,
    });
    let flip = side.is_some_and(|s| app.compare.as_ref().is_some_and(|c| c.focused != s));
    if flip {
        compare::switch(app);
    }
    super::results::apply(app, msg);
    if flip {
        compare::switch(app);
    }
}

/// Remembers which side asked for the live run, save or causal result among `cmds`.
pub(super) fn remember(app: &mut App, cmds: &[Cmd]) {
    let Some(c) = app.compare.as_mut() else {
        return;
    };
    for cmd in cmds {
        let slot = match cmd {
            Cmd::StartRun(_) => &mut c.asked.run,
            Cmd::Save(_) => &mut c.asked.save,
            Cmd::ComputeCausal(..) => &mut c.asked.causal,
            _ => continue,
        };
        *slot = Some(c.focused);
    }
}

/// A click at `(x, y)` in the split view on the side that is not focused gives it the keys.
pub(super) fn click(app: &mut App, x: u16, y: u16) {
    let Some(c) = &app.compare else { return };
    if side_at(app.screen, x, y).is_some_and(|w| w != c.focused) {
        compare::switch(app);
    }
}
