//! `lvlmscope batch`: many questions, one model load. Each line of a JSONL file (see [`input`])
//! runs through the same job as `lvlmscope run` ([`crate::job::run_with`], any model family) and is saved as
//! `OUT/<id>.session`; a [`summary`] row per line is written after each one, so a killed batch
//! leaves a consistent summary that `--resume` continues from. A bad line is a row with its
//! error, never the end of the batch.

pub mod input;
pub mod summary;

pub use input::{sanitize_id, Entry, Job, Shard};
pub use summary::{Row, Status};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::explain::catalogue;
use crate::explain::faithfulness::DEFAULT_DROP_FRACTION;
use crate::generate::{Progress, RunRequest};
use crate::job::SessionModel;
use crate::session::{self, AttentionDtype};

/// Why a batch could not run at all (a bad line is not one: it becomes a summary row).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The questions file could not be read.
    #[error("could not read the questions file {path}: {source}")]
    Questions {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The output folder could not be created.
    #[error("could not create the output folder {path}: {source}")]
    OutDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The summary could not be written.
    #[error("could not write the summary {path}: {source}")]
    Summary {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a batch reads and where it writes.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// The questions file (JSONL).
    pub questions: PathBuf,
    /// The output folder (created when missing).
    pub out: PathBuf,
    /// Which lines this process takes.
    pub shard: Shard,
    /// Skip lines whose session already exists, keeping their summary rows.
    pub resume: bool,
    /// The settings of every run; its image and prompt are replaced by each line's.
    pub request: RunRequest,
    /// How the sessions store attention.
    pub attention: AttentionDtype,
    /// Measure the faithfulness (Δp) of the session's maps of the first answer token.
    pub faithfulness: bool,
}

impl BatchOptions {
    /// The summary files, `summary.jsonl` and `summary.csv`; with `--shard I/N` (N > 1)
    /// `summary.I-of-N.jsonl` and `.csv`, so that the processes of a job array sharing one
    /// output folder do not overwrite each other's.
    pub fn summary_paths(&self) -> (PathBuf, PathBuf) {
        let stem = if self.shard.count > 1 {
            format!("summary.{}-of-{}", self.shard.index, self.shard.count)
        } else {
            "summary".to_string()
        };
        (
            self.out.join(format!("{stem}.jsonl")),
            self.out.join(format!("{stem}.csv")),
        )
    }

    /// Where the session of line `id` is saved.
    pub fn session_path(&self, id: &str) -> PathBuf {
        self.out.join(format!("{id}.session"))
    }
}

/// Progress of a batch, for a progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchProgress {
    /// The shard holds `total` lines.
    Lines {
        /// Lines this process takes.
        total: usize,
    },
    /// Line `id` began.
    Line {
        /// Its id.
        id: String,
    },
    /// A stage of the current line's run began ("prefill", "decoding", "relevancy", ...).
    Stage(String),
    /// A line ended (run, failed or resumed); `done` lines of the shard are finished.
    Done {
        /// Finished lines.
        done: usize,
    },
}

/// The end of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// One row per line of the shard, in file order.
    pub rows: Vec<Row>,
    /// Lines run in this call.
    pub ran: usize,
    /// Lines skipped because their session existed (`--resume`).
    pub resumed: usize,
    /// The JSONL summary written.
    pub summary_jsonl: PathBuf,
    /// The CSV summary written.
    pub summary_csv: PathBuf,
}

impl Outcome {
    /// Lines whose status is an error.
    pub fn failed(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.status == Status::Error)
            .count()
    }
}

/// Reads the questions, runs this shard's lines with `loaded`, and writes the sessions and the
/// summary into `options.out`.
pub fn run(
    loaded: &SessionModel,
    options: &BatchOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(BatchProgress),
) -> Result<Outcome, BatchError> {
    let text =
        std::fs::read_to_string(&options.questions).map_err(|source| BatchError::Questions {
            path: options.questions.clone(),
            source,
        })?;
    let base = options
        .questions
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let entries: Vec<Entry> = input::parse(&text, &base)
        .into_iter()
        .filter(|e| options.shard.takes(e.index))
        .collect();
    std::fs::create_dir_all(&options.out).map_err(|source| BatchError::OutDir {
        path: options.out.clone(),
        source,
    })?;
    let (jsonl, csv) = options.summary_paths();
    let mut previous: HashMap<String, Row> = if options.resume {
        summary::read_jsonl(&jsonl)
            .into_iter()
            .filter(|r| r.status == Status::Ok)
            .map(|r| (r.id.clone(), r))
            .collect()
    } else {
        HashMap::new()
    };
    progress(BatchProgress::Lines {
        total: entries.len(),
    });
    let mut outcome = Outcome {
        rows: Vec::with_capacity(entries.len()),
        ran: 0,
        resumed: 0,
        summary_jsonl: jsonl,
        summary_csv: csv,
    };
    for (done, entry) in entries.iter().enumerate() {
        progress(BatchProgress::Line {
            id: entry.id.clone(),
        });
        let line = entry.index + 1;
        let kept = if options.resume {
            resumed_row(loaded, options, entry, previous.remove(&entry.id))
        } else {
            None
        };
        let row = match kept {
            Some(row) => {
                outcome.resumed += 1;
                row
            }
            None => match &entry.job {
                Err(error) => Row::failed(&entry.id, line, error.clone(), 0.0),
                Ok(job) => {
                    outcome.ran += 1;
                    run_line(loaded, options, &entry.id, line, job, cancel, progress)
                }
            },
        };
        outcome.rows.push(row);
        write_summary(&outcome)?;
        progress(BatchProgress::Done { done: done + 1 });
    }
    write_summary(&outcome)?;
    Ok(outcome)
}

