//! What comes back from the workers: causal results and live-run progress.

use crate::session::{CausalParams, CausalResults, CausalToken};

use super::super::app::App;
use super::RunEvent;

pub(super) fn store_causal(app: &mut App, t: usize, params: CausalParams, ct: CausalToken) {
    if params != app.causal_params {
        app.notify(
            format!("dropped a result for token {t} computed with older parameters"),
            false,
        );
        return;
    }
    let Some(s) = &mut app.session else { return };
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
    app.modified = true;
    app.notify(text, false);
}

pub(super) fn run_event(app: &mut App, e: RunEvent) {
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
