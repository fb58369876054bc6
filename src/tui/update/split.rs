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
        Action::CompareClose if open => {
            let cancelled = compare::close(app).unwrap_or_default();
            let text = if cancelled.is_empty() {
                "closed the compare view".to_string()
            } else {
                format!("closed the compare view: B's {cancelled} cancelled, its result dropped")
            };
            app.notify(text, false);
        }
        Action::CompareFocus if open => {
            compare::switch(app);
            let w = app.compare.as_ref().map_or(Which::A, |c| c.focused);
            app.notify(format!("keys act on side {}", w.letter()), false);
            // As when the method is chosen: the demo's missing result is asked for at once.
            return Some(super::show_method(app, app.doc.sel.method));
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
            if app.focus == Pane::Grid && !grid_shown(app) {
                app.focus = app.focus.cycle(step);
            }
        }
        _ => return None,
    }
    Some(Vec::new())
}

/// Whether the split view draws the focused side's heads × layers pane on the app's screen
/// (Tab skips it when not).
fn grid_shown(app: &App) -> bool {
    app.compare.as_ref().is_some_and(|c| {
        let panes = compare::draw::focused_panes(app.screen, app, c);
        panes.iter().any(|(p, r)| *p == Pane::Grid && r.area() > 0)
    })
}

/// The screen changed size: the focus leaves a heads × layers pane the split view no longer
/// draws.
pub(super) fn resized(app: &mut App) {
    if app.compare.is_some() && app.focus == Pane::Grid && !grid_shown(app) {
        app.focus = Pane::Answer;
    }
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
    if app.doc.session.is_none() {
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

/// Applies a message from a worker on the side it belongs to: a model job's result, its
/// progress and a message for a session epoch on the side showing that session; a live run's
/// session and a save on the side that asked for them (the focus may have moved since). What a
/// closed side B left under way is dropped with a notice.
pub(super) fn from_worker(app: &mut App, msg: Msg) {
    let msg = match msg {
        Msg::ForSession(epoch, inner) => {
            match compare::side_of(app, epoch) {
                Some(w) => on_side(app, w, *inner),
                None if app.orphans.epoch == Some(epoch) => drop_orphan(app, &inner),
                None => {}
            }
            return;
        }
        msg => msg,
    };
    if is_orphan(app, &msg) {
        return drop_orphan(app, &msg);
    }
    let side = app.compare.as_mut().and_then(|c| {
        let other = c.focused.other();
        match &msg {
            Msg::JobDone(d) => (c.other.epoch == d.epoch).then_some(other),
            Msg::Job(id, _) => c.other.job.as_ref().filter(|j| j.id == *id).map(|_| other),
            Msg::RunDone(_) => c.asked.run.take(),
            Msg::Saved(_) => c.asked.save.take(),
            _ => None,
        }
    });
    match side {
        Some(w) => on_side(app, w, msg),
        None => super::results::apply(app, msg),
    }
}

/// Applies `msg` with side `w` in the app's fields.
fn on_side(app: &mut App, w: Which, msg: Msg) {
    let flip = app.compare.as_ref().is_some_and(|c| c.focused != w);
    if flip {
        compare::switch(app);
    }
    super::results::apply(app, msg);
    if flip {
        compare::switch(app);
    }
}

/// Whether `msg` answers what a closed side B asked for (taking its mark).
fn is_orphan(app: &mut App, msg: &Msg) -> bool {
    let o = &mut app.orphans;
    match msg {
        Msg::JobDone(d) => o.epoch == Some(d.epoch),
        Msg::RunDone(_) => std::mem::take(&mut o.run),
        Msg::Saved(_) => std::mem::take(&mut o.save),
        _ => false,
    }
}

/// Drops what a closed side B asked for, saying so in one line (a save still wrote its file).
fn drop_orphan(app: &mut App, msg: &Msg) {
    let what = match msg {
        Msg::JobDone(d) => d.job.describe(),
        Msg::CausalDone(t, ..) => format!("the causal explanation of token {t}"),
        Msg::RunDone(_) => {
            app.run.active = false;
            app.run.cancel = None;
            "the live run".into()
        }
        Msg::Saved(Ok(p)) => {
            let text = format!("saved B's session to {} (B is closed)", p.display());
            return app.notify(text, false);
        }
        Msg::Saved(Err(e)) => return app.notify(format!("B's save failed: {e}"), true),
        _ => return,
    };
    app.notify(format!("dropped {what} asked on B: B is closed"), false);
}

/// Remembers which side asked for the live run or save among `cmds` (a command for the side
/// not focused comes as [`Cmd::ForSession`]).
pub(super) fn remember(app: &mut App, cmds: &[Cmd]) {
    let Some(focused) = app.compare.as_ref().map(|c| c.focused) else {
        return;
    };
    let sides: Vec<_> = cmds
        .iter()
        .map(|cmd| match cmd {
            Cmd::ForSession(epoch, inner) => (compare::side_of(app, *epoch), &**inner),
            cmd => (Some(focused), cmd),
        })
        .collect();
    let Some(c) = app.compare.as_mut() else {
        return;
    };
    for (side, cmd) in sides {
        match cmd {
            Cmd::StartRun(_) => c.asked.run = side,
            Cmd::Save(_) => c.asked.save = side,
            _ => {}
        }
    }
}

/// In linked mode, does `f` on the side not focused as well, the commands it returns tagged
/// with that side's session ([`Cmd::ForSession`]); the focused side's notice stays. Nothing
/// outside linked mode.
pub(super) fn on_other(app: &mut App, f: impl FnOnce(&mut App) -> Vec<Cmd>) -> Vec<Cmd> {
    if !app.compare.as_ref().is_some_and(|c| c.linked) {
        return Vec::new();
    }
    let status = app.status.clone();
    compare::switch(app);
    let epoch = app.doc.epoch;
    let cmds = f(app);
    compare::switch(app);
    app.status = status;
    cmds.into_iter()
        .map(|c| Cmd::ForSession(epoch, Box::new(c)))
        .collect()
}

/// Whether `action` asks for work on both sides in linked mode: relevancy on demand,
/// faithfulness, and choosing relevancy or causal (the demo computes the missing one at once).
pub(super) fn on_both(action: Action) -> bool {
    matches!(
        action,
        Action::ComputeRelevancy
            | Action::Faithfulness
            | Action::ShowRelevancy
            | Action::ShowCausal
    )
}

/// Esc in linked mode: also cancels the model job of the side not focused; whether there was
/// one.
pub(super) fn cancel_other(app: &mut App) -> bool {
    let had = app
        .compare
        .as_ref()
        .is_some_and(|c| c.linked && c.other.job.is_some());
    if had {
        on_other(app, |app| {
            super::jobs::cancel(app);
            Vec::new()
        });
    }
    had
}

/// A click at `(x, y)` in the split view on the side that is not focused gives it the keys.
pub(super) fn click(app: &mut App, x: u16, y: u16) {
    let Some(c) = &app.compare else { return };
    if side_at(app.screen, x, y).is_some_and(|w| w != c.focused) {
        compare::switch(app);
    }
}
