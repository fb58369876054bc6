//! What comes back from the workers: live-run progress and its session, saves and exports,
//! causal results, and model jobs ([`super::super::jobs`]).

use crate::session::{CausalParams, CausalResults, CausalToken};

use super::super::app::App;
use super::{Msg, RunEvent};

/// Applies a message from a worker (every message but keys, mouse, resize and interrupts).
pub(super) fn apply(app: &mut App, msg: Msg) {
    match msg {
        Msg::Run(e) => run_event(app, e),
        Msg::RunDone(r) => {
            app.run.active = false;
            app.run.cancel = None;
            match r {
                Ok(s) => {
                    app.set_session(*s, None);
                    app.notify("run finished: press s to save the session", false);
                }
                Err(e) => app.notify(format!("run failed: {e}"), true),
            }
        }
        Msg::Saved(r) => match r {
            Ok(p) => {
                app.notify(format!("saved session to {}", p.display()), false);
                app.doc.session_path = Some(p);
                app.doc.modified = false;
            }
            Err(e) => app.notify(e, true),
        },
        Msg::Exported(r) => match r {
            Ok(p) => app.notify(format!("wrote {}", p.display()), false),
            Err(e) => app.notify(e, true),
        },
        Msg::CausalDone(t, params, r) => match r {
            Ok(ct) => store_causal(app, t, params, ct),
            Err(e) => app.notify(e, true),
        },
        Msg::Job(id, p) => super::jobs::progress(app, id, p),
        Msg::JobDone(done) => super::jobs::done(app, done),
        Msg::CompareLoaded(path, r) => super::split::loaded(app, path, r),
        // Routed to its side by `split::from_worker` before it comes here.
        Msg::ForSession(_, inner) => apply(app, *inner),
        Msg::Key(_) | Msg::Mouse(_) | Msg::Resize(..) | Msg::Interrupt => {}
    }
}

fn store_causal(app: &mut App, t: usize, params: CausalParams, ct: CausalToken) {
    if params != app.doc.method.causal().params {
        app.notify(
            format!("dropped a result for token {t} computed with older parameters"),
            false,
        );
        return;
    }
    let Some(s) = app.doc.session.as_mut() else {
        return;
    };
    let fresh = || CausalResults {
        params: params.clone(),
        tokens: Default::default(),
    };
    let causal = s.manifest.causal.get_or_insert_with(fresh);
    let mut text = format!("causal explanation of token {t} computed");
    if causal.params != params {
        text.push_str(" (results with the older parameters were dropped)");
        *causal = fresh();
    }
    causal.tokens.insert(t, ct);
    app.doc.modified = true;
    app.notify(text, false);
}

fn run_event(app: &mut App, e: RunEvent) {
    match e {
        RunEvent::Stage(s) => {
            app.run.stage = s;
            app.run.fraction = 0.0;
        }
        RunEvent::Fraction(f) => app.run.fraction = f,
        RunEvent::Token { index, text } => {
            if index >= app.run.tokens.len() {
                app.run.tokens.resize(index + 1, String::new());
            }
            app.run.tokens[index] = text;
        }
    }
}
