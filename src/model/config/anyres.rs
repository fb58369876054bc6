//! `config.json` of LLaVA-NeXT (`llava_next`) and LLaVA-OneVision (`llava_onevision`): the
//! LLaVA fields ([`LlavaConfig`]) plus the "anyres" ones, `image_grid_pinpoints` and (OneVision)
//! `vision_aspect_ratio` `anyres_max_N`, with the defaults of transformers' `LlavaNextConfig` /
//! `LlavaOnevisionConfig`.

use std::path::Path;

use serde_json::Value;

use super::{text, unsupported, vision, LlavaConfig};
use crate::model::ModelError;

/// Which anyres model a config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyresVariant {
    /// `llava_next` (LLaVA-1.6): base view + tiles, unpadded, a newline after each row.
    Next,
    /// `llava_onevision`: as NeXT, then the `anyres_max_N` bilinear pooling of the grid.
    OneVision,
}

impl AnyresVariant {
    /// The variant of a top-level `model_type`, if it is one.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llava_next" => Some(Self::Next),
            "llava_onevision" => Some(Self::OneVision),
            _ => None,
        }
    }

    /// The top-level `model_type` of the variant.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Next => "llava_next",
            Self::OneVision => "llava_onevision",
        }
    }
}

/// transformers' `LlavaNextConfig` default pinpoints ([height, width]).
const NEXT_PINPOINTS: [[usize; 2]; 5] =
    [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/// `LlavaOnevisionConfig`'s default: every [h, w] with h, w in 384·{1..6}.
fn onevision_pinpoints() -> Vec<[usize; 2]> {
    let sides = (1..=6).map(|k| 384 * k);
    sides
        .clone()
        .flat_map(|h| sides.clone().map(move |w| [h, w]))
        .collect()
}

/// A LLaVA-NeXT or LLaVA-OneVision configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresConfig {
    /// Which model.
    pub variant: AnyresVariant,
    /// The LLaVA fields (decoder, tower, projector, image token, feature layer and strategy).
    pub llava: LlavaConfig,
    /// The resolutions `[height, width]` the image may be tiled to.
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// OneVision's `anyres_max_N`: the stitched grid is pooled down past N tiles' worth of
    /// features; `None` for NeXT.
    pub max_tiles: Option<usize>,
}

/// Parse `anyres_max_N` as transformers does (`int(s.strip("anyres_max_"))`, which for the
/// values configs use is the N after the prefix).
pub fn parse_anyres_max(s: &str) -> Option<usize> {
    s.strip_prefix("anyres_max_")?
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
}

fn pinpoints(v: &Value) -> Result<Vec<[usize; 2]>, ModelError> {
    let bad = || {
        unsupported(format!(
            "image_grid_pinpoints must be a non-empty list of [height, width] pairs of positive integers, found {v}"
        ))
    };
    let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
    list.iter()
        .map(|p| match p.as_array().map(Vec::as_slice) {
            Some([h, w]) => match (h.as_u64(), w.as_u64()) {
                (Some(h), Some(w)) if h > 0 && w > 0 => Ok([h as usize, w as usize]),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        })
        .collect()
}

impl AnyresConfig {
    /// The variant named by a config.json's text, if it is an anyres one.
    pub fn variant_of(text: &str) -> Option<AnyresVariant> {
        let root: Value = serde_json::from_str(text).ok()?;
        AnyresVariant::from_model_type(root.get("model_type")?.as_str()?)
    }

    /// Parse the text of a config.json; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ModelError> {
        let malformed = |message: String| ModelError::MalformedConfig {
            path: path.to_path_buf(),
            message,
        };
        let mut root: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        let mt = root
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let variant = AnyresVariant::from_model_type(&mt).ok_or_else(|| {
            unsupported(format!(
                "model_type '{mt}' is not llava_next or llava_onevision"
            ))
        })?;
        let obj = root
            .as_object_mut()
            .ok_or_else(|| malformed("the file is not a JSON object".into()))?;
        // The published checkpoints name both sub-configs; transformers' defaults for missing
        // ones (a 7B Vicuna/CLIP or Qwen2/SigLIP shape) are not guessed here.
        for key in ["text_config", "vision_config"] {
            if !obj.get(key).is_some_and(Value::is_object) {
                return Err(unsupported(format!(
                    "model_type '{mt}' needs a {key} in config.json (lvlmscope runs {} with a {} decoder and a {} vision tower)",
                    "llava/llava_next/llava_onevision",
                    text::supported_text_types().replace(", ", "/"),
                    vision::supported_vision_types().replace(", ", "/"),
                )));
            }
        }
        let image_grid_pinpoints = match obj.get("image_grid_pinpoints").filter(|v| !v.is_null()) {
            Some(v) => pinpoints(v)?,
            None => match variant {
                AnyresVariant::Next => NEXT_PINPOINTS.to_vec(),
                AnyresVariant::OneVision => onevision_pinpoints(),
            },
        };
        let max_tiles = match variant {
            AnyresVariant::Next => None,
            AnyresVariant::OneVision => {
                let s = obj
                    .get("vision_aspect_ratio")
                    .and_then(Value::as_str)
                    .unwrap_or("anyres_max_9");
                Some(parse_anyres_max(s).ok_or_else(|| {
                    unsupported(format!(
                        "vision_aspect_ratio '{s}' is not supported (anyres_max_N with N ≥ 1)"
                    ))
                })?)
            }
        };
        // The LLaVA fields are read by the LLaVA parser with this variant's defaults (OneVision:
        // image token 151646, layer -1, strategy full); the top-level model_type is the only
        // thing it would refuse.
        obj.insert("model_type".into(), Value::from("llava"));
        if variant == AnyresVariant::OneVision {
            for (key, default) in [
                ("image_token_index", Value::from(151_646)),
                ("vision_feature_layer", Value::from(-1)),
                ("vision_feature_select_strategy", Value::from("full")),
                ("image_seq_length", Value::from(729)),
            ] {
                let absent = obj.get(key).is_none_or(Value::is_null)
                    && !(key == "image_token_index" && obj.contains_key("image_token_id"));
                if absent {
                    obj.insert(key.into(), default);
                }
            }
        }
        let llava = LlavaConfig::from_json(&root.to_string(), path)?;
        let side = llava.vision_config.image_size;
        if let Some(p) = image_grid_pinpoints
            .iter()
            .find(|p| p[0] % side != 0 || p[1] % side != 0)
        {
            return Err(unsupported(format!(
                "image_grid_pinpoint [{}, {}] is not a multiple of the vision tower's {side}-pixel tile",
                p[0], p[1]
            )));
        }
        Ok(Self {
            variant,
            llava,
            image_grid_pinpoints,
            max_tiles,
        })
    }

    /// Read and parse a config.json file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anyres_max_parses_like_transformers() {
        assert_eq!(parse_anyres_max("anyres_max_9"), Some(9));
        assert_eq!(parse_anyres_max("anyres_max_1"), Some(1));
        assert_eq!(parse_anyres_max("anyres"), None);
        assert_eq!(parse_anyres_max("anyres_max_0"), None);
    }

    #[test]
    fn onevision_defaults() {
        let p = onevision_pinpoints();
        assert_eq!(p.len(), 36);
        assert_eq!(p[1], [384, 768]);
        assert_eq!(p[35], [2304, 2304]);
    }
}
