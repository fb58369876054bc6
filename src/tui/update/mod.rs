//! `update`, the one place state changes: messages in, commands out. Split by concern: keys
//! and actions here, moving around in [`nav`], the new-run form in [`form`], saving and
//! exporting in [`files`], worker results in [`results`].

mod files;
mod form;
mod nav;
mod results;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::Rect;

use crate::session::Session;

use super::app::{Agg, App, Method, Pane};
use super::component::{Component, Handled};
use super::keymap::Action;
pub use super::msg::{Cmd, Msg};
use super::msg::{LiveRequest, RunEvent};
use super::run_form::RunForm;

/// Applies `msg` to `app`; returns the work to start.
pub fn update(app: &mut App, msg: Msg) -> Vec<Cmd> {
    let cmds = match msg {
        Msg::Key(k) if k.kind != KeyEventKind::Release => key(app, k),
        Msg::Resize(w, h) => {
            app.screen = Rect::new(0, 0, w, h);
            Vec::new()
        }
        Msg::Key(_) => Vec::new(),
        Msg::Mouse(m) => {
            nav::mouse(app, m);
            Vec::new()
        }
        Msg::Run(e) => {
            results::run_event(app, e);
            Vec::new()
        }
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
            Vec::new()
        }
        Msg::Saved(r) => {
            match r {
                Ok(p) => {
                    app.notify(format!("saved session to {}", p.display()), false);
                    app.session_path = Some(p);
                    app.modified = false;
                }
                Err(e) => app.notify(e, true),
            }
            Vec::new()
        }
        Msg::Exported(r) => {
            match r {
                Ok(p) => app.notify(format!("wrote {}", p.display()), false),
                Err(e) => app.notify(e, true),
            }
            Vec::new()
        }
        Msg::CausalDone(t, params, r) => {
            match r {
                Ok(ct) => results::store_causal(app, t, params, ct),
                Err(e) => app.notify(e, true),
            }
            Vec::new()
        }
        Msg::Job(id, p) => {
            super::jobs::progress(app, id, p);
            Vec::new()
        }
        Msg::JobDone(done) => {
            super::jobs::done(app, done);
            Vec::new()
        }
        Msg::Interrupt => update_quit(app),
    };
    app.refresh();
    if app.quit {
        return cmds;
    }
    let mut cmds = cmds;
    cmds.extend(super::faithfulness::request_missing(app));
    cmds
}

fn key(app: &mut App, k: KeyEvent) -> Vec<Cmd> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return update_quit(app);
    }
    if app.form.is_some() {
        return form::form_key(app, k);
    }
    let action = app.keymap.action(app.method, &k);
    if app.help.open {
        // Any key closes the overlay, bound or not.
        app.help.handle(action.unwrap_or(Action::Help));
        return Vec::new();
    }
    match action {
        Some(action) => act(app, action),
        None => Vec::new(),
    }
}

