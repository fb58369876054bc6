//! The compare split view (`tui --session A --compare B`, or `B` in the app): a second session
//! beside the first. The screen divides into an A and a B side, each with its header, answer,
//! prompt, image with its map and method pane ([`draw`]); one side is focused and every key
//! acts on it, and in linked mode (the default) the token and patch cursors, method, layer,
//! heads and region move the other side with it ([`link`]). A strip between them shows, for
//! the selected tokens, A − B on one scale with Spearman's ρ when both saw the same pixels, and
//! every answer token's image reliance in both — the numbers of `lvlmscope compare`
//! ([`crate::explain::compare`]).
//!
//! The focused side lives in the app's own [`App::doc`], so every key, model job and save works
//! on it unchanged; the other side is kept in a [`SessionState`] of its own and the two are
//! swapped whole when the focus moves.

pub mod cache;
pub mod draw;
pub mod link;
pub mod open;
pub mod side;
pub mod strip;

use std::sync::atomic::Ordering;

use crate::explain::catalogue::MapId;
use crate::explain::compare::{self, TokenMaps};
use crate::session::Session;

use super::app::{App, SessionState};
use super::state::Pane;
use cache::{RelianceCache, Stamped};

/// Which side of the split view: A (the first session) or B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Session A.
    A,
    /// Session B.
    B,
}

impl Which {
    /// `A` or `B`.
    pub fn letter(self) -> char {
        match self {
            Which::A => 'A',
            Which::B => 'B',
        }
    }

    /// The other side.
    pub fn other(self) -> Which {
        match self {
            Which::A => Which::B,
            Which::B => Which::A,
        }
    }
}

/// The split view's state: the side not focused, which side is, the linked mode, and the
/// comparison of the selected tokens.
#[derive(Debug)]
pub struct ComparePane {
    /// The side that is not focused (the focused one is [`App::doc`]).
    pub other: Box<SessionState>,
    /// The names shown for A and B (their file names).
    pub names: [String; 2],
    /// The focused side.
    pub focused: Which,
    /// Token and patch cursors, method, layer, heads and region move both sides together.
    pub linked: bool,
    /// The answer tokens compared: A's and B's first selected token.
    pub tokens: [usize; 2],
    /// The comparison of those tokens under the shown map, or why there is none.
    pub result: Result<Compared, String>,
    /// Which side asked for the work in progress whose result carries no session epoch.
    pub asked: Asked,
    /// Each session's per-token reliance, kept while the session is unchanged.
    pub reliance: RelianceCache,
}

/// The side that asked for a live run and a save still under way (their results go to it even
/// when the focus has moved; model jobs and causal results carry their session's epoch
/// instead).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// A live run (a new run or a follow-up replaces that side's session).
    pub run: Option<Which>,
    /// A save.
    pub save: Option<Which>,
}

impl ComparePane {
    /// The name of side `w`.
    pub fn name(&self, w: Which) -> &str {
        &self.names[w as usize]
    }

    /// Session A and session B of `app`'s split view.
    pub fn sessions<'a>(&'a self, app: &'a App) -> (Option<&'a Session>, Option<&'a Session>) {
        let (mine, other) = (app.doc.session.as_ref(), self.other.session.as_ref());
        match self.focused {
            Which::A => (mine, other),
            Which::B => (other, mine),
        }
    }
}

/// What the strip shows: both answers with every token's image reliance, and the compared
/// tokens' maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    /// A's and B's answers and per-token image reliance.
    pub reliance: [compare::Side; 2],
    /// The maps of A's and B's compared tokens with their difference and ρ when both saw the
    /// same pixels, or one sentence saying why there are none.
    pub maps: Result<TokenMaps, String>,
}

/// Compares A's token `ta` with B's token `tb` under map `id`, over the image regions each side
/// shows: every answer token's reliance in both sessions (kept in `cache` while a session's
/// stamp is unchanged), both maps, and their difference and ρ when the pixels match. The one
/// call the split view makes for its numbers.
pub fn comparison(
    cache: &mut RelianceCache,
    a: Stamped<'_>,
    b: Stamped<'_>,
    [ta, tb]: [usize; 2],
    id: &MapId,
    regions: [usize; 2],
) -> Compared {
    let maps = compare::token_maps(a.0, b.0, &[[ta, tb]], id, regions)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            m.into_iter()
                .next()
                .ok_or_else(|| "no token compared".into())
        });
    Compared {
        reliance: cache.sides(a, b),
        maps,
    }
}

