//! Everything that can happen ([`Msg`]), what the app asks the runtime to do ([`Cmd`]), and
//! `update`, the one place state changes.

use std::path::PathBuf;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Rect;

use crate::session::{CausalParams, CausalResults, CausalToken, Session};

use super::app::{prompt_positions, Agg, App, AttnView, Method, Pane};
use super::component::{Component, Handled};
use super::draw::hits;
use super::keymap::Action;
use super::run_form::{Field, RunForm};
use super::worker::{JobDone, LiveRequest, RunEvent};
use crate::job::{JobProgress, ModelJob};

/// Everything that can happen to the app.
#[derive(Debug)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// A mouse event.
    Mouse(MouseEvent),
    /// The terminal was resized.
    Resize(u16, u16),
    /// Progress from a live run.
    Run(RunEvent),
    /// A live run ended.
    RunDone(Result<Box<Session>, String>),
    /// A save ended.
    Saved(Result<PathBuf, String>),
    /// A PNG export ended.
    Exported(Result<PathBuf, String>),
    /// A causal computation for an answer token, with these parameters, ended.
    CausalDone(usize, CausalParams, Result<CausalToken, String>),
    /// Progress of the model job with this id.
    Job(u64, JobProgress),
    /// A model job ended.
    JobDone(JobDone),
    /// SIGINT or SIGTERM: leave cleanly.
    Interrupt,
}

/// Work the runtime does for the app off the draw loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// Start a live run.
    StartRun(LiveRequest),
    /// Save the session to a file.
    Save(PathBuf),
    /// Write the current map over the image as a PNG.
    Export(PathBuf),
    /// Compute the causal explanation of an answer token with these parameters.
    ComputeCausal(usize, CausalParams),
    /// Run the pending model job with this id (see [`App::job`]) on the job worker.
    ModelJob(u64, ModelJob),
}

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
            mouse(app, m);
            Vec::new()
        }
        Msg::Run(e) => {
            run_event(app, e);
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
                Ok(ct) => store_causal(app, t, params, ct),
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

fn store_causal(app: &mut App, t: usize, params: CausalParams, ct: CausalToken) {
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

fn clamp_step(v: usize, step: isize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (v as isize + step).clamp(0, n as isize - 1) as usize
    }
}

fn key(app: &mut App, k: KeyEvent) -> Vec<Cmd> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return update_quit(app);
    }
    if app.form.is_some() {
        return form_key(app, k);
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
        Action::LayerPrev => app.layer = clamp_step(app.layer, -1, layers),
        Action::LayerNext => app.layer = clamp_step(app.layer, 1, layers),
        Action::HeadPrev => {
            app.head = clamp_step(app.head, -1, heads);
            app.agg = Agg::Head;
        }
        Action::HeadNext => {
            app.head = clamp_step(app.head, 1, heads);
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
        Action::Save => return save(app),
        Action::Export => return export(app),
        Action::Select => toggle(app),
        Action::Left => arrow(app, -1, 0),
        Action::Right => arrow(app, 1, 0),
        Action::Up => arrow(app, 0, -1),
        Action::Down => arrow(app, 0, 1),
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

fn form_key(app: &mut App, k: KeyEvent) -> Vec<Cmd> {
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

fn save(app: &mut App) -> Vec<Cmd> {
    if app.session.is_none() {
        app.notify("nothing to save: no session is loaded", true);
        return Vec::new();
    }
    let path = app.session_path.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("lvlmscope-{secs}.safetensors"))
    });
    app.notify(format!("saving to {}…", path.display()), false);
    vec![Cmd::Save(path)]
}

fn export(app: &mut App) -> Vec<Cmd> {
    if app.view.map.is_none() {
        app.notify("no map to export for this selection", true);
        return Vec::new();
    }
    let tokens = app.selected_tokens();
    let what = match app.agg {
        Agg::Head => format!("h{}", app.head),
        Agg::Mean => "mean".into(),
        Agg::Max => "max".into(),
    };
    let name = format!(
        "lvlmscope-{}-t{}-l{}-{what}.png",
        app.method.name(),
        tokens.first().copied().unwrap_or(0),
        app.layer
    );
    vec![Cmd::Export(PathBuf::from(name))]
}

fn toggle(app: &mut App) {
    fn flip(set: &mut std::collections::BTreeSet<usize>, v: usize) {
        if !set.remove(&v) {
            set.insert(v);
        }
    }
    match app.focus {
        Pane::Answer if app.num_tokens() > 0 => flip(&mut app.tokens, app.token),
        Pane::Prompt if app.session.is_some() => flip(&mut app.prompt_selected, app.prompt_cursor),
        Pane::Image if app.session.is_some() => {
            app.patch_mode = true;
            flip(&mut app.patches, app.patch);
        }
        Pane::Method if app.attn_view == AttnView::Heads && !app.view.heads.is_empty() => {
            app.agg = if app.agg == Agg::Head {
                Agg::Mean
            } else {
                Agg::Head
            };
        }
        _ => {}
    }
}

fn arrow(app: &mut App, dx: isize, dy: isize) {
    let (layers, heads) = app.layers_heads();
    match app.focus {
        Pane::Answer => app.token = clamp_step(app.token, dx + dy, app.num_tokens()),
        Pane::Prompt => {
            if let Some(s) = &app.session {
                let pos = prompt_positions(s);
                let i = pos
                    .iter()
                    .position(|&p| p == app.prompt_cursor)
                    .unwrap_or(0);
                app.prompt_cursor = pos[clamp_step(i, dx + dy, pos.len())];
            }
        }
        Pane::Image => {
            let [rows, cols] = app.grid();
            if rows * cols > 0 {
                let r = clamp_step(app.patch / cols, dy, rows);
                let c = clamp_step(app.patch % cols, dx, cols);
                app.patch = r * cols + c;
            }
        }
        Pane::Method => {
            // Walk through the heads in the order the small multiples show them.
            let order: Vec<usize> = app.view.heads.iter().map(|h| h.0).collect();
            if !order.is_empty() {
                let i = order.iter().position(|&h| h == app.head);
                let next = match i {
                    Some(i) => clamp_step(i, dx + dy, order.len()),
                    None => 0,
                };
                app.head = order[next];
                app.agg = Agg::Head;
            }
        }
        Pane::Grid => {
            app.layer = clamp_step(app.layer, dx, layers);
            app.head = clamp_step(app.head, dy, heads);
            app.agg = Agg::Head;
        }
    }
}

fn mouse(app: &mut App, m: MouseEvent) {
    if m.kind != MouseEventKind::Down(MouseButton::Left) || app.form.is_some() {
        return;
    }
    let hits = hits(app, app.screen);
    let (x, y) = (m.column, m.row);
    if let Some(p) = hits.pane_at(x, y) {
        app.focus = p;
    }
    if let Some(t) = hits.answer_at(x, y) {
        app.token = t;
    } else if let Some(p) = hits.prompt_at(x, y) {
        app.prompt_cursor = p;
    } else if let Some(p) = hits.image.and_then(|g| g.patch_at(x, y)) {
        app.patch = p;
        if app.patch_mode && !app.patches.remove(&p) {
            app.patches.insert(p);
        }
    } else if let Some((l, h, _)) = hits.grid_at(x, y) {
        app.layer = l;
        app.head = h;
        app.agg = Agg::Head;
    }
}
