//! Non-interactive report of a session: the answer and the map of one token, drawn with viuer
//! where the terminal shows graphics, else as a half-block grid; `--png` writes the overlay,
//! `--json` prints the numbers instead (DESIGN.md, "report --json").

pub mod causal;
pub mod overlay;
mod text;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::explain::attention::{self as attn, Grid, HeadAgg};
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
    /// `attention` (default), `relevancy` or `causal`.
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
    /// An unknown `--method`.
    #[error("unknown method {0:?} (choose attention, relevancy or causal)")]
    Method(String),
    /// Writing to the terminal failed.
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
}

/// The numbers behind one report view.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportMap {
    /// Output token index.
    pub token: usize,
    /// `attention`, `relevancy` or `causal`.
    pub method: String,
    /// Layer (attention and causal).
    pub layer: Option<usize>,
    /// Head, when one was chosen.
    pub head: Option<usize>,
    /// The image map.
    pub map: Grid,
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

fn text_values(s: &Session, row: &[f32], upto: usize) -> BTreeMap<usize, f32> {
    let image = s.image_range();
    (0..upto.min(row.len()))
        .filter(|p| !image.contains(p))
        .map(|p| (p, row[p]))
        .collect()
}

/// Computes the view `opts` ask for.
pub fn compute(s: &Session, opts: &ReportOptions) -> Result<ReportMap, ReportError> {
    let t = opts.token.unwrap_or(0);
    if t >= s.num_output() {
        return Err(attn::AttentionError::Token(t, s.num_output()).into());
    }
    let method = opts.method.clone().unwrap_or_else(|| "attention".into());
    let q = s.query_position(t);
    match method.as_str() {
        "attention" => {
            let layer = opts
                .layer
                .unwrap_or(s.manifest.model.text_layers.saturating_sub(1));
            let agg = opts.head.map_or(HeadAgg::Mean, HeadAgg::Head);
            let map = attn::image_map(s, t, layer, agg)?;
            let row = attn::combined_row(s, t, layer, agg)?;
            let share = attn::image_share(s, t, Some(layer))?;
            Ok(ReportMap {
                token: t,
                title: format!(
                    "attention · layer {layer} · {}",
                    opts.head
                        .map_or("mean of heads".to_string(), |h| format!("head {h}"))
                ),
                method,
                layer: Some(layer),
                head: opts.head,
                map,
                text: text_values(s, &row, q + 1),
                causal: None,
                image_share: Some(share),
                relevancy: None,
            })
        }
        "relevancy" => {
            if !s.manifest.relevancy_tokens.contains(&t) {
                return Err(ReportError::NoRelevancy(t));
            }
            let [rows, cols] = s.manifest.model.image_grid;
            let (values, title) = if let Some(c) = &s.relevancy_combined {
                (c.row(&[t]).to_vec(), "relevancy.combined")
            } else if let Some(l) = &s.relevancy_llm {
                (
                    l.row(&[t])[attn::patch_positions(s)?].to_vec(),
                    "relevancy.llm",
                )
            } else {
                return Err(ReportError::NoRelevancy(t));
            };
            if values.len() != rows * cols {
                return Err(attn::AttentionError::Grid(values.len(), rows, cols).into());
            }
            let text = s
                .relevancy_llm
                .as_ref()
                .map(|l| text_values(s, l.row(&[t]), q + 1))
                .unwrap_or_default();
            Ok(ReportMap {
                token: t,
                method,
                layer: None,
                head: None,
                map: Grid { rows, cols, values },
                title: title.into(),
                text,
                causal: None,
                image_share: None,
                relevancy: relevancy_report(
                    s,
                    t,
                    if opts.residual {
                        Normalization::Residual
                    } else {
                        Normalization::SelfRemoved
                    },
                ),
            })
        }
        "causal" => {
            let ct = causal::causal_for_token(s, t)?;
            let patches = attn::patch_positions(s)?;
            let [rows, cols] = s.manifest.model.image_grid;
            let mut values = vec![0.0f32; rows * cols];
            let mut text = BTreeMap::new();
            for h in ct
                .heads
                .iter()
                .filter(|h| opts.head.is_none_or(|x| x == h.head))
            {
                for (&p, &w) in &h.image_weights {
                    if patches.contains(&p) {
                        let v = &mut values[p - patches.start];
                        *v = v.max(w as f32);
                    }
                }
                for &p in &h.explanation {
                    if !s.image_range().contains(&p) && p != ct.target {
                        let v = text.entry(p).or_insert(0.0f32);
                        *v = v.max(h.importance as f32);
                    }
                }
            }
            let layer = s
                .manifest
                .causal
                .as_ref()
                .map_or(causal::default_params(s).layer, |c| c.params.layer);
            Ok(ReportMap {
                token: t,
                method,
                layer: Some(layer),
                head: opts.head,
                map: Grid { rows, cols, values },
                title: format!(
                    "causal image weights · {}",
                    opts.head
                        .map_or("max of heads".to_string(), |h| format!("head {h}"))
                ),
                text,
                causal: Some(ct),
                image_share: None,
                relevancy: None,
            })
        }
        other => Err(ReportError::Method(other.to_string())),
    }
}

/// The `--json` object: `{"token", "method", "map", "text", ...}` (DESIGN.md).
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
        "layer": r.layer,
        "head": r.head,
        "title": r.title,
        "grid": [r.map.rows, r.map.cols],
        "map": map,
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
    if let Some(rel) = &r.relevancy {
        let reliance = |x: &Reliance| json!({"image": x.image, "text": x.text, "image_share": x.image_share()});
        out["normalization"] = json!(rel.normalization.name());
        out["words"] = rel
            .text
            .words
            .iter()
            .map(|w| json!({"text": w.text, "positions": w.positions, "value": w.value}))
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

/// Runs `lvlmscope report`.
pub fn run(opts: ReportOptions) -> anyhow::Result<()> {
    let theme = match &opts.theme {
        Some(t) => Theme::load(t).map_err(ReportError::from)?,
        None => Theme::dark(),
    };
    let look = Look::new(theme, ColorMode::detect());
    let mut s = crate::session::load(&opts.file).map_err(ReportError::from)?;
    if opts.method.as_deref() == Some("relevancy") {
        let t = opts.token.unwrap_or(0);
        let missing = t < s.num_output() && !s.manifest.relevancy_tokens.contains(&t);
        if missing {
            eprintln!(
                "lvlmscope: computing the relevancy of token {t} with the model {} (not saved)",
                s.manifest.model.path
            );
            ensure_relevancy(&mut s, t, &mut ModelService::new())?;
        }
    }
    let r = compute(&s, &opts)?;
    if let Some(png) = &opts.png {
        let img = overlay::denormalize(&s.pixel_values);
        let out = overlay::overlay(&img, &r.map, r.map.min_max(), look.colormap, 0.6);
        overlay::write_png(&out, png).map_err(ReportError::from)?;
    }
    let mut stdout = std::io::stdout().lock();
    if opts.json {
        use std::io::Write;
        writeln!(stdout, "{}", to_json(&s, &r)).map_err(ReportError::from)?;
    } else {
        text::print(&mut stdout, &s, &r, &look).map_err(ReportError::from)?;
    }
    Ok(())
}
