//! Memory-mapped safetensors weights, checked before use, with both LLaVA key layouts.
//!
//! Each file's header is read and checked against the file size before anything is mapped, so a
//! truncated download is reported as such, naming the file. Tensors are served through a
//! [`VarBuilder`] whose backend records the first missing or misshapen tensor by name, so that
//! the model loader can turn candle's error into one clear [`ModelError`].

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use super::ModelError;

/// Where a tensor lives and its stored shape.
#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    shape: Vec<usize>,
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Read and check one safetensors header against the file size; returns tensor name → shape.
pub(crate) fn check_file(path: &Path) -> Result<Vec<(String, Vec<usize>)>, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let truncated = |detail: String| ModelError::TruncatedWeights {
        file: path.to_path_buf(),
        detail,
    };
    let bad = |detail: String| ModelError::BadWeights {
        file: path.to_path_buf(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size < 8 {
        return Err(truncated(format!(
            "it has {size} bytes, fewer than the 8-byte header length"
        )));
    }
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100_000_000 {
        return Err(bad(format!(
            "its header length {header_len} is implausible"
        )));
    }
    if 8 + header_len > size {
        return Err(truncated(format!(
            "its header needs {header_len} bytes but the file has only {size} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("its header is not valid JSON ({e})")))?;
    let map = header
        .as_object()
        .ok_or_else(|| bad("its header is not a JSON object".to_string()))?;
    let data_len = size - 8 - header_len;
    let mut out = Vec::with_capacity(map.len());
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let field = |k: &str| {
            info.get(k)
                .ok_or_else(|| bad(format!("tensor '{name}' has no '{k}'")))
        };
        let dtype = field("dtype")?.as_str().unwrap_or_default();
        let elem = dtype_size(dtype)
            .ok_or_else(|| bad(format!("tensor '{name}' has unknown dtype '{dtype}'")))?;
        let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone())
            .map_err(|_| bad(format!("tensor '{name}' has a malformed shape")))?;
        let offsets: [u64; 2] = serde_json::from_value(field("data_offsets")?.clone())
            .map_err(|_| bad(format!("tensor '{name}' has malformed data_offsets")))?;
        let need = shape.iter().product::<usize>() as u64 * elem as u64;
        if offsets[1] < offsets[0] || offsets[1] - offsets[0] != need {
            return Err(bad(format!(
                "tensor '{name}' has data_offsets {offsets:?} that do not match its shape {shape:?} and dtype {dtype}"
            )));
        }
        if offsets[1] > data_len {
            return Err(truncated(format!(
                "tensor '{name}' ends at byte {} of the data but the file holds only {data_len} data bytes",
                offsets[1]
            )));
        }
        out.push((name.clone(), shape));
    }
    Ok(out)
}

/// Which of the two LLaVA key layouts the weights use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// `language_model.model.*`, `language_model.lm_head`, `vision_tower.vision_model.*`,
    /// `multi_modal_projector.*`.
    Legacy,
    /// `model.language_model.*`, `lm_head`, `model.vision_tower.vision_model.*`,
    /// `model.multi_modal_projector.*`.
    Current,
}

impl KeyLayout {
    /// Prefix of the decoder body (embeddings, layers, final norm).
    pub fn text(&self) -> &'static str {
        match self {
            Self::Legacy => "language_model.model",
            Self::Current => "model.language_model",
        }
    }

    /// Name of the output projection weight.
    pub fn lm_head(&self) -> &'static str {
        match self {
            Self::Legacy => "language_model.lm_head",
            Self::Current => "lm_head",
        }
    }

    /// Candidate prefixes of the CLIP vision transformer, most usual first (transformers 5
    /// itself saves `model.vision_tower.*` without the `vision_model` level).
    pub fn vision_candidates(&self) -> [&'static str; 2] {
        match self {
            Self::Legacy => ["vision_tower.vision_model", "vision_tower"],
            Self::Current => ["model.vision_tower.vision_model", "model.vision_tower"],
        }
    }

    /// Prefix of the projector.
    pub fn projector(&self) -> &'static str {
        match self {
            Self::Legacy => "multi_modal_projector",
            Self::Current => "model.multi_modal_projector",
        }
    }
}

struct CheckedBackend {
    inner: MmapedSafetensors,
    index: Arc<HashMap<String, Entry>>,
    files: String,
    failure: Arc<Mutex<Option<ModelError>>>,
}

impl CheckedBackend {
    fn fail(&self, err: ModelError) -> candle_core::Error {
        let msg = err.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            if slot.is_none() {
                *slot = Some(err);
            }
        }
        candle_core::Error::Msg(msg)
    }
}

impl candle_nn::var_builder::SimpleBackend for CheckedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(entry) = self.index.get(name) else {
            return Err(self.fail(ModelError::MissingTensor {
                name: name.to_string(),
                files: self.files.clone(),
            }));
        };
        if entry.shape != s.dims() {
            return Err(self.fail(ModelError::TensorShape {
                name: name.to_string(),
                file: entry.file.clone(),
                expected: s.dims().to_vec(),
                got: entry.shape.clone(),
            }));
        }
        self.inner.load(name, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.index.contains_key(name) {
            return Err(self.fail(ModelError::MissingTensor {
                name: name.to_string(),
                files: self.files.clone(),
            }));
        }
        self.inner.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// Checked, memory-mapped weights.
pub struct Weights {
    /// Root builder over all files (no prefix).
    pub vb: VarBuilder<'static>,
    /// Detected key layout.
    pub layout: KeyLayout,
    /// Detected prefix of the vision transformer.
    pub vision_prefix: &'static str,
    index: Arc<HashMap<String, Entry>>,
    failure: Arc<Mutex<Option<ModelError>>>,
}

impl Weights {
    /// Check every file's header, map them, and detect the key layout.
    pub fn open(files: &[PathBuf], dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let mut index = HashMap::new();
        for file in files {
            for (name, shape) in check_file(file)? {
                index.insert(
                    name,
                    Entry {
                        file: file.clone(),
                        shape,
                    },
                );
            }
        }
        let layout = if index.contains_key("model.language_model.embed_tokens.weight") {
            KeyLayout::Current
        } else if index.contains_key("language_model.model.embed_tokens.weight") {
            KeyLayout::Legacy
        } else {
            return Err(ModelError::UnknownLayout);
        };
        let vision_prefix = layout
            .vision_candidates()
            .into_iter()
            .find(|p| index.contains_key(&format!("{p}.embeddings.class_embedding")))
            .unwrap_or(layout.vision_candidates()[0]);
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them
        // not being modified while the model is alive.
        let inner =
            unsafe { MmapedSafetensors::multi(files) }.map_err(|e| ModelError::BadWeights {
                file: files.first().cloned().unwrap_or_default(),
                detail: e.to_string(),
            })?;
        let index = Arc::new(index);
        let failure = Arc::new(Mutex::new(None));
        let files_list = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let backend = CheckedBackend {
            inner,
            index: index.clone(),
            files: files_list,
            failure: failure.clone(),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        Ok(Self {
            vb,
            layout,
            vision_prefix,
            index,
            failure,
        })
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    /// Turn a candle error raised while building into the recorded clear error, if any.
    pub fn explain(&self, err: candle_core::Error) -> ModelError {
        match self.failure.lock().ok().and_then(|mut s| s.take()) {
            Some(e) => e,
            None => ModelError::Candle(err),
        }
    }
}
