//! `lvlmscope knockout` and `lvlmscope report --method lens`: load a session and its model,
//! run the intervention ([`crate::explain::knockout`], [`crate::explain::lens`]) and print
//! the numbers as text or one JSON object. Nothing here computes an explanation.

use std::io::Write;
use std::path::PathBuf;

use candle_core::{DType, Device};
use serde_json::{json, Value};

use crate::explain::knockout::{self, KeyBlock, KnockoutError, KnockoutRequest, QuerySet};
use crate::explain::lens::{self, Lens, LensError};
use crate::generate::{GenerateError, LoadedModel};
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
    /// Writing failed.
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
    /// The turn could not be read.
    #[error(transparent)]
    Turn(#[from] super::ReportError),
    /// `--cache` on an earlier turn, whose readings the file does not keep.
    #[error("--cache keeps a reading of the conversation's last turn (turn {turns}) only, not of turn {turn}")]
    CacheTurn {
        /// The asked turn.
        turn: usize,
        /// The file's turns.
        turns: usize,
    },
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

/// Loads `model` (default: the session's model folder) in `dtype` on `device` and checks it
/// has the session's shape.
fn load_model(
    s: &Session,
    model: Option<&str>,
    dtype: DType,
    device: &Device,
) -> Result<LoadedModel, InterventionError> {
    let path = model.unwrap_or(&s.manifest.model.path).to_string();
    let loaded =
        LoadedModel::load(&path, dtype, device).map_err(|source| InterventionError::Load {
            path: path.clone(),
            source,
        })?;
    let m = &s.manifest.model;
    let net = &loaded.model;
    let what = if net.num_layers() != m.text_layers || net.num_heads() != m.text_heads {
        Some(format!(
            "it has {} layers × {} heads, the session {} × {}",
            net.num_layers(),
            net.num_heads(),
            m.text_layers,
            m.text_heads
        ))
    } else if net.image_grid() != m.image_grid {
        Some(format!(
            "its patch grid is {:?}, the session's {:?}",
            net.image_grid(),
            m.image_grid
        ))
    } else {
        None
    };
    match what {
        Some(what) => Err(InterventionError::Mismatch { path, what }),
        None => Ok(loaded),
    }
}

/// Runs `lvlmscope knockout`.
pub fn knockout(opts: &KnockoutOptions) -> Result<(), InterventionError> {
    let mut s = crate::session::load(&opts.file)?;
    let loaded = load_model(&s, opts.model.as_deref(), opts.dtype, &opts.device)?;
    knockout::prepare(&loaded.model, &mut s, &opts.request)?;
    let r = knockout::knockout(&loaded.model, &s, &opts.request)?;
    let word = |id: u32| loaded.prompts.decode_token(id);
    let mut out = std::io::stdout().lock();
    if opts.json {
        let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("block".into(), json!(opts.request.block.to_string()));
            m.insert("query".into(), json!(opts.request.query.to_string()));
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

/// The lens as one JSON object (ids with their token strings).
pub fn lens_json(l: &Lens, word: &dyn Fn(u32) -> String) -> Value {
    let curve: Vec<Value> = l
        .curve
        .iter()
        .map(|p| json!({"layer": p.layer, "prob": p.prob, "rank": p.rank, "top": p.top, "top_text": word(p.top)}))
        .collect();
    json!({
        "method": "lens",
        "token": l.token,
        "token_id": l.token_id,
        "token_text": word(l.token_id),
        "position": l.position,
        "curve": curve,
        "layer": l.layer,
        "grid": l.grid,
        "map": l.map,
        "top_ids": l.top_ids,
        "top_texts": l.top_ids.iter().map(|&i| word(i)).collect::<Vec<_>>(),
        "top_probs": l.top_probs,
    })
}

/// Runs `lvlmscope report --method lens`: the reading cached in the session when there is
/// one (the model's tokenizer names the tokens when its folder is there), else computed with
/// the model (and stored in the file under `--cache`).
pub fn lens(opts: &LensOptions) -> Result<(), InterventionError> {
    let (mut s, turn, turns) = super::load_turn(&opts.file, opts.turn)?;
    if opts.cache && turn != turns {
        return Err(InterventionError::CacheTurn { turn, turns });
    }
    let layers = s.manifest.model.text_layers;
    let layer = opts.layer.unwrap_or(layers.saturating_sub(1));
    let cached = lens::cached(&s, opts.token, layer).cloned();
    let (l, prompts) = match cached {
        Some(l) => {
            let path = opts.model.as_deref().unwrap_or(&s.manifest.model.path);
            let prompts = ModelDir::resolve(path)
                .ok()
                .and_then(|dir| PromptProcessor::from_dir(&dir.root).ok());
            (l, prompts)
        }
        None => {
            let loaded = load_model(&s, opts.model.as_deref(), opts.dtype, &opts.device)?;
            let l = lens::lens(&loaded.model, &s, opts.token, Some(layer))?;
            if opts.cache {
                lens::store(&mut s, l.clone());
                crate::session::save(&s, &opts.file, AttentionDtype::F32)?;
            }
            (l, Some(loaded.prompts))
        }
    };
    let word = |id: u32| match &prompts {
        Some(p) => p.decode_token(id),
        None => format!("<{id}>"),
    };
    let mut out = std::io::stdout().lock();
    if opts.json {
        writeln!(out, "{}", lens_json(&l, &word))?;
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
    writeln!(
        out,
        "\nimage patches at layer {}: top token (p of {:?})",
        l.layer,
        word(l.token_id)
    )?;
    let [rows, cols] = l.grid;
    for r in 0..rows {
        let cells: Vec<String> = (0..cols)
            .filter_map(|c| {
                let i = r * cols + c;
                let id = *l.top_ids.get(i)?;
                let w: String = word(id).chars().take(10).collect();
                Some(format!("{w:>10} {:.3}", l.map[i]))
            })
            .collect();
        writeln!(out, "{}", cells.join("  "))?;
    }
    Ok(())
}

/// Parses the knockout flags into a request.
pub fn request(
    token: usize,
    block: &str,
    layers: &str,
    query: &str,
) -> Result<KnockoutRequest, KnockoutError> {
    Ok(KnockoutRequest {
        token,
        block: block.parse::<KeyBlock>()?,
        query: query.parse::<QuerySet>()?,
        layers: knockout::parse_layers(layers)?,
    })
}
