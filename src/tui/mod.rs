//! The ratatui app, in the Elm manner: one [`App`] model, a [`Msg`] for everything that can
//! happen, [`update`], and [`draw`]. The panes are components (`component.rs`) that own their
//! state and read the rest through shared model types (`state`, `msg`, `view`), never the app
//! (docs/design.md, "The app"). Long work (live runs, saving, causal explanations, model jobs
//! such as relevancy and faithfulness) runs on worker threads and reports back as messages; the
//! draw loop never waits.

pub mod app;
pub mod blocks;
pub mod compare;
pub mod component;
pub mod grid;
mod header;
pub mod help;
pub mod hits;
pub mod image;
pub mod keymap;
pub mod method;
pub mod msg;
pub mod prompt;
pub mod run_form;
pub mod state;
pub mod status;
pub mod tokens;
pub mod update;
pub mod view;
pub mod worker;

pub use app::draw;
pub use app::draw::draw;
pub use app::App;
pub use update::jobs;
pub use update::{update, Cmd, Msg};
pub use worker::{GenerateRunner, JobRunner, LiveRequest, RunEvent, Runner};

use std::io::Stdout;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;

use crate::session::{self, AttentionDtype};
use crate::style::overlay::{denormalize, overlay, write_png};
use crate::style::{ColorMode, Look, Theme};

/// What `lvlmscope tui` was asked to open.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TuiOptions {
    /// A session file to open without the model.
    pub session: Option<PathBuf>,
    /// A model folder or id for live runs.
    pub model: Option<String>,
    /// An image for live runs.
    pub image: Option<PathBuf>,
    /// A prompt for live runs.
    pub prompt: Option<String>,
    /// A built-in theme name or a TOML theme file.
    pub theme: Option<String>,
    /// A head score file (`eval --heads --json`) to colour the heads × layers grid by.
    pub heads: Option<PathBuf>,
    /// A second session to show beside the first (the compare split view).
    pub compare: Option<PathBuf>,
    /// Device and dtype of live runs, follow-ups and model jobs (`--device`, `--dtype`).
    pub settings: crate::job::RunSettings,
}

/// The look for a `--theme` value and the terminal's colour mode.
pub fn look_for(theme: Option<&str>) -> Result<Look, crate::style::ThemeError> {
    let theme = match theme {
        Some(t) => Theme::load(t)?,
        None => Theme::dark(),
    };
    Ok(Look::new(theme, ColorMode::detect()))
}

/// Builds the app `opts` ask for; a session that fails to load becomes a notice in the app.
pub fn initial_app(opts: &TuiOptions, look: Look) -> (App, Option<LiveRequest>) {
    let mut app = App::new(look);
    let mut start = None;
    if let Some(p) = &opts.heads {
        match read_head_scores(p) {
            Ok(scores) => app.doc.grid.give_scores(scores),
            Err(e) => app.notify(e, true),
        }
    }
    if let Some(p) = &opts.session {
        match session::load(p) {
            Ok(s) => app.set_session(s, Some(p.clone())),
            Err(e) => app.notify(e.to_string(), true),
        }
        // Without session A (it failed to load: the notice says why) there is nothing to
        // compare B with.
        if let Some(b) = opts.compare.as_ref().filter(|_| app.doc.session.is_some()) {
            match session::load(b) {
                Ok(s) => compare::open_b(&mut app, s, compare::open::name_of(b), Some(b.clone())),
                Err(e) => app.notify(format!("cannot compare with {}: {e}", b.display()), true),
            }
        }
    } else {
        let model = opts.model.clone().unwrap_or_default();
        let image = opts
            .image
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let prompt = opts.prompt.clone().unwrap_or_default();
        if !model.is_empty() && !image.is_empty() && !prompt.is_empty() {
            start = Some(LiveRequest {
                model,
                image: PathBuf::from(image),
                prompt,
                max_new_tokens: 64,
                history: None,
            });
        } else {
            app.form.open(model, image, prompt);
        }
    }
    (app, start)
}

/// The head scores of the file at `path`, or one sentence saying why it cannot be read.
pub fn read_head_scores(path: &std::path::Path) -> Result<grid::HeadScores, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the head score file {}: {e}", path.display()))?;
    let scores = crate::explain::catalogue::heads::read_scores(&text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    Ok(grid::HeadScores { source, scores })
}