/// Does what `action` says (the keymap turned a key into it).
fn act(app: &mut App, action: Action) -> Vec<Cmd> {
    if app.help.handle(action) == Handled::Yes {
        return Vec::new();
    }
    let (layers, heads) = app.layers_heads();
    match action {
        Action::Quit => return update_quit(app),
        // The help overlay took it above.
        Action::Help => {}
        Action::Cancel => {
            if let Some(c) = &app.run.cancel {
                c.store(true, std::sync::atomic::Ordering::SeqCst);
                app.notify("cancelling the run…", false);
            } else if app.job.is_some() {
                super::jobs::cancel(app);
            } else if app.patch_mode {
                app.patch_mode = false;
            } else {
                app.notice = None;
            }
        }
        Action::NextPane => app.focus = app.focus.cycle(1),
        Action::PrevPane => app.focus = app.focus.cycle(-1),
        Action::ShowAttention => app.method = Method::Attention,
        Action::ShowRelevancy => return show_method(app, Method::Relevancy),
        Action::ShowCausal => return show_method(app, Method::Causal),
        Action::LayerPrev => app.layer = nav::clamp_step(app.layer, -1, layers),
        Action::LayerNext => app.layer = nav::clamp_step(app.layer, 1, layers),
        Action::HeadPrev => {
            app.head = nav::clamp_step(app.head, -1, heads);
            app.agg = Agg::Head;
        }
        Action::HeadNext => {
            app.head = nav::clamp_step(app.head, 1, heads);
            app.agg = Agg::Head;
        }
        Action::RelevancySource => app.rel_source = app.rel_source.next(),
        Action::Heads => app.agg = app.agg.next(),
        Action::PatchMode => {
            app.patch_mode = !app.patch_mode;
            if app.patch_mode {
                app.focus = Pane::Image;
            }
        }
        Action::AttentionView => app.attn_view = app.attn_view.next(),
        Action::GridScope => app.grid_all_tokens = !app.grid_all_tokens,
        Action::Opacity => {
            app.opacity = match app.opacity {
                o if o < 0.5 => 0.6,
                o if o < 0.9 => 1.0,
                _ => 0.0,
            }
        }
        Action::ColorMap => app.look.colormap = app.look.colormap.next(),
        Action::ClearSelection => {
            app.tokens.clear();
            app.prompt_selected.clear();
            app.patches.clear();
        }
        Action::NewRun => {
            let s = app.session.as_ref();
            app.form = Some(RunForm::new(
                s.map(|s| s.manifest.model.path.clone()).unwrap_or_default(),
                s.map(|s| s.manifest.image.path.clone()).unwrap_or_default(),
                s.map(|s| s.manifest.prompt.clone()).unwrap_or_default(),
            ));
        }
        Action::ComputeCausal => return super::causal::request(app),
        Action::RadiusDown | Action::RadiusUp => super::causal::step_radius(app, action),
        Action::Causal(step) => return super::causal::step_params(app, step),
        Action::ComputeRelevancy => return super::relevancy::request(app),
        Action::Normalisation => app.rel_norm = app.rel_norm.toggle(),
        Action::Faithfulness => return super::faithfulness::toggle(app),
        Action::Save => return files::save(app),
        Action::Export => return files::export(app),
        Action::Select => nav::toggle(app),
        Action::Left => nav::arrow(app, -1, 0),
        Action::Right => nav::arrow(app, 1, 0),
        Action::Up => nav::arrow(app, 0, -1),
        Action::Down => nav::arrow(app, 0, 1),
        Action::First => app.token = 0,
        Action::Last => app.token = app.num_tokens().saturating_sub(1),
    }
    Vec::new()
}

/// Whether `s` was made by the embedded demo model, whose relevancy and causal results take
/// under 0.1 s (its folder is `demo-<content hash>`, see [`crate::demo::demo_model_dir`]).
fn is_demo(s: &Session) -> bool {
    let folder = format!("demo-{}", crate::demo::demo_model_hash());
    std::path::Path::new(&s.manifest.model.path)
        .file_name()
        .is_some_and(|name| name.to_string_lossy() == folder)
}

/// Shows `method`; on the embedded demo, whose results are cheap, asks for the selection's
/// missing relevancy or causal result at once instead of waiting for a key.
fn show_method(app: &mut App, method: Method) -> Vec<Cmd> {
    app.method = method;
    app.refresh();
    if !app.session.as_ref().is_some_and(is_demo) || app.view.map.is_some() {
        return Vec::new();
    }
    match method {
        Method::Relevancy if app.job.is_none() => super::relevancy::request(app),
        Method::Causal => super::causal::request(app),
        _ => Vec::new(),
    }
}

fn update_quit(app: &mut App) -> Vec<Cmd> {
    if let Some(c) = &app.run.cancel {
        c.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if let Some(job) = &app.job {
        job.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    app.quit = true;
    Vec::new()
}
