//! `update`, the one place state changes: messages in, commands out. Keys become actions
//! through the keymap; an action goes to the app's own handlers (focus, method, layer and
//! heads, saving) or to the components, which answer with [`Effect`]s the app applies. Split by
//! concern: actions here, the mouse in [`nav`], saving and exporting in
//! [`files`], what the workers send back in [`results`].

mod files;
pub mod jobs;
mod nav;
mod results;
mod split;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::Rect;

use crate::session::Session;

use super::app::{ctx, App, Method};
use super::component::{Component, Handled};
use super::keymap::Action;
use super::msg::RunEvent;
pub use super::msg::{Cmd, Effect, Msg};
use super::state::clamp_step;

/// Applies `msg` to `app`; returns the work to start.
pub fn update(app: &mut App, msg: Msg) -> Vec<Cmd> {
    let by_user = matches!(msg, Msg::Key(_) | Msg::Mouse(_));
    let mut cmds = match msg {
        Msg::Key(k) if k.kind != KeyEventKind::Release => key(app, k),
        Msg::Key(_) => Vec::new(),
        Msg::Resize(w, h) => {
            app.screen = Rect::new(0, 0, w, h);
            split::resized(app);
            Vec::new()
        }
        Msg::Mouse(m) => {
            nav::mouse(app, m);
            Vec::new()
        }
        Msg::Interrupt => quit(app),
        other => {
            split::from_worker(app, other);
            Vec::new()
        }
    };
    if by_user {
        super::compare::link::sync(app);
    }
    app.refresh();
    if app.quit {
        return cmds;
    }
    cmds.extend(missing_jobs(app));
    cmds.extend(split::on_other(app, missing_jobs));
    split::remember(app, &cmds);
    cmds
}

/// The jobs the app starts by itself: the faithfulness block's missing drops, and on the demo
/// the logit lens the shown map lacks.
fn missing_jobs(app: &mut App) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    if let Some(job) = app.doc.method.missing_faith_job(&app.ctx()) {
        cmds.extend(jobs::begin(app, job));
    }
    let demo = app.doc.session.as_ref().is_some_and(is_demo);
    if let Some(job) = app.doc.method.missing_lens_job(&app.ctx(), demo) {
        cmds.extend(jobs::begin(app, job));
    }
    cmds
}

fn key(app: &mut App, k: KeyEvent) -> Vec<Cmd> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return quit(app);
    }
    if app.form.is_open() {
        let effects = app.form.key(k, app.run.active);
        return apply(app, effects);
    }
    if app.open_b.is_open() {
        return split::prompt_key(app, k);
    }
    let action = app.keymap.action(app.doc.sel.method, &k);
    if app.help.open {
        if matches!(k.code, KeyCode::Char(' ') | KeyCode::PageDown)
            && app.help.next_page(&app.keymap, app.screen)
        {
            return Vec::new();
        }
        // Any other key closes the overlay, bound or not.
        app.help
            .handle(action.unwrap_or(Action::Help), &ctx!(app), &mut Vec::new());
        return Vec::new();
    }
    match action {
        Some(action) => act(app, action),
        None => Vec::new(),
    }
}

/// Does what `action` says (the keymap turned a key into it): the app's own actions first,
/// then the components', the focused pane's first.
fn act(app: &mut App, action: Action) -> Vec<Cmd> {
    if let Some(cmds) = split::act(app, action) {
        return cmds;
    }
    let mut cmds = act_here(app, action);
    if split::on_both(action) && app.compare.is_some() {
        // Linked mode: the other side, moved where this one is, asks for its own.
        super::compare::link::sync(app);
        app.refresh();
        let shown = app.doc.method.faith().shown;
        cmds.extend(split::on_other(app, |app| {
            let cmds = act_here(app, action);
            app.doc.method.faith_mut().shown = shown;
            cmds
        }));
    }
    cmds
}

