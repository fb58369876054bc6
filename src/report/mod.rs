//! Non-interactive report of a session: the answer and the map of one token, drawn with viuer
//! where the terminal shows graphics, else as a half-block grid; `--png` writes the overlay,
//! `--json` prints the numbers instead (docs/design.md, "Command line"). The map comes from
//! the explanation catalogue ([`crate::explain::catalogue`]); nothing here computes one.

pub mod causal;
pub mod interventions;
pub mod overlay;
mod region;
mod text;

pub use region::{MissingRegion, RegionChoice, RegionChoiceError};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::explain::attention::{self as attn, Grid, HeadAgg};
use crate::explain::catalogue::{
    self, part_sums, CatalogueError, CausalHeads, MapId, Need, Options, PartSums, RegionMap,
    RelevancySource, TextPart, TurnParts,
};
use crate::explain::relevancy::views::{self, Normalization, Reliance, TextRelevancy};
use crate::job::ModelService;
use crate::session::{CausalToken, Session};
use crate::style::{ColorMode, Look, Theme};

/// What `lvlmscope report` was asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportOptions {
    /// The session file.
    pub file: PathBuf,
    /// Output token index (default 0).
    pub token: Option<usize>,
    /// `attention` (default), `relevancy`, `causal`, or a catalogue map id ([`map_id`]).
    pub method: Option<String>,
    /// Decoder layer for attention (default: the last).
    pub layer: Option<usize>,
    /// Head for attention or causal (default: mean of heads; causal: max).
    pub head: Option<usize>,
    /// Write the overlay as a PNG here.
    pub png: Option<PathBuf>,
    /// Print the numbers as JSON instead of drawing.
    pub json: bool,
    /// Built-in theme name or TOML file.
    pub theme: Option<String>,
    /// Relevancy text bars with LVLM-Interpret's residual normalisation instead of the
    /// self-removed row.
    pub residual: bool,
    /// Which image regions to draw and print (default: all).
    pub region: RegionChoice,
    /// The conversation turn to report, 1-based (default: the last).
    pub turn: Option<usize>,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The session file failed to load.
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// An attention view failed (no attention, index out of range, ...).
    #[error(transparent)]
    Attention(#[from] attn::AttentionError),
    /// No causal explanation is available.
    #[error(transparent)]
    Causal(#[from] causal::CausalUnavailable),
    /// The theme failed to load.
    #[error(transparent)]
    Theme(#[from] crate::style::ThemeError),
    /// The PNG could not be written.
    #[error(transparent)]
    Png(#[from] overlay::PngError),
    /// No relevancy for the token.
    #[error("the session holds no relevancy for token {0} (run `lvlmscope run --relevancy`)")]
    NoRelevancy(usize),
    /// No relevancy for the token, and the session's model could not compute it.
    #[error(
        "the session holds no relevancy for token {token}, and it could not be computed: {reason}"
    )]
    RelevancyUnavailable {
        /// The output token.
        token: usize,
        /// Why the model could not compute it.
        reason: String,
    },
    /// `--turn` outside the session's turns.
    #[error(
        "the session holds {turns} turn(s), so --turn must be between 1 and {turns} (got {turn})"
    )]
    Turn {
        /// The asked turn.
        turn: usize,
        /// The session's turns.
        turns: usize,
    },
    /// An unknown `--method`.
    #[error("unknown method {0:?} (choose attention, relevancy or causal, or a map such as attention.l2.h1, relevancy.vision, causal.max)")]
    Method(String),
    /// The map cannot be given from this session.
    #[error(transparent)]
    Map(CatalogueError),
    /// `--region` names a region the session lacks.
    #[error(transparent)]
    Region(#[from] MissingRegion),
    /// Writing to the terminal failed.
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
}

/// The numbers behind one report view.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportMap {
    /// Output token index.
    pub token: usize,
    /// The map's family: `attention`, `relevancy` or `causal`.
    pub method: String,
    /// The map's catalogue id.
    pub id: MapId,
    /// Layer (attention and causal).
    pub layer: Option<usize>,
    /// Head, when one was chosen.
    pub head: Option<usize>,
    /// The image map (over the first region shown).
    pub map: Grid,
    /// The map over every image region shown (cells only), each with its rectangle of the
    /// image.
    pub regions: Vec<RegionMap>,
    /// What the map shows.
    pub title: String,
    /// Values over text positions (absolute positions outside the image span).
    pub text: BTreeMap<usize, f32>,
    /// The causal explanation, for `causal`.
    pub causal: Option<CausalToken>,
    /// Share of attention on the image (attention only, this layer, mean over heads).
    pub image_share: Option<f32>,
    /// The relevancy views (relevancy only).
    pub relevancy: Option<RelevancyReport>,
    /// The map's row over the parts of the turn as shares (every method with a text part:
    /// the catalogue's [`catalogue::Explanation::parts`]; relevancy's as its views prepare it).
    pub parts: Option<PartSums>,
}

