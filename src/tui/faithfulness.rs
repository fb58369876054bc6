//! The faithfulness block: for the current answer token, the probability drop Δp of every map
//! the session holds (raw attention as the current layer and heads show it, the standard
//! attention maps, relevancy, causal, and a random map as the baseline): the token's
//! probability with the original image minus its probability with the map's top 20 % of
//! patches replaced by the image's mean colour (`explain::faithfulness`). A map whose removal
//! hurts the answer most is the one to trust.
//!
//! `f` shows or hides the block; while it is shown, the numbers the current token lacks are
//! computed on the job worker with the session's model (one deletion experiment per token,
//! the original image run once). Results are cached per (token, map name) for the session,
//! together with the map they were measured on, so a map that changed (new relevancy rows, a
//! causal result with other parameters) is measured again.

use std::collections::HashMap;

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::Frame;

use crate::explain::catalogue;
use crate::explain::faithfulness::DEFAULT_DROP_FRACTION;
use crate::job::ModelJob;
use crate::session::Session;

use super::app::App;
use super::blocks::{bar, display_token, put};
use super::update::Cmd;

/// The name of the baseline map, which is never the "best" one.
const BASELINE: &str = "random";

/// How much the best map's drop must exceed the baseline's (and zero) to be called best: the
/// block's precision, so that a row of drops that all read +0.000 names no best map.
pub const BEST_MARGIN: f32 = 0.0005;

/// What the app keeps of faithfulness for the open session.
#[derive(Debug, Clone, PartialEq)]
pub struct FaithState {
    /// The block is shown (key `f`); missing numbers of the current token are computed.
    pub shown: bool,
    /// Fraction of patches removed.
    pub fraction: f32,
    /// Probability drop per (token, map name), with the map it was measured on.
    pub drops: HashMap<(usize, String), (Vec<f32>, f32)>,
    /// Probability of each token with the original image.
    pub original: HashMap<usize, f32>,
    /// Seconds the latest measurement of each token took.
    pub seconds: HashMap<usize, f64>,
    /// Why numbers are not computed now (the last job failed or was cancelled); `f` retries.
    pub halted: Option<String>,
}

impl Default for FaithState {
    fn default() -> Self {
        Self {
            shown: false,
            fraction: DEFAULT_DROP_FRACTION,
            drops: HashMap::new(),
            original: HashMap::new(),
            seconds: HashMap::new(),
            halted: None,
        }
    }
}

impl FaithState {
    /// The state for a newly opened session: nothing measured, the block as it was.
    pub fn for_new_session(&self) -> Self {
        Self {
            shown: self.shown,
            fraction: self.fraction,
            ..Self::default()
        }
    }
}

/// One map in the block.
#[derive(Debug, Clone, PartialEq)]
pub struct FaithRow {
    /// The map's name (`attention.last.mean`, `relevancy.combined`, `causal`, ...).
    pub name: String,
    /// Its probability drop, once measured.
    pub drop: Option<f32>,
    /// It is the map the image pane shows.
    pub current: bool,
    /// It has the largest drop among the measured maps other than the random baseline, and
    /// that drop beats the baseline's (and zero) by at least [`BEST_MARGIN`].
    pub best: bool,
}

/// The block's numbers for the current token, recomputed with the view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaithView {
    /// The answer token measured (the first selected one).
    pub token: usize,
    /// Its probability with the original image, once measured.
    pub original: Option<f32>,
    /// Every map of the token, in the order of [`token_maps`].
    pub rows: Vec<FaithRow>,
    /// The maps not measured yet (or changed since), named.
    pub missing: Vec<(String, Vec<f32>)>,
    /// Why the maps could not be read, if they could not.
    pub error: Option<String>,
}

impl FaithView {
    /// The drop of the map the image pane shows, once measured.
    pub fn current_drop(&self) -> Option<f32> {
        self.rows.iter().find(|r| r.current).and_then(|r| r.drop)
    }
}

/// The catalogue name of the map the image pane shows, when it is the map of one token.
pub fn current_name(app: &App) -> Option<String> {
    (app.tokens.len() <= 1).then(|| app.map_id().to_string())
}