/// The row of a line whose session exists (its earlier row, or one rebuilt from the session);
/// `None` when the line has to run.
fn resumed_row(
    loaded: &SessionModel,
    options: &BatchOptions,
    entry: &Entry,
    earlier: Option<Row>,
) -> Option<Row> {
    entry.job.as_ref().ok()?;
    let path = options.session_path(&entry.id);
    if !path.is_file() {
        return None;
    }
    if let Some(row) = earlier {
        return Some(row);
    }
    // A session saved without its row (the batch was stopped in between): rebuild the row.
    let session = session::load(&path).ok()?;
    let answer = answer_text(loaded, &session);
    let mut row = Row::of_session(&entry.id, entry.index + 1, &session, answer, 0.0);
    if options.faithfulness {
        row.faithfulness = drops(loaded, &session).ok()?;
    }
    Some(row)
}

/// Runs one good line and saves its session; any failure becomes the row's error.
fn run_line(
    loaded: &SessionModel,
    options: &BatchOptions,
    id: &str,
    line: usize,
    job: &Job,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(BatchProgress),
) -> Row {
    let started = Instant::now();
    let request = RunRequest {
        image: job.image.clone(),
        prompt: job.prompt.clone(),
        ..options.request.clone()
    };
    let result = crate::job::run_with(loaded, &request, cancel, &mut |p| {
        if let Progress::Stage(stage) = p {
            progress(BatchProgress::Stage(stage));
        }
    });
    let session = match result {
        Ok(s) => s,
        Err(e) => return Row::failed(id, line, e.to_string(), started.elapsed().as_secs_f64()),
    };
    let faithfulness = if options.faithfulness {
        match drops(loaded, &session) {
            Ok(d) => d,
            Err(e) => return Row::failed(id, line, e, started.elapsed().as_secs_f64()),
        }
    } else {
        BTreeMap::new()
    };
    let path = options.session_path(id);
    if let Err(e) = session::save(&session, &path, options.attention) {
        let error = format!("could not save the session to {}: {e}", path.display());
        return Row::failed(id, line, error, started.elapsed().as_secs_f64());
    }
    let answer = answer_text(loaded, &session);
    let mut row = Row::of_session(id, line, &session, answer, started.elapsed().as_secs_f64());
    row.faithfulness = faithfulness;
    row
}

/// The probability drop of the first answer token under each map the session can give (the
/// catalogue's standard maps: attention always, relevancy and causal when computed, the random
/// baseline seeded with 0), at [`DEFAULT_DROP_FRACTION`] of the patches.
fn drops(loaded: &SessionModel, s: &session::Session) -> Result<BTreeMap<String, f32>, String> {
    if s.num_output() == 0 {
        return Ok(BTreeMap::new());
    }
    let failed = |e: String| format!("faithfulness failed: {e}");
    let maps = catalogue::compared_maps(s, 0, &[], 0).map_err(|e| failed(e.to_string()))?;
    let mut deletion = loaded
        .deletion(s, 0, None)
        .map_err(|e| failed(e.to_string()))?;
    let values: Vec<Vec<f32>> = maps.iter().map(|(_, m)| m.clone()).collect();
    let d = deletion
        .probability_drops(&values, DEFAULT_DROP_FRACTION)
        .map_err(|e| failed(e.to_string()))?;
    Ok(maps.iter().map(|(id, _)| id.to_string()).zip(d).collect())
}

/// The session's answer as readable text (special tokens left out).
fn answer_text(loaded: &SessionModel, session: &session::Session) -> String {
    let ids: Vec<u32> = session
        .output_ids
        .iter()
        .filter_map(|&i| u32::try_from(i).ok())
        .collect();
    loaded.prompts().decode(&ids).trim().to_string()
}

/// Writes both summary files, atomically.
fn write_summary(outcome: &Outcome) -> Result<(), BatchError> {
    let write = |path: &PathBuf, text: String| {
        summary::write_atomic(path, &text).map_err(|source| BatchError::Summary {
            path: path.clone(),
            source,
        })
    };
    write(&outcome.summary_jsonl, summary::to_jsonl(&outcome.rows))?;
    write(&outcome.summary_csv, summary::to_csv(&outcome.rows))
}