/// The relevancy views of a report: the input words against the image, and how much the
/// token (and every answer token with relevancy) relies on the image.
#[derive(Debug, Clone, PartialEq)]
pub struct RelevancyReport {
    /// How the rows were prepared.
    pub normalization: Normalization,
    /// The most relevant input words and the image's largest relevancy.
    pub text: TextRelevancy,
    /// The token's relevancy on the image versus the text.
    pub reliance: Reliance,
    /// Every answer token's reliance (`None`: no relevancy stored).
    pub answer: Vec<Option<Reliance>>,
    /// The token's relevancy over the parts of the turn (image, this question, earlier
    /// questions and answers of a conversation, this answer so far), as shares.
    pub parts: PartSums,
}

/// Input words listed by the relevancy report.
pub const REPORT_WORDS: usize = 10;

/// The relevancy views of token `t`, rows prepared as `norm` says.
pub fn relevancy_report(s: &Session, t: usize, norm: Normalization) -> Option<RelevancyReport> {
    let row = views::session_row(s, t, norm)?;
    let q = s.query_position(t);
    Some(RelevancyReport {
        normalization: norm,
        text: views::text_relevancy(
            &row,
            &s.manifest.tokens.input,
            s.image_range(),
            q,
            REPORT_WORDS,
        ),
        reliance: views::reliance(&row, s.image_range(), q),
        answer: views::answer_reliance(s, norm),
        parts: part_sums(&TurnParts::of(s), &row, q).shares(),
    })
}

/// For `--method relevancy`: when the session lacks token `t`'s relevancy, computes it with the
/// session's model (loaded by `service`) into `s` (the file is not changed). Returns whether it
/// computed anything.
pub fn ensure_relevancy(
    s: &mut Session,
    t: usize,
    service: &mut ModelService,
) -> Result<bool, ReportError> {
    if t >= s.num_output() || s.manifest.relevancy_tokens.contains(&t) {
        return Ok(false);
    }
    service
        .add_relevancy(s, &[t], &mut |_| {})
        .map(|n| n > 0)
        .map_err(|e| ReportError::RelevancyUnavailable {
            token: t,
            reason: e.to_string(),
        })
}

/// The catalogue map `opts` name for session `s`: `--method` as a map id
/// (`attention.l2.h1`, `relevancy.vision`, `causal.max`, ...; docs/design.md, "The catalogue"),
/// or one of the method names with their defaults: `attention` (the default) is the raw
/// attention of `--layer` (default: the last) and `--head` (default: mean of heads);
/// `relevancy` is `relevancy.combined` when the session has that table and `relevancy.decoder`
/// when it has only the decoder's (under `--residual`, its residual normalisation); `causal`
/// is the catalogue's `causal` (image weights summed over heads), or `causal.h{head}` with
/// `--head`.
pub fn map_id(s: &Session, opts: &ReportOptions) -> Result<MapId, ReportError> {
    let method = opts.method.as_deref().unwrap_or("attention");
    let norm = if opts.residual {
        Normalization::Residual
    } else {
        Normalization::SelfRemoved
    };
    Ok(match method {
        "attention" => {
            let layers = s.manifest.model.text_layers;
            let layer = opts.layer.unwrap_or(layers.saturating_sub(1));
            let heads = opts.head.map_or(HeadAgg::Mean, HeadAgg::Head);
            MapId::attention(layer, layers, heads)
        }
        "relevancy" => {
            let source = if s.relevancy_combined.is_none() && s.relevancy_llm.is_some() {
                RelevancySource::Llm
            } else {
                RelevancySource::Combined
            };
            MapId::relevancy(source, norm)
        }
        "causal" => MapId::Causal(opts.head.map_or(CausalHeads::Sum, CausalHeads::Head)),
        other => other
            .parse()
            .map_err(|_| ReportError::Method(other.to_string()))?,
    })
}

impl From<CatalogueError> for ReportError {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::Token(t, n) => attn::AttentionError::Token(t, n).into(),
            CatalogueError::Attention(e) => e.into(),
            CatalogueError::NoRelevancy(t) => ReportError::NoRelevancy(t),
            CatalogueError::Causal(e) => e.into(),
            other => ReportError::Map(other),
        }
    }
}