/// The faithfulness numbers of the current token, when the block is shown or some are
/// known: the catalogue's comparison maps ([`catalogue::compared_maps`]) with the raw attention
/// of the current layer and the map the image pane shows among them.
pub fn compute(app: &App, s: &Session) -> Option<FaithView> {
    let t = *app.selected_tokens().first()?;
    let state = &app.faith;
    let known = state.original.contains_key(&t);
    if !state.shown && !known {
        return None;
    }
    let mut out = FaithView {
        token: t,
        original: state.original.get(&t).copied(),
        ..FaithView::default()
    };
    let shown = [app.attention_id(), app.map_id()];
    let maps = match catalogue::compared_maps(s, t, &shown, t as u64) {
        Ok(m) => m,
        Err(e) => {
            out.error = Some(e.to_string());
            return Some(out);
        }
    };
    let current = current_name(app);
    for (id, values) in maps {
        let name = id.to_string();
        let drop = state
            .drops
            .get(&(t, name.clone()))
            .filter(|(map, _)| *map == values)
            .map(|(_, d)| *d);
        if drop.is_none() {
            out.missing.push((name.clone(), values));
        }
        out.rows.push(FaithRow {
            current: current.as_deref() == Some(name.as_str()),
            name,
            drop,
            best: false,
        });
    }
    let baseline = out
        .rows
        .iter()
        .find(|r| r.name == BASELINE)
        .and_then(|r| r.drop)
        .unwrap_or(0.0)
        .max(0.0);
    let best = out
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.name != BASELINE)
        .filter_map(|(i, r)| r.drop.map(|d| (i, d)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
    if let Some((i, d)) = best {
        out.rows[i].best = d >= baseline + BEST_MARGIN;
    }
    Some(out)
}

/// Key `f`: shows or hides the block; on a block whose computation stopped (an error, Esc),
/// computes again.
pub fn toggle(app: &mut App) -> Vec<Cmd> {
    if app.session.is_none() {
        app.notify("no session loaded", true);
        return Vec::new();
    }
    if app.faith.shown && app.faith.halted.is_some() {
        app.faith.halted = None;
    } else {
        app.faith.shown = !app.faith.shown;
    }
    Vec::new()
}

/// After every update: while the block is shown and no job runs, asks the job worker for the
/// drops the current token lacks.
pub fn request_missing(app: &mut App) -> Vec<Cmd> {
    if !app.faith.shown || app.faith.halted.is_some() || app.job.is_some() {
        return Vec::new();
    }
    let Some(fv) = &app.view.faith else {
        return Vec::new();
    };
    if fv.missing.is_empty() {
        return Vec::new();
    }
    let job = ModelJob::Faithfulness {
        token: fv.token,
        maps: fv.missing.clone(),
        fraction: app.faith.fraction,
    };
    super::jobs::begin(app, job)
}

/// Stores the drops a faithfulness job measured on `maps` (the job's maps).
pub fn store(
    app: &mut App,
    token: usize,
    maps: &[(String, Vec<f32>)],
    original: f32,
    drops: &[(String, f32)],
    seconds: f64,
) {
    let state = &mut app.faith;
    for (name, map) in maps {
        match drops.iter().find(|(n, _)| n == name) {
            Some((_, d)) => {
                state.drops.insert((token, name.clone()), (map.clone(), *d));
            }
            None => {
                state.halted = Some(format!("the model job measured no drop for {name}"));
            }
        }
    }
    state.original.insert(token, original);
    state.seconds.insert(token, seconds);
}

/// The first of `parts` joined with " · " that fit in `width` cells (the first one always).
fn fit(parts: &[String], width: u16) -> String {
    let mut out = String::new();
    for part in parts {
        let next = if out.is_empty() {
            part.clone()
        } else {
            format!("{out} · {part}")
        };
        if !out.is_empty() && next.chars().count() > width as usize {
            break;
        }
        out = next;
    }
    out
}

/// Lines the block needs in the method pane (0 when it is not shown).
pub fn height(app: &App) -> u16 {
    match (&app.view.faith, app.faith.shown) {
        (Some(fv), true) => fv.rows.len() as u16 + 1 + u16::from(fv.error.is_some()),
        _ => 0,
    }
}

/// Draws the block into `area`: a header line, then one row per map with a bar and its Δp;
/// the current map marked ▶, the best one reversed, maps no better than the random baseline
/// dimmed.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let (Some(fv), Some(s)) = (&app.view.faith, &app.session) else {
        return;
    };
    let look = &app.look;
    let fg = Style::default().fg(look.color(look.theme.foreground));
    let dim = Style::default().fg(look.color(look.theme.dim));
    let warn = Style::default().fg(look.color(look.theme.warning));
    let accent = Style::default().fg(look.color(look.theme.accent));
    let buf = f.buffer_mut();
    let word = s
        .manifest
        .tokens
        .output
        .get(fv.token)
        .map(|w| display_token(w))
        .unwrap_or_default();
    let pct = (app.faith.fraction * 100.0).round();
    let p = fv
        .original
        .map_or_else(|| "p …".to_string(), |p| format!("p {p:.3}"));
    let mut parts = vec![
        "faithfulness".to_string(),
        format!("token {} {word:?}", fv.token),
        p,
        format!("Δp@{pct}%"),
    ];
    if let Some(secs) = app.faith.seconds.get(&fv.token) {
        parts.push(format!("{secs:.2}s"));
    }
    put(buf, area, area.x, area.y, &fit(&parts, area.width), accent);
    let mut y = area.y + 1;
    let halted = app
        .faith
        .halted
        .as_ref()
        .map(|h| format!("stopped (f retries): {h}"));
    if let Some(msg) = fv.error.as_ref().or(halted.as_ref()) {
        put(buf, area, area.x, y, msg, warn);
        y += 1;
    }
    let baseline = fv
        .rows
        .iter()
        .find(|r| r.name == BASELINE)
        .and_then(|r| r.drop);
    let max = fv.rows.iter().filter_map(|r| r.drop).fold(0.0f32, f32::max);
    let label_w = fv
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(24);
    let bar_w = (area.width as usize)
        .saturating_sub(label_w + 17)
        .clamp(1, 30);
    for row in &fv.rows {
        if y >= area.bottom() {
            break;
        }
        let weak =
            matches!((row.drop, baseline), (Some(d), Some(b)) if d <= b && row.name != BASELINE);
        let mut style = if weak { dim } else { fg };
        if row.best {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let mark = if row.current { "▶" } else { " " };
        let name: String = row.name.chars().take(label_w).collect();
        let mut x = area.x;
        x += put(buf, area, x, y, &format!("{mark}{name:<label_w$} "), style);
        let value = match row.drop {
            Some(d) => {
                let frac = if max > 0.0 { d / max } else { 0.0 };
                x += put(buf, area, x, y, &bar(frac, bar_w), accent);
                format!(" {d:+.3}")
            }
            None => {
                x += put(buf, area, x, y, &format!("{:<bar_w$}", "…"), dim);
                String::new()
            }
        };
        x += put(buf, area, x, y, &value, style);
        if row.best {
            put(buf, area, x, y, " best", accent);
        }
        y += 1;
    }
}