/// Runs the app for `opts` until the user quits. Live runs use `runner` (none: they report that
/// this build cannot run models).
pub fn run(opts: TuiOptions) -> anyhow::Result<()> {
    let (runner, jobs) = model_runners(opts.settings);
    run_with_jobs(opts, Some(runner), jobs)
}

/// The runners of the real model for live runs (and follow-ups) and for model jobs, holding one
/// copy of the weights between them (a [`crate::job::SharedModel`]) and running with
/// `settings`.
pub fn model_runners(settings: crate::job::RunSettings) -> (Arc<dyn Runner>, Box<dyn JobRunner>) {
    let shared = crate::job::SharedModel::default();
    (
        Arc::new(worker::GenerateRunner::new(shared.clone(), settings)),
        Box::new(crate::job::ModelService::shared(shared, settings)),
    )
}

/// The job runner model jobs use: a [`crate::job::ModelService`], which keeps the model it
/// loaded for the next job.
pub fn default_job_runner() -> Box<dyn JobRunner> {
    Box::new(crate::job::ModelService::new())
}

/// The runner live runs use: the model through `job::run`.
pub fn default_runner() -> Option<Arc<dyn Runner>> {
    Some(Arc::new(worker::GenerateRunner::default()))
}

/// Like [`run`], with an explicit runner.
pub fn run_with(opts: TuiOptions, runner: Option<Arc<dyn Runner>>) -> anyhow::Result<()> {
    run_with_jobs(opts, runner, default_job_runner())
}

/// Like [`run_with`], with an explicit job runner for model jobs (relevancy, faithfulness).
pub fn run_with_jobs(
    opts: TuiOptions,
    runner: Option<Arc<dyn Runner>>,
    jobs: Box<dyn JobRunner>,
) -> anyhow::Result<()> {
    let look = look_for(opts.theme.as_deref())?;
    let (mut app, start) = initial_app(&opts, look);
    let (tx, rx) = channel();
    let mut runtime = Runtime {
        runner,
        job_runner: Some(jobs),
        job_worker: None,
        tx,
    };
    if let Some(req) = start {
        app.run.active = true;
        app.run.stage = "starting".into();
        runtime.execute(&mut app, Cmd::StartRun(req));
    }
    install_panic_hook();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    spawn_hangup_watchdog(stop.clone());
    let mut terminal = enter()?;
    let result = event_loop(&mut terminal, &mut app, &mut runtime, &rx, &stop);
    leave();
    result
}

/// Executes commands for the app: worker threads that report back on `tx`.
struct Runtime {
    runner: Option<Arc<dyn Runner>>,
    /// The job runner, until the job worker is started around it on the first model job.
    job_runner: Option<Box<dyn JobRunner>>,
    job_worker: Option<worker::JobWorker>,
    tx: Sender<Msg>,
}

impl Runtime {
    fn execute(&mut self, app: &mut App, cmd: Cmd) {
        match cmd {
            Cmd::StartRun(req) => match &self.runner {
                Some(r) => {
                    let cancel = Arc::new(AtomicBool::new(false));
                    app.run.cancel = Some(cancel.clone());
                    worker::spawn_run(r.clone(), req, cancel, self.tx.clone());
                }
                None => {
                    let _ = self.tx.send(Msg::RunDone(Err(
                        "this build cannot run models; open a saved session with --session".into(),
                    )));
                }
            },
            Cmd::Save(path) => {
                let Some(s) = app.saved_conversation() else {
                    return;
                };
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let r = session::save(&s, &path, AttentionDtype::F16)
                        .map(|_| path)
                        .map_err(|e| e.to_string());
                    let _ = tx.send(Msg::Saved(r));
                });
            }
            Cmd::Export(path) => {
                let r = export_png(app, &path).map(|_| path);
                let _ = self.tx.send(Msg::Exported(r));
            }
            Cmd::ComputeCausal(t, params) => {
                let Some(s) = app.doc.session.as_ref() else {
                    return;
                };
                let tx = self.tx.clone();
                let s = s.clone();
                let epoch = app.doc.epoch;
                std::thread::spawn(move || {
                    let r = crate::explain::causal::compute_token(&s, t, &params)
                        .map_err(|e| e.to_string());
                    let done = Msg::CausalDone(t, params, r);
                    let _ = tx.send(Msg::ForSession(epoch, Box::new(done)));
                });
            }
            Cmd::ForSession(epoch, cmd) => {
                let Some(w) = compare::side_of(app, epoch) else {
                    return;
                };
                let flip = app.compare.as_ref().is_some_and(|c| c.focused != w);
                if flip {
                    compare::switch(app);
                }
                self.execute(app, *cmd);
                if flip {
                    compare::switch(app);
                }
            }
            Cmd::ModelJob(id, job) => {
                let Some(req) = jobs::job_request(app, id) else {
                    return;
                };
                if self.job_worker.is_none() {
                    if let Some(r) = self.job_runner.take() {
                        self.job_worker = Some(worker::spawn_job_worker(r, self.tx.clone()));
                    }
                }
                let sent = self.job_worker.as_ref().is_some_and(|w| w.submit(req));
                if !sent {
                    let _ = self.tx.send(Msg::JobDone(worker::JobDone {
                        id,
                        epoch: app.doc.epoch,
                        job,
                        result: Err("the job worker is gone".into()),
                    }));
                }
            }
            Cmd::LoadCompare(path) => {
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(compare::open::load(&path));
                });
            }
        }
    }
}