/// Computes the view `opts` ask for: the catalogue's map (a causal result the session lacks is
/// computed from `attn.full`) over the regions `--region` names, plus the attention's image
/// share or the relevancy views.
pub fn compute(s: &Session, opts: &ReportOptions) -> Result<ReportMap, ReportError> {
    let t = opts.token.unwrap_or(0);
    let id = map_id(s, opts)?;
    let options = Options {
        seed: None,
        compute_causal: true,
    };
    let mut e = catalogue::explain_with(s, &[t], &id, options)?;
    e.regions = opts.region.select(e.regions)?;
    if let (RegionChoice::Only(_), Some(m)) = (opts.region, e.regions.first()) {
        e.grid = m.grid.clone();
    }
    let image_share = match (id, e.layer) {
        (MapId::Attention { .. }, Some(l)) => Some(attn::image_share(s, t, Some(l))?),
        _ => None,
    };
    let relevancy = match id {
        MapId::Relevancy { norm, .. } => {
            let norm = if opts.residual {
                Normalization::Residual
            } else {
                norm
            };
            relevancy_report(s, t, norm)
        }
        _ => None,
    };
    Ok(ReportMap {
        token: t,
        method: id.family().name().to_string(),
        id,
        layer: e.layer,
        head: e.head,
        map: e.grid,
        regions: e.regions,
        title: e.title,
        text: e.text,
        causal: e.causal,
        image_share,
        parts: relevancy
            .as_ref()
            .map(|r| r.parts)
            .or(e.parts.map(|p| p.shares())),
        relevancy,
    })
}

