//! Finding the files of a model: a folder, or a model id in the local Hugging Face cache.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::config::{AnyresConfig, QwenVlConfig};
use super::{LlavaConfig, ModelError};

/// The files of one model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    /// The folder (a snapshot folder when resolved from the cache).
    pub root: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// The safetensors weight files, in a stable order.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config: Option<PathBuf>,
    /// `chat_template.json`, if present.
    pub chat_template: Option<PathBuf>,
    /// `preprocessor_config.json`, if present.
    pub preprocessor_config: Option<PathBuf>,
    /// `generation_config.json`, if present.
    pub generation_config: Option<PathBuf>,
}

fn optional(root: &Path, name: &str) -> Option<PathBuf> {
    let p = root.join(name);
    p.is_file().then_some(p)
}

fn io_err(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The Hugging Face hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// Whether `s` looks like `org/name` rather than a path.
fn looks_like_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.starts_with('.') && !p.contains('\\'))
}

impl ModelDir {
    /// Resolve `model`: an existing folder, or a model id (`org/name`) in the local Hugging
    /// Face cache (offline), using the revision named by `refs/main`, else the only or newest
    /// snapshot.
    pub fn resolve(model: &str) -> Result<Self, ModelError> {
        let path = Path::new(model);
        if path.is_dir() {
            return Self::from_folder(path);
        }
        if path.exists() {
            return Err(ModelError::NotAFolder(path.to_path_buf()));
        }
        if looks_like_id(model) {
            let cache = hf_cache_dir();
            let snapshot = Self::find_in_cache(model, &cache)?;
            return Self::from_folder(&snapshot);
        }
        Err(ModelError::FolderNotFound(path.to_path_buf()))
    }

    /// Resolve a model id in a given cache folder.
    pub fn resolve_in_cache(id: &str, cache: &Path) -> Result<Self, ModelError> {
        let snapshot = Self::find_in_cache(id, cache)?;
        Self::from_folder(&snapshot)
    }

    fn find_in_cache(id: &str, cache: &Path) -> Result<PathBuf, ModelError> {
        let repo = cache.join(format!("models--{}", id.replace('/', "--")));
        if !repo.is_dir() {
            return Err(ModelError::NotInCache {
                id: id.to_string(),
                cache: cache.to_path_buf(),
            });
        }
        let snapshots = repo.join("snapshots");
        if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
            let dir = snapshots.join(rev.trim());
            if !rev.trim().is_empty() && dir.is_dir() {
                return Ok(dir);
            }
        }
        let no_snapshot = || ModelError::NoSnapshot {
            id: id.to_string(),
            path: repo.clone(),
        };
        let entries = std::fs::read_dir(&snapshots).map_err(|_| no_snapshot())?;
        let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
        for entry in entries.flatten() {
            let p = entry.path();
            if !p.is_dir() {
                continue;
            }
            let t = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, p));
            }
        }
        best.map(|(_, p)| p).ok_or_else(no_snapshot)
    }

    /// List the files of a model folder. `config.json` is read first and must describe a
    /// supported model: an unsupported architecture is named as such before the weights or
    /// the tokenizer are looked at (a Qwen2-VL folder is refused for its `model_type`, not for
    /// the image token its tokenizer lacks).
    pub fn from_folder(root: &Path) -> Result<Self, ModelError> {
        if !root.is_dir() {
            return Err(ModelError::FolderNotFound(root.to_path_buf()));
        }
        let config = root.join("config.json");
        if !config.is_file() {
            return Err(ModelError::MissingConfig(root.to_path_buf()));
        }
        let text = std::fs::read_to_string(&config).map_err(|source| ModelError::Io {
            path: config.clone(),
            source,
        })?;
        if QwenVlConfig::variant_of(&text).is_some() {
            QwenVlConfig::from_json(&text, &config)?;
        } else if AnyresConfig::variant_of(&text).is_some() {
            AnyresConfig::from_json(&text, &config)?;
        } else {
            LlavaConfig::from_json(&text, &config)?;
        }
        let weights = Self::weight_files(root)?;
        let tokenizer =
            optional(root, "tokenizer.json").ok_or_else(|| ModelError::MissingFile {
                folder: root.to_path_buf(),
                file: "tokenizer.json".to_string(),
            })?;
        Ok(Self {
            root: root.to_path_buf(),
            config,
            weights,
            tokenizer,
            tokenizer_config: optional(root, "tokenizer_config.json"),
            chat_template: optional(root, "chat_template.json"),
            preprocessor_config: optional(root, "preprocessor_config.json"),
            generation_config: optional(root, "generation_config.json"),
        })
    }

    fn weight_files(root: &Path) -> Result<Vec<PathBuf>, ModelError> {
        let single = root.join("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = root.join("model.safetensors.index.json");
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| io_err(&index, e))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::BadWeights {
                    file: index.clone(),
                    detail: format!("the index is not valid JSON ({e})"),
                })?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::BadWeights {
                    file: index.clone(),
                    detail: "the index has no 'weight_map' object".to_string(),
                })?;
            let mut shards = BTreeSet::new();
            for file in map.values() {
                let name = file.as_str().ok_or_else(|| ModelError::BadWeights {
                    file: index.clone(),
                    detail: format!("weight_map value {file} is not a file name"),
                })?;
                shards.insert(name.to_string());
            }
            let mut out = Vec::new();
            for name in shards {
                let shard = root.join(&name);
                if !shard.is_file() {
                    return Err(ModelError::MissingShard {
                        index: index.clone(),
                        shard,
                    });
                }
                out.push(shard);
            }
            if out.is_empty() {
                return Err(ModelError::NoWeights(root.to_path_buf()));
            }
            return Ok(out);
        }
        let mut out: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| io_err(root, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(ModelError::NoWeights(root.to_path_buf()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths() {
        assert!(looks_like_id("llava-hf/llava-1.5-7b-hf"));
        assert!(!looks_like_id("./models/x"));
        assert!(!looks_like_id("/abs/x"));
        assert!(!looks_like_id("a/b/c"));
        assert!(!looks_like_id("plain"));
    }
}
