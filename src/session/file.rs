//! Reading and writing session files: one safetensors file, manifest in `__metadata__`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::manifest::{Manifest, SCHEMA, SCHEMA_1};
use super::vision::{check_views, read_vision};
use super::{turns::check_turns, Array, Session, Turn, VisionAttention};

/// The metadata key that holds the JSON manifest.
const MANIFEST_KEY: &str = "lvlmscope";

/// Why a session file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The file could not be opened, read or written.
    #[error("cannot access session file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file (truncated, or another format).
    #[error("{path} is not a readable session file (truncated or not safetensors): {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file is safetensors but not a session of a schema this reader knows (1 or 2), or
    /// its contents contradict each other.
    #[error("{path} is not a valid lvlmscope session ({SCHEMA} or {SCHEMA_1}): {reason}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The session cannot be serialised.
    #[error("cannot encode session: {0}")]
    Encode(String),
}

/// How attention tensors are stored on disk; readers accept both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionDtype {
    /// Half precision: half the bytes, about 3 decimal digits.
    #[default]
    F16,
    /// Full precision.
    F32,
}

/// One tensor ready for serialisation.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn encode_f32(a: &Array) -> Encoded {
    Encoded {
        dtype: Dtype::F32,
        shape: a.shape.clone(),
        bytes: a.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn encode_attention(a: &Array, dtype: AttentionDtype) -> Encoded {
    match dtype {
        AttentionDtype::F32 => encode_f32(a),
        AttentionDtype::F16 => Encoded {
            dtype: Dtype::F16,
            shape: a.shape.clone(),
            bytes: a
                .data
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
        },
    }
}

fn encode_i64(v: &[i64]) -> Encoded {
    Encoded {
        dtype: Dtype::I64,
        shape: vec![v.len()],
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Writes `session` to `path` atomically: a temporary file beside it, then a rename, so an
/// interrupted save never leaves a half-written session in place.
pub fn save(session: &Session, path: &Path, attention: AttentionDtype) -> Result<(), SessionError> {
    let mut tensors: BTreeMap<String, Encoded> = BTreeMap::new();
    tensors.insert("input_ids".into(), encode_i64(&session.input_ids));
    tensors.insert("output_ids".into(), encode_i64(&session.output_ids));
    tensors.insert("pixel_values".into(), encode_f32(&session.pixel_values));
    if let Some(a) = &session.attn_gen {
        tensors.insert("attn.gen".into(), encode_attention(a, attention));
    }
    for (layer, a) in &session.attn_full {
        tensors.insert(format!("attn.full.{layer}"), encode_attention(a, attention));
    }
    match &session.attn_vit {
        Some(VisionAttention::Full(a)) => {
            tensors.insert("attn.vit".into(), encode_attention(a, attention));
        }
        Some(VisionAttention::Views(v)) => {
            for (k, a) in v.views.iter().enumerate() {
                tensors.insert(format!("attn.vit.v{k}"), encode_attention(a, attention));
            }
            let p = &v.placement;
            let shape = vec![p.cells(), p.taps];
            let source: Vec<i64> = p.source.iter().map(|&i| i as i64).collect();
            tensors.insert(
                "attn.vit.source".into(),
                Encoded {
                    shape: shape.clone(),
                    ..encode_i64(&source)
                },
            );
            let weight = Array::new(shape, p.weight.clone())
                .ok_or_else(|| SessionError::Encode("attn.vit.weight misshapen".into()))?;
            tensors.insert("attn.vit.weight".into(), encode_f32(&weight));
        }
        None => {}
    }
    for (name, a) in [
        ("relevancy.llm", &session.relevancy_llm),
        ("relevancy.vit", &session.relevancy_vit),
        ("relevancy.combined", &session.relevancy_combined),
    ] {
        if let Some(a) = a {
            tensors.insert(name.into(), encode_f32(a));
        }
    }
    for (k, turn) in session.turns.iter().enumerate() {
        tensors.insert(format!("turn.{k}.input_ids"), encode_i64(&turn.input_ids));
        tensors.insert(format!("turn.{k}.output_ids"), encode_i64(&turn.output_ids));
        if let Some(a) = &turn.attn_gen {
            tensors.insert(format!("turn.{k}.attn.gen"), encode_attention(a, attention));
        }
        for (name, a) in [
            ("relevancy.llm", &turn.relevancy_llm),
            ("relevancy.vit", &turn.relevancy_vit),
            ("relevancy.combined", &turn.relevancy_combined),
        ] {
            if let Some(a) = a {
                tensors.insert(format!("turn.{k}.{name}"), encode_f32(a));
            }
        }
    }
    let manifest = serde_json::to_string(&session.manifest)
        .map_err(|e| SessionError::Encode(e.to_string()))?;
    let metadata = HashMap::from([(MANIFEST_KEY.to_string(), manifest)]);
    let views = tensors
        .iter()
        .map(|(name, t)| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| SessionError::Encode(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| SessionError::Encode(e.to_string()))?;
    write_atomically(path, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SessionError> {
    let io = |source| SessionError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "session".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Reads a session file, checking its schema; every failure is one clear sentence.
pub fn load(path: &Path) -> Result<Session, SessionError> {
    let bytes = std::fs::read(path).map_err(|source| SessionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let format = |reason: String| SessionError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let schema = |reason: String| SessionError::Schema {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
    let manifest_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MANIFEST_KEY))
        .ok_or_else(|| schema("it has no lvlmscope manifest".into()))?;
    let manifest: Manifest = serde_json::from_str(manifest_json).map_err(|e| {
        if manifest_json.contains(SCHEMA) || manifest_json.contains(SCHEMA_1) {
            schema(format!("its manifest is malformed ({e})"))
        } else {
            schema("its manifest names another schema".into())
        }
    })?;
    if manifest.schema != SCHEMA && manifest.schema != SCHEMA_1 {
        return Err(schema(format!("it says schema {:?}", manifest.schema)));
    }
    let read_f = |name: &str| -> Result<Option<Array>, SessionError> {
        match st.tensor(name) {
            Ok(view) => decode_float(&view)
                .map(Some)
                .map_err(|r| schema(format!("tensor {name}: {r}"))),
            Err(_) => Ok(None),
        }
    };
    let read_i = |name: &str| -> Result<Vec<i64>, SessionError> {
        let view = st
            .tensor(name)
            .map_err(|_| schema(format!("tensor {name} is missing")))?;
        if view.dtype() != Dtype::I64 || view.shape().len() != 1 {
            return Err(schema(format!("tensor {name} must be a 1-D I64 tensor")));
        }
        Ok(view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect())
    };
    let input_ids = read_i("input_ids")?;
    let output_ids = read_i("output_ids")?;
    let pixel_values =
        read_f("pixel_values")?.ok_or_else(|| schema("tensor pixel_values is missing".into()))?;
    let mut attn_full = BTreeMap::new();
    for name in st.names() {
        if let Some(layer) = name.strip_prefix("attn.full.") {
            let layer: usize = layer
                .parse()
                .map_err(|_| schema(format!("tensor {name} has no layer number")))?;
            attn_full.insert(layer, read_f(name)?.expect("name listed"));
        }
    }
    let earlier = manifest.turns.len().saturating_sub(1);
    let mut turns = Vec::with_capacity(earlier);
    for k in 0..earlier {
        turns.push(Turn {
            input_ids: read_i(&format!("turn.{k}.input_ids"))?,
            output_ids: read_i(&format!("turn.{k}.output_ids"))?,
            attn_gen: read_f(&format!("turn.{k}.attn.gen"))?,
            relevancy_llm: read_f(&format!("turn.{k}.relevancy.llm"))?,
            relevancy_vit: read_f(&format!("turn.{k}.relevancy.vit"))?,
            relevancy_combined: read_f(&format!("turn.{k}.relevancy.combined"))?,
        });
    }
    if let Some(name) = st.names().into_iter().find(|name| {
        name.strip_prefix("turn.").is_some_and(|rest| {
            rest.split('.')
                .next()
                .and_then(|k| k.parse::<usize>().ok())
                .is_none_or(|k| k >= earlier)
        })
    }) {
        return Err(schema(format!(
            "tensor {name} belongs to no earlier turn its manifest lists"
        )));
    }
    let manifest_vision = manifest.vision_attention;
    let session = Session {
        manifest,
        input_ids,
        output_ids,
        pixel_values,
        attn_gen: read_f("attn.gen")?,
        attn_full,
        attn_vit: read_vision(&st, &manifest_vision).map_err(schema)?,
        relevancy_llm: read_f("relevancy.llm")?,
        relevancy_vit: read_f("relevancy.vit")?,
        relevancy_combined: read_f("relevancy.combined")?,
        turns,
    };
    validate(&session).map_err(schema)?;
    Ok(session)
}

pub(super) fn decode_float(view: &TensorView<'_>) -> Result<Array, String> {
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("chunk of 4")))
            .collect(),
        Dtype::F16 => view
            .data()
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes(c.try_into().expect("chunk of 2")).to_f32())
            .collect(),
        Dtype::BF16 => view
            .data()
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes(c.try_into().expect("chunk of 2")).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} is not a float type")),
    };
    Array::new(view.shape().to_vec(), data).ok_or_else(|| "size does not match shape".into())
}

/// The most layers or heads a manifest may claim (no model comes near): sizes that no tensor of
/// the file holds are bounded by this before anything is sized by them.
pub const MAX_LAYERS_OR_HEADS: usize = 4096;

/// Checks that the tensors agree with each other and with the manifest, so that no size read
/// from the manifest sizes an allocation before it is checked against the data
/// (docs/design.md, "Session file").
fn validate(s: &Session) -> Result<(), String> {
    check_turns(s)?;
    for k in 0..s.turns.len() {
        let turn = s.turn(k).ok_or("its turns do not match their tensors")?;
        validate_turn(&turn).map_err(|e| format!("turn {}: {e}", k + 1))?;
    }
    validate_turn(s)
}

/// [`validate`] of one turn (the session's standard fields).
fn validate_turn(s: &Session) -> Result<(), String> {
    let n = s.num_input();
    let t = s.num_output();
    let positions = s.num_positions();
    let [start, len] = s.manifest.image_span;
    if start.checked_add(len).is_none_or(|end| end > n) {
        return Err(format!(
            "image_span [{start}, {len}] lies outside the {n} input positions"
        ));
    }
    let patches = check_image(s)?;
    let model = &s.manifest.model;
    for (what, v) in [
        ("text_layers", model.text_layers),
        ("text_heads", model.text_heads),
        ("vision_layers", model.vision_layers),
        ("vision_heads", model.vision_heads),
    ] {
        if v > MAX_LAYERS_OR_HEADS {
            return Err(format!(
                "its manifest claims {v} {what}, more than any model has ({MAX_LAYERS_OR_HEADS})"
            ));
        }
    }
    if s.manifest.tokens.input.len() != n || s.manifest.tokens.output.len() != t {
        return Err("token strings do not match input_ids/output_ids".into());
    }
    if s.pixel_values.shape.len() != 3 || s.pixel_values.shape[0] != 3 {
        return Err("pixel_values must be [3, h, w]".into());
    }
    let (layers, heads) = (s.manifest.model.text_layers, s.manifest.model.text_heads);
    if let Some(a) = &s.attn_gen {
        if a.shape != [t, layers, heads, positions] {
            return Err(format!(
                "attn.gen has shape {:?}, expected {:?}",
                a.shape,
                [t, layers, heads, positions]
            ));
        }
    }
    for (layer, a) in &s.attn_full {
        if *layer >= layers || a.shape != [heads, positions, positions] {
            return Err(format!("attn.full.{layer} has shape {:?}", a.shape));
        }
    }
    if let Some(VisionAttention::Views(v)) = &s.attn_vit {
        check_views(v, model.vision_layers, model.vision_heads, patches)?;
    }
    let m = &s.manifest;
    for (what, tokens) in [
        ("relevancy_tokens", m.relevancy_tokens.clone()),
        (
            "causal",
            m.causal
                .iter()
                .flat_map(|c| c.tokens.keys().copied())
                .collect(),
        ),
        ("lens", m.lens.iter().map(|l| l.token).collect::<Vec<_>>()),
    ] {
        if let Some(bad) = tokens.into_iter().find(|&k| k >= t) {
            return Err(format!(
                "its {what} results name answer token {bad}, but the answer has {t} tokens"
            ));
        }
    }
    let tables = [&s.relevancy_llm, &s.relevancy_vit, &s.relevancy_combined];
    if !m.relevancy_tokens.is_empty() && tables.iter().all(|a| a.is_none()) {
        return Err(format!(
            "its relevancy_tokens name {} answer tokens, but it holds no relevancy table",
            m.relevancy_tokens.len()
        ));
    }
    for (name, a, width) in [
        ("relevancy.llm", &s.relevancy_llm, positions),
        ("relevancy.vit", &s.relevancy_vit, patches),
        ("relevancy.combined", &s.relevancy_combined, patches),
    ] {
        if let Some(a) = a {
            if a.shape != [t, width] {
                return Err(format!(
                    "{name} has shape {:?}, expected {:?}",
                    a.shape,
                    [t, width]
                ));
            }
        }
    }
    Ok(())
}

/// Checks the image regions (the manifest's, or the one a schema 1 file describes) against the
/// input positions, the image span (which may hold more, e.g. a leading CLS feature),
/// `model.image_grid` and the image size; returns the number
/// of cells of all regions (the width of `relevancy.vit` / `relevancy.combined`).
fn check_image(s: &Session) -> Result<usize, String> {
    let m = &s.manifest;
    let [start, len] = m.image_span;
    let [rows, cols] = m.model.image_grid;
    let regions = s.regions();
    if len > 0 && regions.is_empty() {
        return Err(format!(
            "its manifest claims a {rows}x{cols} image grid, but the image span holds {len} positions"
        ));
    }
    if m.schema == SCHEMA_1 && !m.regions.is_empty() {
        return Err(format!("it says schema {SCHEMA_1} but lists image regions"));
    }
    super::regions::check_regions(&regions, s.num_input(), [start, len], m.image.original_size)?;
    if let Some(first) = regions.first() {
        if first.grid != [rows, cols] {
            return Err(format!(
                "its manifest claims a {rows}x{cols} image grid, but its first image region is \
                 {}x{}",
                first.grid[0], first.grid[1]
            ));
        }
    }
    Ok(regions.iter().map(|r| r.cells()).sum())
}