/// The `--json` object: `{"token", "method", "map_id", "map", "text", ...}` (docs/design.md,
/// "Command line").
pub fn to_json(s: &Session, r: &ReportMap) -> Value {
    let map: Vec<Vec<f32>> = r
        .map
        .values
        .chunks(r.map.cols.max(1))
        .map(<[f32]>::to_vec)
        .collect();
    let text: serde_json::Map<String, Value> = r
        .text
        .iter()
        .map(|(p, v)| (p.to_string(), json!(v)))
        .collect();
    let (lo, hi) = r.map.min_max();
    let mut out = json!({
        "token": r.token,
        "token_text": s.manifest.tokens.output.get(r.token),
        "position": s.query_position(r.token),
        "method": r.method,
        "map_id": r.id.to_string(),
        "layer": r.layer,
        "head": r.head,
        "title": r.title,
        "grid": [r.map.rows, r.map.cols],
        "map": map,
        "regions": regions_json(&r.regions),
        "min": lo,
        "max": hi,
        "text": text,
    });
    if let Some(share) = r.image_share {
        out["image_share"] = json!(share);
    }
    if let Some(c) = &r.causal {
        out["causal"] = serde_json::to_value(c).unwrap_or(Value::Null);
    }
    if let Some(parts) = &r.parts {
        out["reliance_parts"] = TextPart::ALL
            .iter()
            .map(|&p| (p.key().to_string(), json!(parts.get(p))))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if let Some(rel) = &r.relevancy {
        let reliance = |x: &Reliance| json!({"image": x.image, "text": x.text, "image_share": x.image_share()});
        out["normalization"] = json!(rel.normalization.name());
        let parts = TurnParts::of(s);
        let part = |w: &views::Word| w.positions.first().map(|&p| parts.part(p).key());
        out["words"] = rel
            .text
            .words
            .iter()
            .map(|w| json!({"text": w.text, "positions": w.positions, "value": w.value, "part": part(w)}))
            .collect();
        out["image_max"] = json!(rel.text.image_max);
        out["reliance"] = reliance(&rel.reliance);
        out["answer_reliance"] = rel
            .answer
            .iter()
            .map(|x| x.as_ref().map_or(Value::Null, |x| json!(x.image_share())))
            .collect();
    }
    out
}

/// Every region's map as JSON: kind, rectangle of the original image, aspect ratio, grid and
/// the values as rows.
fn regions_json(regions: &[RegionMap]) -> Value {
    regions
        .iter()
        .map(|m| {
            let rows: Vec<Vec<f32>> = m
                .grid
                .values
                .chunks(m.grid.cols.max(1))
                .map(<[f32]>::to_vec)
                .collect();
            json!({
                "kind": m.kind.name(),
                "rect": m.rect,
                "aspect": m.aspect(),
                "grid": [m.grid.rows, m.grid.cols],
                "map": rows,
            })
        })
        .collect()
}

/// The smallest and largest value over every region's cells (the first region's when the
/// report has no regions).
pub fn regions_range(r: &ReportMap) -> (f32, f32) {
    let all: Vec<f32> = r
        .regions
        .iter()
        .flat_map(|m| m.grid.values.iter().copied())
        .collect();
    if all.is_empty() {
        r.map.min_max()
    } else {
        attn::min_max(&all)
    }
}

/// The PNG of the report: each region's map blended over the part of the picture its
/// rectangle covers, at the region's true aspect ratio, regions stacked top to bottom with a
/// 4-pixel gap.
pub fn png_raster(s: &Session, r: &ReportMap, look: &Look) -> overlay::Raster {
    let img = overlay::denormalize(&s.pixel_values);
    let range = regions_range(r);
    let parts: Vec<overlay::Raster> = if r.regions.is_empty() {
        vec![overlay::overlay(&img, &r.map, range, look.colormap, 0.6)]
    } else {
        r.regions
            .iter()
            .map(|m| {
                // Each region's map over the part of the picture its rectangle covers.
                let shows = s.picture_rect().unwrap_or(m.rect);
                let picture = overlay::crop(&img, shows, m.rect);
                let blended = overlay::overlay(&picture, &m.grid, range, look.colormap, 0.6);
                overlay::at_aspect(&blended, m.aspect())
            })
            .collect()
    };
    let gap = 4;
    let width = parts.iter().map(|p| p.width).max().unwrap_or(0);
    let height =
        parts.iter().map(|p| p.height).sum::<usize>() + gap * parts.len().saturating_sub(1);
    let mut pixels = vec![crate::style::Rgb(0, 0, 0); width * height];
    let mut y0 = 0;
    for p in &parts {
        for y in 0..p.height {
            let row = (y0 + y) * width;
            pixels[row..row + p.width].copy_from_slice(&p.pixels[y * p.width..(y + 1) * p.width]);
        }
        y0 += p.height + gap;
    }
    overlay::Raster {
        width,
        height,
        pixels,
    }
}

/// Loads turn `turn` (1-based; default: the last) of the session file at `path` as an
/// ordinary session (the last turn is the whole file, earlier turns included); returns it
/// with the turn's number and the file's turns.
pub fn load_turn(
    path: &std::path::Path,
    turn: Option<usize>,
) -> Result<(Session, usize, usize), ReportError> {
    let file = crate::session::load(path)?;
    let turns = file.num_turns();
    let turn = turn.unwrap_or(turns);
    match turn.checked_sub(1).and_then(|k| file.turn(k)) {
        Some(one) => Ok((one.into_owned(), turn, turns)),
        None => Err(ReportError::Turn { turn, turns }),
    }
}

/// Runs `lvlmscope report`.
pub fn run(opts: ReportOptions) -> anyhow::Result<()> {
    let theme = match &opts.theme {
        Some(t) => Theme::load(t).map_err(ReportError::from)?,
        None => Theme::dark(),
    };
    let look = Look::new(theme, ColorMode::detect());
    let (mut s, turn, turns) = load_turn(&opts.file, opts.turn)?;
    let t = opts.token.unwrap_or(0);
    let id = map_id(&s, &opts)?;
    // where a relevancy map's rows came from: the file (this turn's saved rows) or the model
    let mut relevancy_from = matches!(id, MapId::Relevancy { .. }).then_some("session");
    if t < s.num_output() && matches!(catalogue::need(&s, &[t], &id), Need::Relevancy(_)) {
        eprintln!(
            "lvlmscope: computing the relevancy of token {t} with the model {} (not saved)",
            s.manifest.model.path
        );
        if ensure_relevancy(&mut s, t, &mut ModelService::new())? {
            relevancy_from = Some("model");
        }
    }
    let r = compute(&s, &opts)?;
    if let Some(png) = &opts.png {
        overlay::write_png(&png_raster(&s, &r, &look), png).map_err(ReportError::from)?;
    }
    let mut stdout = std::io::stdout().lock();
    if opts.json {
        use std::io::Write;
        let mut out = to_json(&s, &r);
        out["turn"] = json!(turn);
        out["turns"] = json!(turns);
        if let Some(from) = relevancy_from {
            out["relevancy_from"] = json!(from);
        }
        writeln!(stdout, "{out}").map_err(ReportError::from)?;
    } else {
        use std::io::Write;
        if turns > 1 {
            writeln!(stdout, "turn {turn} of {turns}: {}", s.manifest.prompt)
                .map_err(ReportError::from)?;
        }
        text::print(&mut stdout, &s, &r, &look).map_err(ReportError::from)?;
    }
    Ok(())
}
