//! `lvlmscope knockout` and `lvlmscope report --method lens`: load a session and its model,
//! run the intervention ([`crate::explain::knockout`], [`crate::explain::lens`]) and print
//! the numbers as text or one JSON object. Nothing here computes an explanation.

use std::io::Write;
use std::path::PathBuf;

use candle_core::{DType, Device};
use serde_json::{json, Value};

use super::{MissingRegion, RegionChoice};
use crate::explain::knockout::{self, KeyBlock, KnockoutError, KnockoutRequest, QuerySet};
use crate::explain::lens::{self, Lens, LensError, LensRegion};
use crate::generate::GenerateError;
use crate::job::{ServiceError, SessionModel};
use crate::model::ModelDir;
use crate::processing::PromptProcessor;
use crate::session::{AttentionDtype, Session};

/// Why an intervention cannot be reported; each is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum InterventionError {
    /// The session file failed to load.
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// The model failed to load.
    #[error("could not load the model {path:?}: {source}")]
    Load {
        /// The folder or id.
        path: String,
        /// Why.
        source: GenerateError,
    },
    /// The model is not the session's.
    #[error("the model {path:?} does not fit the session: {what}")]
    Mismatch {
        /// The folder or id.
        path: String,
        /// What differs.
        what: String,
    },
    /// The knockout failed.
    #[error(transparent)]
    Knockout(#[from] KnockoutError),
    /// The lens failed.
    #[error(transparent)]
    Lens(#[from] LensError),
    /// `--region` names a region the session lacks.
    #[error(transparent)]
    Region(#[from] MissingRegion),
    /// Writing failed.
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
    /// The turn could not be read.
    #[error(transparent)]
    Turn(#[from] super::ReportError),
}

/// What `lvlmscope knockout` was asked for.
#[derive(Debug, Clone)]
pub struct KnockoutOptions {
    /// The session file.
    pub file: PathBuf,
    /// Model folder or id (default: the session's).
    pub model: Option<String>,
    /// The knockout.
    pub request: KnockoutRequest,
    /// Print one JSON object.
    pub json: bool,
    /// Weights and activations dtype.
    pub dtype: DType,
    /// Where the model runs.
    pub device: Device,
}

/// What `lvlmscope report --method lens` was asked for.
#[derive(Debug, Clone)]
pub struct LensOptions {
    /// The session file.
    pub file: PathBuf,
    /// Model folder or id (default: the session's).
    pub model: Option<String>,
    /// Answer token.
    pub token: usize,
    /// Layer of the patch map (default: the last).
    pub layer: Option<usize>,
    /// The image regions whose cells are printed (default: every region).
    pub region: RegionChoice,
    /// Print one JSON object.
    pub json: bool,
    /// Store the reading in the session file (its `lens` list), so that the catalogue's
    /// `lens.l{L}` map and later reports read it without the model.
    pub cache: bool,
    /// The conversation turn whose token is read, 1-based (default: the last).
    pub turn: Option<usize>,
    /// Weights and activations dtype.
    pub dtype: DType,
    /// Where the model runs.
    pub device: Device,
}

/// Loads `model` (default: the session's model folder) in `dtype` on `device`, whichever
/// pipeline it is (LLaVA-style, Qwen2-VL / Qwen2.5-VL, LLaVA-NeXT / OneVision), and checks it
/// has the session's shape.
fn load_model(
    s: &Session,
    model: Option<&str>,
    dtype: DType,
    device: &Device,
) -> Result<SessionModel, InterventionError> {
    let path = model.unwrap_or(&s.manifest.model.path).to_string();
    let loaded = SessionModel::load_path(&path, dtype, device).map_err(|source| {
        InterventionError::Load {
            path: path.clone(),
            source,
        }
    })?;
    match loaded.check_fits(&path, s) {
        Ok(()) => Ok(loaded),
        Err(ServiceError::Mismatch { path, what }) => {
            Err(InterventionError::Mismatch { path, what })
        }
        Err(e) => Err(InterventionError::Mismatch {
            path,
            what: e.to_string(),
        }),
    }
}

/// Runs `lvlmscope knockout`.
pub fn knockout(opts: &KnockoutOptions) -> Result<(), InterventionError> {
    let mut s = crate::session::load(&opts.file)?;
    let loaded = load_model(&s, opts.model.as_deref(), opts.dtype, &opts.device)?;
    knockout::prepare(loaded.replayer(), &mut s, &opts.request)?;
    let r = knockout::knockout(loaded.replayer(), &s, &opts.request)?;
    let word = |id: u32| loaded.prompts().decode_token(id);
    let mut out = std::io::stdout().lock();
    if opts.json {
        let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("block".into(), json!(opts.request.block.to_string()));
            m.insert("query".into(), json!(opts.request.query.to_string()));
            if let Some(kind) = opts.request.region {
                m.insert("region".into(), json!(kind.name()));
            }
            m.insert("token_text".into(), json!(word(r.token_id)));
            m.insert(
                "greedy_original_text".into(),
                json!(word(r.greedy_original)),
            );
            m.insert(
                "greedy_knockout_text".into(),
                json!(word(r.greedy_knockout)),
            );
        }
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let positions = |ps: &[usize]| match ps {
        [] => String::new(),
        [p] => p.to_string(),
        _ if ps.windows(2).all(|w| w[1] == w[0] + 1) => format!("{}-{}", ps[0], ps[ps.len() - 1]),
        _ => ps
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
    };
    writeln!(
        out,
        "token {} {:?} (id {}), query {} (position {}), keys {} ({} positions: {}), layers {}-{}",
        r.token,
        word(r.token_id),
        r.token_id,
        opts.request.query,
        positions(&r.queries),
        opts.request.block,
        r.keys.len(),
        positions(&r.keys),
        r.layers[0],
        r.layers[1]
    )?;
    writeln!(
        out,
        "p = {:.4} → {:.4} (Δp {:+.4}); greedy {:?} → {:?}{}",
        r.p_original,
        r.p_knockout,
        r.delta_p,
        word(r.greedy_original),
        word(r.greedy_knockout),
        if r.greedy_original == r.greedy_knockout {
            " (unchanged)"
        } else {
            " (changed)"
        }
    )?;
    Ok(())
}

/// The parts of a reading of `s` the report shows: every region (the reading's one `grid`
/// for a session without regions), or the one `choice` names.
pub fn lens_parts(
    s: &Session,
    grid: [usize; 2],
    choice: RegionChoice,
) -> Result<Vec<LensRegion>, MissingRegion> {
    let mut parts = lens::region_slices(s);
    if parts.is_empty() {
        parts.push(LensRegion {
            kind: crate::session::RegionKind::Image,
            grid,
            offset: 0,
        });
    }
    let RegionChoice::Only(kind) = choice else {
        return Ok(parts);
    };
    if parts.iter().any(|p| p.kind == kind) {
        return Ok(parts.into_iter().filter(|p| p.kind == kind).collect());
    }
    Err(MissingRegion {
        asked: kind.name(),
        has: parts
            .iter()
            .map(|p| p.kind.name())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The cells `part` covers in a reading of `n` cells.
fn cell_range(part: &LensRegion, n: usize) -> std::ops::Range<usize> {
    let start = part.offset.min(n);
    start..(part.offset + part.grid[0] * part.grid[1]).min(n)
}

/// The lens as one JSON object (ids with their token strings), its map over the cells of
/// `parts` (one after the other; `regions` says where each starts) and `grid` the first
/// part's.
pub fn lens_json(l: &Lens, parts: &[LensRegion], word: &dyn Fn(u32) -> String) -> Value {
    let curve: Vec<Value> = l
        .curve
        .iter()
        .map(|p| json!({"layer": p.layer, "prob": p.prob, "rank": p.rank, "top": p.top, "top_text": word(p.top)}))
        .collect();
    let (mut map, mut top_ids, mut top_probs, mut regions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for part in parts {
        let cells = cell_range(part, l.map.len());
        regions.push(json!({"kind": part.kind.name(), "grid": part.grid, "offset": map.len()}));
        map.extend_from_slice(&l.map[cells.clone()]);
        top_ids.extend_from_slice(l.top_ids.get(cells.clone()).unwrap_or_default());
        top_probs.extend_from_slice(l.top_probs.get(cells).unwrap_or_default());
    }
    json!({
        "method": "lens",
        "token": l.token,
        "token_id": l.token_id,
        "token_text": word(l.token_id),
        "position": l.position,
        "curve": curve,
        "layer": l.layer,
        "grid": parts.first().map_or(l.grid, |p| p.grid),
        "map": map,
        "top_ids": top_ids,
        "top_texts": top_ids.iter().map(|&i| word(i)).collect::<Vec<_>>(),
        "top_probs": top_probs,
        "regions": regions,
    })
}

/// Columns a printed lens grid may take.
const LENS_WIDTH: usize = 160;

/// The rows of one part of a reading as text: each cell's top token (as text: word markers
/// and byte pieces read) and the probability of the answer token where the grid leaves room
/// (10 characters of the word), else as much of the word as fits.
fn lens_rows(l: &Lens, part: &LensRegion, word: &dyn Fn(u32) -> String) -> Vec<String> {
    let [rows, cols] = part.grid;
    let cells = cell_range(part, l.map.len());
    let roomy = cols * 18 <= LENS_WIDTH;
    let narrow = (LENS_WIDTH / cols.max(1)).saturating_sub(1).max(1);
    (0..rows)
        .map(|r| {
            let line: Vec<String> = (0..cols)
                .filter_map(|c| {
                    let i = cells.start + r * cols + c;
                    if i >= cells.end {
                        return None;
                    }
                    let id = *l.top_ids.get(i)?;
                    let text = crate::session::piece_text(&word(id));
                    Some(if roomy {
                        let w: String = text.chars().take(10).collect();
                        format!("{w:>10} {:.3}", l.map[i])
                    } else {
                        let w: String = text.trim().replace(char::is_whitespace, "·");
                        let w: String = w.chars().take(narrow).collect();
                        format!("{w:<narrow$}")
                    })
                })
                .collect();
            line.join(if roomy { "  " } else { " " })
        })
        .collect()
}

/// Runs `lvlmscope report --method lens`: the reading cached in the session when there is
/// one (the model's tokenizer names the tokens when its folder is there), else computed with
/// the model (and stored in the file under `--cache`, an earlier turn's with that turn); the
/// cells of `--region` only.
pub fn lens(opts: &LensOptions) -> Result<(), InterventionError> {
    let (mut s, turn, turns) = super::load_turn(&opts.file, opts.turn)?;
    let layers = s.manifest.model.text_layers;
    let layer = opts.layer.unwrap_or(layers.saturating_sub(1));
    let cached = lens::cached(&s, opts.token, layer).cloned();
    let (l, loaded, prompts) = match cached {
        Some(l) => {
            let path = opts.model.as_deref().unwrap_or(&s.manifest.model.path);
            let prompts = ModelDir::resolve(path).ok().and_then(|dir| {
                if crate::generate::qwen::is_qwen_vl(&dir) {
                    PromptProcessor::from_dir_with_token(
                        &dir.root,
                        crate::generate::qwen::IMAGE_PAD,
                    )
                } else {
                    PromptProcessor::from_dir(&dir.root)
                }
                .ok()
            });
            (l, None, prompts)
        }
        None => {
            // a region the session lacks is named before the model loads
            lens_parts(&s, s.manifest.model.image_grid, opts.region)?;
            let loaded = load_model(&s, opts.model.as_deref(), opts.dtype, &opts.device)?;
            let l = lens::lens(loaded.replayer(), &s, opts.token, Some(layer))?;
            if opts.cache {
                lens::store(&mut s, l.clone());
                if turn == turns {
                    crate::session::save(&s, &opts.file, AttentionDtype::F32)?;
                } else {
                    // an earlier turn's reading is kept with that turn in the whole file
                    let mut file = crate::session::load(&opts.file)?;
                    file.set_turn_results(turn - 1, &s);
                    crate::session::save(&file, &opts.file, AttentionDtype::F32)?;
                }
            }
            (l, Some(loaded), None)
        }
    };
    let parts = lens_parts(&s, l.grid, opts.region)?;
    let word = |id: u32| match (&loaded, &prompts) {
        (Some(m), _) => m.prompts().decode_token(id),
        (None, Some(p)) => p.decode_token(id),
        (None, None) => format!("<{id}>"),
    };
    let mut out = std::io::stdout().lock();
    if opts.json {
        writeln!(out, "{}", lens_json(&l, &parts, &word))?;
        return Ok(());
    }
    writeln!(
        out,
        "logit lens · token {} {:?} (id {}) at position {}",
        l.token,
        word(l.token_id),
        l.token_id,
        l.position
    )?;
    writeln!(out, "layer   p(token)  rank  top")?;
    for p in &l.curve {
        writeln!(
            out,
            "{:>5}  {:>9.4}  {:>4}  {:?}",
            p.layer,
            p.prob,
            p.rank,
            word(p.top)
        )?;
    }
    let several = s.regions().len() > 1;
    for part in &parts {
        let [rows, cols] = part.grid;
        let room = cols * 18 <= LENS_WIDTH;
        writeln!(
            out,
            "\n{}image patches at layer {}: top token{}",
            if several {
                format!("{} region ({rows}x{cols}) · ", part.kind.name())
            } else {
                String::new()
            },
            l.layer,
            if room {
                format!(" (p of {:?})", word(l.token_id))
            } else {
                String::new()
            }
        )?;
        for line in lens_rows(&l, part, &word) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// Parses the knockout flags into a request.
pub fn request(
    token: usize,
    block: &str,
    layers: &str,
    query: &str,
    region: RegionChoice,
) -> Result<KnockoutRequest, KnockoutError> {
    Ok(KnockoutRequest {
        token,
        block: block.parse::<KeyBlock>()?,
        query: query.parse::<QuerySet>()?,
        layers: knockout::parse_layers(layers)?,
        region: match region {
            RegionChoice::All => None,
            RegionChoice::Only(kind) => Some(kind),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::lens::LensPoint;
    use crate::session::RegionKind;

    fn reading(cells: usize) -> Lens {
        Lens {
            token: 0,
            token_id: 1,
            position: 9,
            curve: vec![LensPoint {
                layer: 0,
                prob: 0.5,
                rank: 1,
                top: 1,
            }],
            layer: 0,
            grid: [2, 2],
            map: (0..cells).map(|i| i as f32 / 100.0).collect(),
            top_ids: (0..cells as u32).collect(),
            top_probs: vec![0.5; cells],
        }
    }

    #[test]
    fn lens_rows_print_the_word_and_p_where_there_is_room_else_what_fits() {
        let words = ["▁cat", "Ġdog", "horse", "<0x41>"];
        let word = |id: u32| words[id as usize % 4].to_string();
        let l = reading(4 + 2 * 20);
        let small = LensRegion {
            kind: RegionKind::Base,
            grid: [2, 2],
            offset: 0,
        };
        let rows = lens_rows(&l, &small, &word);
        assert_eq!(
            rows,
            [
                "       cat 0.000         dog 0.010",
                "     horse 0.020           A 0.030"
            ]
        );
        // 20 columns: 160 / 20 − 1 = 7 characters a cell, no probability
        let wide = LensRegion {
            kind: RegionKind::Highres,
            grid: [2, 20],
            offset: 4,
        };
        let rows = lens_rows(&l, &wide, &word);
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].starts_with("cat     dog     horse   A       cat"),
            "{:?}",
            rows[0]
        );
        assert!(rows.iter().all(|r| r.chars().count() <= LENS_WIDTH));
        assert!(!rows[0].contains("0.0"));
    }
}