/// Writes the current map over the image at the image's own resolution.
pub fn export_png(app: &App, path: &std::path::Path) -> Result<(), String> {
    let (Some(s), Some(map)) = (app.doc.session.as_ref(), &app.doc.view.map) else {
        return Err("no map to export".into());
    };
    let img = denormalize(&s.pixel_values);
    let out = overlay(
        &img,
        map,
        app.doc.view.range,
        app.look.colormap,
        app.doc.image.opacity(),
    );
    write_png(&out, path).map_err(|e| e.to_string())
}

type Term = Terminal<CrosstermBackend<Stdout>>;

fn enter() -> anyhow::Result<Term> {
    enable_raw_mode()?;
    let mut out = std::io::stdout();
    execute!(out, EnterAlternateScreen, EnableMouseCapture)?;
    let mut t = Terminal::new(CrosstermBackend::new(out))?;
    t.hide_cursor()?;
    t.clear()?;
    Ok(t)
}

/// After a signal, gives the event loop half a second to quit on its own, then restores the
/// terminal and exits. When the terminal is gone (SSH dropped, tmux pane killed), crossterm's
/// blocking read spins on end-of-file and the loop never sees the signal; this ends the process
/// instead of leaving it burning a core.
fn spawn_hangup_watchdog(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        leave();
        std::process::exit(130);
    });
}

/// Restores the terminal: cooked mode, main screen, no mouse capture, cursor shown.
pub fn leave() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Worker threads catch their panics and report them as messages; only the UI thread's
        // panic ends the app, so only it gives the terminal back.
        if std::thread::current().name() == Some("main") {
            leave();
        }
        previous(info);
    }));
}

fn event_loop(
    terminal: &mut Term,
    app: &mut App,
    runtime: &mut Runtime,
    rx: &Receiver<Msg>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let size = terminal.size()?;
    app.screen = Rect::new(0, 0, size.width, size.height);
    terminal.draw(|f| draw(f, app))?;
    loop {
        let mut msgs = Vec::new();
        if event::poll(Duration::from_millis(40))? {
            msgs.push(event::read()?);
            while event::poll(Duration::ZERO)? {
                msgs.push(event::read()?);
            }
        }
        let mut dirty = false;
        for e in msgs {
            let msg = match e {
                Event::Key(k) => Msg::Key(k),
                Event::Mouse(m) => Msg::Mouse(m),
                Event::Resize(w, h) => Msg::Resize(w, h),
                _ => continue,
            };
            for cmd in update(app, msg) {
                runtime.execute(app, cmd);
            }
            dirty = true;
        }
        while let Ok(msg) = rx.try_recv() {
            for cmd in update(app, msg) {
                runtime.execute(app, cmd);
            }
            dirty = true;
        }
        if stop.load(Ordering::SeqCst) {
            update(app, Msg::Interrupt);
        }
        if app.quit {
            return Ok(());
        }
        if dirty {
            terminal.autoresize()?;
            terminal.draw(|f| draw(f, app))?;
        }
    }
}