/// Does `action` on the focused side.
fn act_here(app: &mut App, action: Action) -> Vec<Cmd> {
    let (layers, heads) = app.layers_heads();
    // While the vision map is shown, the layer and head keys move in the vision tower.
    let vision = app.ctx().vision_shown();
    let heads = vision.map_or(heads, |(_, _, hv)| hv);
    let sel = &mut app.doc.sel;
    match action {
        Action::Quit => return quit(app),
        Action::Cancel => return cancel(app),
        Action::NextPane => app.focus = app.focus.cycle(1),
        Action::PrevPane => app.focus = app.focus.cycle(-1),
        Action::ShowAttention => sel.method = Method::Attention,
        Action::ShowRelevancy => return show_method(app, Method::Relevancy),
        Action::ShowCausal => return show_method(app, Method::Causal),
        Action::ShowLens => sel.method = Method::Lens,
        Action::LayerPrev | Action::LayerNext if vision.is_some() => {
            let (at, lv, _) = vision.unwrap_or_default();
            let step = if action == Action::LayerNext { 1 } else { -1 };
            sel.vision_layer = Some(clamp_step(at, step, lv));
        }
        Action::LayerPrev => sel.layer = clamp_step(sel.layer, -1, layers),
        Action::LayerNext => sel.layer = clamp_step(sel.layer, 1, layers),
        Action::HeadPrev => *sel = sel.with_head(clamp_step(sel.head, -1, heads)),
        Action::HeadNext => *sel = sel.with_head(clamp_step(sel.head, 1, heads)),
        Action::RelevancySource => sel.rel_source = sel.rel_source.next(),
        Action::Normalisation => sel.rel_norm = sel.rel_norm.toggle(),
        Action::Heads => sel.agg = sel.agg.next(),
        Action::VisionAttention => sel.vision = !sel.vision,
        Action::ColorMap => app.look.colormap = app.look.colormap.next(),
        Action::ClearSelection => {
            app.doc.answer.clear_selection();
            app.doc.prompt.clear_selection();
            app.doc.image.clear_patches();
        }
        Action::Save => return files::save(app),
        Action::TurnPrev | Action::TurnNext => {
            let (shown, total) = app.doc.turn_position();
            let next = if action == Action::TurnNext {
                shown + 1
            } else {
                shown.saturating_sub(1)
            };
            if total <= 1 {
                app.notify(
                    "the session has one turn: F asks a follow-up question",
                    false,
                );
            } else if next >= 1 && next <= total && app.show_turn(next - 1) {
                let prompt = app.doc.session.as_ref().map(|s| s.manifest.prompt.clone());
                app.notify(
                    format!("turn {next} of {total}: {}", prompt.unwrap_or_default()),
                    false,
                );
            }
            return Vec::new();
        }
        Action::Export => return files::export(app),
        _ => return to_components(app, action),
    }
    Vec::new()
}

/// Offers `action` to the components in turn until one takes it (a pane takes arrows and space
/// only while focused); applies what it asked for.
fn to_components(app: &mut App, action: Action) -> Vec<Cmd> {
    let mut effects = Vec::new();
    // The image pane is borrowed mutably beside the context: it reads a copy of its selection.
    let patches = app.doc.image.patches().clone();
    let ctx = ctx!(app, &patches);
    let components: [&mut dyn Component; 8] = [
        &mut app.help,
        &mut app.doc.image,
        &mut app.doc.answer,
        &mut app.doc.prompt,
        &mut app.doc.method,
        &mut app.doc.grid,
        &mut app.form,
        &mut app.status,
    ];
    for c in components {
        if c.handle(action, &ctx, &mut effects) == Handled::Yes {
            break;
        }
    }
    apply(app, effects)
}

/// Applies what components asked for; returns the commands among it.
fn apply(app: &mut App, effects: Vec<Effect>) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    for e in effects {
        match e {
            Effect::Notify(text, error) => app.notify(text, error),
            Effect::Select(sel) => app.doc.sel = sel,
            Effect::Focus(p) => app.focus = p,
            Effect::StartJob(job) => cmds.extend(jobs::start(app, job)),
            Effect::StartRun(req) => {
                app.run = super::state::RunState {
                    active: true,
                    stage: "starting".into(),
                    ..Default::default()
                };
                cmds.push(Cmd::StartRun(req));
            }
            Effect::Cmd(c) => cmds.push(c),
            Effect::FollowUp(prompt) => cmds.extend(follow_up(app, prompt)),
        }
    }
    cmds
}

/// Starts a follow-up question on the whole conversation shown, as a live run (the result is
/// the conversation with the new turn).
fn follow_up(app: &mut App, prompt: String) -> Vec<Cmd> {
    let Some(talk) = app.doc.conversation() else {
        return Vec::new();
    };
    let req = super::msg::LiveRequest {
        model: talk.manifest.model.path.clone(),
        image: talk.manifest.image.path.clone().into(),
        prompt,
        max_new_tokens: 64,
        history: Some(Box::new(talk.clone())),
    };
    apply(app, vec![Effect::StartRun(req)])
}

/// Esc: cancels the live run, else the model job, else goes to the components (the image pane
/// leaves patch mode, else the status line dismisses its notice).
fn cancel(app: &mut App) -> Vec<Cmd> {
    if let Some(c) = &app.run.cancel {
        c.store(true, std::sync::atomic::Ordering::SeqCst);
        app.notify("cancelling the run…", false);
    } else if app.doc.job.is_some() {
        split::cancel_other(app);
        jobs::cancel(app);
    } else if split::cancel_other(app) {
        app.notify("cancelled the other side's job", false);
    } else {
        return to_components(app, Action::Cancel);
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
    app.doc.sel.method = method;
    app.refresh();
    if !app.doc.session.as_ref().is_some_and(is_demo) || app.doc.view.map.is_some() {
        return Vec::new();
    }
    match method {
        Method::Relevancy if app.doc.job.is_none() => to_components(app, Action::ComputeRelevancy),
        Method::Causal => to_components(app, Action::ComputeCausal),
        _ => Vec::new(),
    }
}

fn quit(app: &mut App) -> Vec<Cmd> {
    if let Some(c) = &app.run.cancel {
        c.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let other = app.compare.as_ref().and_then(|c| c.other.job.as_ref());
    for job in app.doc.job.iter().chain(other) {
        job.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    app.quit = true;
    Vec::new()
}
