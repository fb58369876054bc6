//! Model jobs on the open session (relevancy on demand, faithfulness of the maps): asking for
//! one, its progress, Esc, and storing what comes back; part of `update`. The work itself runs
//! on the job worker ([`super::super::worker`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::explain::{lens, relevancy};
use crate::job::{JobOutput, JobProgress, ModelJob};

use super::super::app::{App, PendingJob};
use super::super::msg::{Cmd, JobDone};
use super::super::worker::JobRequest;

/// Makes `job` the pending job and returns the command that starts it; refuses (with a notice)
/// while another job runs.
pub fn start(app: &mut App, job: ModelJob) -> Vec<Cmd> {
    if let Some(p) = &app.doc.job {
        app.notify(
            format!(
                "{} is still being computed (Esc cancels it)",
                p.job.describe()
            ),
            true,
        );
        return Vec::new();
    }
    app.status.clear();
    begin(app, job)
}

/// Makes `job` the pending job and returns the command that starts it, without touching the
/// notice (for jobs the app starts by itself); the caller checks that no job is pending.
pub fn begin(app: &mut App, job: ModelJob) -> Vec<Cmd> {
    app.last_job_id += 1;
    let id = app.last_job_id;
    app.doc.job = Some(PendingJob {
        id,
        job: job.clone(),
        stage: "starting".into(),
        fraction: 0.0,
        cancel: Arc::new(AtomicBool::new(false)),
    });
    vec![Cmd::ModelJob(id, job)]
}

/// Esc: cancels the pending job. The worker stops at its next check; a gradient pass already
/// under way finishes, and its rows are kept when they arrive. A cancelled faithfulness job
/// stops the block's automatic computing until `f`.
pub fn cancel(app: &mut App) {
    if let Some(p) = app.doc.job.take() {
        p.cancel.store(true, Ordering::SeqCst);
        match p.job {
            ModelJob::Faithfulness { .. } => {
                app.doc.method.faith_mut().halted = Some("cancelled".into())
            }
            ModelJob::Lens { .. } => app.doc.method.halt_lens("cancelled".into()),
            _ => {}
        }
        app.notify(format!("cancelled {}", p.job.describe()), false);
    }
}

/// Progress of job `id`.
pub fn progress(app: &mut App, id: u64, p: JobProgress) {
    let Some(job) = app.doc.job.as_mut().filter(|j| j.id == id) else {
        return;
    };
    match p {
        JobProgress::Stage(s) => {
            job.stage = s;
            job.fraction = 0.0;
        }
        JobProgress::Fraction(f) => job.fraction = f,
    }
}

/// A job ended: store its output in the session it was asked for.
pub fn done(app: &mut App, done: JobDone) {
    let pending = app.doc.job.as_ref().is_some_and(|j| j.id == done.id);
    if pending {
        app.doc.job = None;
    }
    if done.epoch != app.doc.epoch {
        return;
    }
    let what = done.job.describe();
    match done.result {
        Err(e) => {
            if pending {
                app.notify(format!("{what} failed: {e}"), true);
                match done.job {
                    ModelJob::Faithfulness { .. } => app.doc.method.faith_mut().halted = Some(e),
                    ModelJob::Lens { .. } => app.doc.method.halt_lens(e),
                    _ => {}
                }
            }
        }
        Ok(JobOutput::Faithfulness {
            token,
            original,
            drops,
            seconds,
            ..
        }) => {
            if let ModelJob::Faithfulness { maps, region, .. } = &done.job {
                app.doc
                    .method
                    .faith_mut()
                    .store(token, *region, maps, original, &drops, seconds);
            }
        }
        Ok(JobOutput::Knockout { result, words }) => {
            app.notify(
                format!(
                    "{what}: Δp {:+.4} (the method pane shows it)",
                    result.delta_p
                ),
                false,
            );
            if let ModelJob::Knockout(request) = &done.job {
                app.doc.method.store_knockout(request, result, words);
            }
        }
        Ok(JobOutput::Lens {
            lens: reading,
            words,
        }) => {
            let Some(s) = app.doc.session.as_mut() else {
                return;
            };
            app.doc.method.add_words(words);
            lens::store(s, reading);
            app.doc.modified = true;
            let keep = saved_where(app);
            app.notify(format!("{what} computed: {keep}"), false);
        }
        Ok(JobOutput::Relevancy(maps)) => {
            if app.doc.session.is_none() {
                return;
            }
            // An empty result changes nothing: the session's revision stays.
            if maps.tokens.is_empty() {
                app.notify(format!("the session already holds {what}"), false);
                return;
            }
            let Some(s) = app.doc.session.as_mut() else {
                return;
            };
            match relevancy::store(s, &maps) {
                Ok(()) => {
                    app.doc.modified = true;
                    let late = if pending { "" } else { " (after cancel; kept)" };
                    let keep = saved_where(app);
                    app.notify(
                        format!("{what} computed in {:.2}s{late}: {keep}", maps.seconds),
                        false,
                    );
                }
                Err(e) => app.notify(format!("{what} could not be stored: {e}"), true),
            }
        }
    }
}

/// The job request for the pending job `id` of the app's session or of the split view's other
/// side, if that job is still pending.
pub fn job_request(app: &App, id: u64) -> Option<JobRequest> {
    let other = app.compare.as_ref().map(|c| &*c.other);
    [Some(&app.doc), other]
        .into_iter()
        .flatten()
        .find_map(|side| {
            let pending = side.job.as_ref().filter(|p| p.id == id)?;
            Some(JobRequest {
                id,
                epoch: side.epoch,
                session: crate::job::service::job_input(side.session.as_ref()?),
                job: pending.job.clone(),
                cancel: pending.cancel.clone(),
            })
        })
}

/// Where a result computed on the shown turn is kept: with the turn while the app runs, and
/// `s` saves it in the session file (an earlier turn's in its per-turn fields).
fn saved_where(app: &App) -> &'static str {
    if app.doc.talk.is_some() {
        "kept with this turn; s saves it in the session"
    } else {
        "s saves it in the session"
    }
}
