//! The error type of the model module.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or building a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The given path does not exist.
    #[error("model folder {0} does not exist")]
    FolderNotFound(PathBuf),
    /// The given path is a file, not a folder.
    #[error("{0} is a file, not a model folder")]
    NotAFolder(PathBuf),
    /// A model id that is not a folder and not in the local Hugging Face cache.
    #[error(
        "model '{id}' is not a folder and was not found in the local Hugging Face cache at {cache}"
    )]
    NotInCache {
        /// The model id as given.
        id: String,
        /// The cache folder searched.
        cache: PathBuf,
    },
    /// A model that is in the cache but has no usable snapshot.
    #[error("model '{id}' is in the Hugging Face cache at {path} but has no snapshot")]
    NoSnapshot {
        /// The model id as given.
        id: String,
        /// The model's cache folder.
        path: PathBuf,
    },
    /// The model folder has no config.json.
    #[error("the model folder {0} has no config.json")]
    MissingConfig(PathBuf),
    /// config.json could not be parsed.
    #[error("config.json at {path} is malformed: {message}")]
    MalformedConfig {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// config.json parses but describes something this crate cannot run.
    #[error("unsupported model configuration: {0}")]
    UnsupportedConfig(String),
    /// A required file is missing from the model folder.
    #[error("the model folder {folder} has no {file}")]
    MissingFile {
        /// The model folder.
        folder: PathBuf,
        /// The missing file's name.
        file: String,
    },
    /// No weight file was found.
    #[error("the model folder {0} has no weights (no model.safetensors, no model.safetensors.index.json, no *.safetensors)")]
    NoWeights(PathBuf),
    /// The safetensors index names a shard that is not there.
    #[error("the weight index {index} names shard {shard}, which does not exist")]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The missing shard.
        shard: PathBuf,
    },
    /// A weight file is shorter than its header says.
    #[error("weight file {file} is truncated: {detail}")]
    TruncatedWeights {
        /// The weight file.
        file: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// A weight file is not a valid safetensors file.
    #[error("weight file {file} is not a valid safetensors file: {detail}")]
    BadWeights {
        /// The weight file.
        file: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A tensor the model needs is in no weight file.
    #[error("tensor '{name}' is missing from the weights ({files})")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The weight files searched, comma separated.
        files: String,
    },
    /// A tensor has the wrong shape for the configuration.
    #[error(
        "tensor '{name}' in {file} has shape {got:?} but the configuration needs {expected:?}"
    )]
    TensorShape {
        /// The tensor name.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// Shape required by config.json.
        expected: Vec<usize>,
        /// Shape found in the file.
        got: Vec<usize>,
    },
    /// The weights follow neither llava key layout.
    #[error("the weights follow no known LLaVA key layout: neither 'model.language_model.embed_tokens.weight' nor 'language_model.model.embed_tokens.weight' is present")]
    UnknownLayout,
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device name is not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device '{0}': use cpu, cuda or cuda:N")]
    BadDevice(String),
    /// CUDA was asked for but the binary was built without it.
    #[error("device '{0}' needs CUDA, but lvlmscope was built without the `cuda` feature")]
    CudaNotBuilt(String),
    /// The CUDA driver cannot be used at all (none installed, no GPU, too old).
    #[error("device '{name}' cannot be used: the CUDA driver reports {message}; is there an NVIDIA GPU and driver on this machine?")]
    NoCudaDriver {
        /// The device name.
        name: String,
        /// The driver's error.
        message: String,
    },
    /// `cuda:N` past the GPUs the driver sees.
    #[error("device '{name}' does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{last}", last = count.saturating_sub(1))]
    NoSuchGpu {
        /// The device name.
        name: String,
        /// GPUs the driver sees.
        count: usize,
    },
    /// The CUDA device could not be opened.
    #[error("cannot open device '{name}': {message}")]
    DeviceUnavailable {
        /// The device name.
        name: String,
        /// candle's message.
        message: String,
    },
    /// The dtype cannot run on the device.
    #[error("{dtype} is not supported on {device}: candle has no {dtype} matrix multiply there; use f32 or f16")]
    UnsupportedDtype {
        /// The dtype, as the CLI names it.
        dtype: String,
        /// The device, in words.
        device: String,
    },
    /// Any other tensor error while building the model.
    #[error("building the model failed: {}", message(.0))]
    Candle(#[from] candle_core::Error),
}

/// A candle error as one line: candle wraps its errors in a backtrace when `RUST_BACKTRACE` is
/// set, and adds context and paths on lines of their own; this keeps the messages and drops
/// the backtrace.
pub fn message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => message(inner),
        E::Context { inner, context } => format!("{context}: {}", message(inner)),
        E::WithPath { inner, path } => format!("{} ({})", message(inner), path.display()),
        other => other
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Refuses `dtype` on `device` where candle cannot run it (bf16 on the CPU: no bf16 matrix
/// multiply there), before any weight is read.
pub(crate) fn check_dtype(
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<(), ModelError> {
    if dtype == candle_core::DType::BF16 && device.is_cpu() {
        return Err(ModelError::UnsupportedDtype {
            dtype: "bf16".to_string(),
            device: "CPU".to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_and_context_stay_one_line() {
        let inner = candle_core::Error::Msg("shape mismatch".into());
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(inner.context("in the decoder")),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(message(&e), "in the decoder: shape mismatch");
        let wrapped = ModelError::Candle(e).to_string();
        assert_eq!(
            wrapped,
            "building the model failed: in the decoder: shape mismatch"
        );
    }
}