/// Opens `session` (named `name`, loaded from `path`) as side B beside the app's session,
/// replacing a B already open; the app's side keeps the focus (it becomes A when B had it).
pub fn open_b(app: &mut App, session: Session, name: String, path: Option<std::path::PathBuf>) {
    close(app);
    let mut b = app.doc.beside();
    std::mem::swap(&mut b, &mut app.doc);
    // B's epochs stay apart from A's, so a job's result goes to the side it was asked for.
    app.doc.epoch = b.epoch.max(app.doc.epoch) + (1 << 32);
    app.set_session(session, path);
    std::mem::swap(&mut b, &mut app.doc);
    let a_name = app
        .doc
        .session_path
        .as_ref()
        .and_then(|p| p.file_name())
        .map_or_else(|| "this session".into(), |n| n.to_string_lossy().into());
    app.compare = Some(ComparePane {
        other: Box::new(b),
        names: [a_name, name],
        focused: Which::A,
        linked: true,
        tokens: [0, 0],
        result: Err("nothing compared yet".into()),
        asked: Asked::default(),
        reliance: RelianceCache::default(),
    });
    if app.focus == Pane::Grid {
        app.focus = Pane::Answer;
    }
    link::sync(app);
    app.refresh();
}

/// What side B had under way when the split view was closed: its results are dropped when they
/// come back, with a notice, instead of landing on A.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Orphans {
    /// The closed B's session epoch (its model jobs and causal results carry it).
    pub epoch: Option<u64>,
    /// B's live run.
    pub run: bool,
    /// B's save.
    pub save: bool,
}

/// Closes the split view; A stays (and takes the focus back when B had it). B's model job and
/// live run under way are cancelled and their results dropped when they come back
/// ([`Orphans`]). `None` when there was no split view, else what was cancelled (`""` when
/// nothing).
pub fn close(app: &mut App) -> Option<String> {
    let mut c = app.compare.take()?;
    if c.focused == Which::B {
        std::mem::swap(&mut *c.other, &mut app.doc);
    }
    let mine = |slot: Option<Which>| slot == Some(Which::B);
    app.orphans = Orphans {
        epoch: Some(c.other.epoch),
        run: mine(c.asked.run),
        save: mine(c.asked.save),
    };
    let mut cancelled = Vec::new();
    if let Some(job) = c.other.job.take() {
        job.cancel.store(true, Ordering::SeqCst);
        cancelled.push(job.job.describe());
    }
    if app.orphans.run {
        if let Some(cancel) = &app.run.cancel {
            cancel.store(true, Ordering::SeqCst);
        }
        cancelled.push("its live run".into());
    }
    Some(cancelled.join(" and "))
}

/// The side showing the session with epoch `epoch`: the app's own (the focused side) or the
/// split view's other side; `None` when neither does.
pub fn side_of(app: &App, epoch: u64) -> Option<Which> {
    let focused = app.compare.as_ref().map_or(Which::A, |c| c.focused);
    if app.doc.epoch == epoch {
        return Some(focused);
    }
    let other = app.compare.as_ref()?.other.epoch == epoch;
    other.then(|| focused.other())
}

/// Gives the focus to the other side (its keys, jobs and saves act on it from now on).
pub fn switch(app: &mut App) {
    let Some(mut c) = app.compare.take() else {
        return;
    };
    std::mem::swap(&mut *c.other, &mut app.doc);
    c.focused = c.focused.other();
    app.compare = Some(c);
}

/// Recomputes what the split view derives: the other side's view (as the app's own is) and
/// the comparison of both sides' first selected tokens under the shown map.
pub fn refresh(app: &mut App) {
    let Some(mut c) = app.compare.take() else {
        return;
    };
    c.other.refresh_view();
    let first = |view: &super::view::View| view.tokens.first().copied().unwrap_or(0);
    let (mine, other) = (first(&app.doc.view), first(&c.other.view));
    let regions = (app.doc.image.region(), c.other.image.region());
    let (tokens, regions) = match c.focused {
        Which::A => ([mine, other], [regions.0, regions.1]),
        Which::B => ([other, mine], [regions.1, regions.0]),
    };
    c.tokens = tokens;
    let id = app.map_id();
    let (mine, other) = (app.doc.stamped(), c.other.stamped());
    let sessions = match c.focused {
        Which::A => (mine, other),
        Which::B => (other, mine),
    };
    c.result = match sessions {
        (Some(a), Some(b)) => Ok(comparison(&mut c.reliance, a, b, c.tokens, &id, regions)),
        _ => Err("no session A".into()),
    };
    app.compare = Some(c);
}
