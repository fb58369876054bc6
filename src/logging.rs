//! The log file, set up once at the binary's edge: when `LVLMSCOPE_LOG` holds a filter
//! (`info`, `lvlmscope=debug`, ...), events and span closings (with their busy and idle times)
//! go to `LVLMSCOPE_LOG_FILE`, else to `lvlmscope.log` in the cache folder the demo model uses,
//! through a non-blocking writer. Never to the terminal: the TUI owns it. Unset, nothing is
//! set up.

use std::fs::OpenOptions;
use std::path::PathBuf;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// The variable holding the filter directive.
const LOG_VAR: &str = "LVLMSCOPE_LOG";
/// The variable naming the log file.
const FILE_VAR: &str = "LVLMSCOPE_LOG_FILE";

/// The logging of one process: the writer's guard (the log is flushed when it drops) and the
/// lines to tell the user on stderr, when the terminal is theirs.
#[derive(Default)]
pub struct Logging {
    _guard: Option<WorkerGuard>,
    notes: Vec<String>,
}

impl Logging {
    /// Sets up the subscriber when `LVLMSCOPE_LOG` is set; a bad directive or an unwritable
    /// file leaves the program without a log and says why in [`Logging::notes`].
    pub fn init() -> Self {
        let Some(directive) = std::env::var_os(LOG_VAR).filter(|v| !v.is_empty()) else {
            return Self::default();
        };
        match start(&directive.to_string_lossy()) {
            Ok((guard, path)) => Self {
                _guard: Some(guard),
                notes: vec![format!("logging to {}", path.display())],
            },
            Err(why) => Self {
                _guard: None,
                notes: vec![format!("{why}; running without a log")],
            },
        }
    }

    /// Prints what the user should know (where the log goes, or why there is none) on stderr,
    /// once; call it while no full-screen view holds the terminal.
    pub fn tell(&mut self) {
        for note in self.notes.drain(..) {
            eprintln!("lvlmscope: {note}");
        }
    }
}

/// The log file's path: `LVLMSCOPE_LOG_FILE`, else `lvlmscope.log` in the cache folder.
fn log_path() -> PathBuf {
    match std::env::var_os(FILE_VAR).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => lvlmscope::demo::cache::cache_root().join("lvlmscope.log"),
    }
}

/// Parses `directive`, opens the log file for appending and installs the global subscriber;
/// the error is one sentence.
fn start(directive: &str) -> Result<(WorkerGuard, PathBuf), String> {
    let filter = EnvFilter::builder().parse(directive).map_err(|e| {
        format!("{LOG_VAR}={directive:?} is not a log filter such as info or lvlmscope=debug ({e})")
    })?;
    let path = log_path();
    let file = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| OpenOptions::new().create(true).append(true).open(&path))
        .map_err(|e| format!("could not write the log file {}: {e}", path.display()))?;
    // Not lossy: a profile missing span closings would mislead; when the writer falls behind
    // its buffer, logging waits rather than drops lines.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(file);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_span_events(FmtSpan::CLOSE)
        .try_init()
        .map_err(|e| format!("could not set up the log: {e}"))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        args = ?std::env::args().skip(1).collect::<Vec<_>>(),
        sync = lvlmscope::trace::sync_enabled(),
        "lvlmscope started"
    );
    Ok((guard, path))
}
