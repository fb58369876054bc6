//! transformers' Llama tokenizer settings, applied over `tokenizer.json`.
//!
//! When `tokenizer_config.json` names the class `LlamaTokenizer` (or `LlamaTokenizerFast`),
//! transformers 5 does not take the normalizer, pre-tokenizer and decoder from
//! `tokenizer.json`: it keeps only the vocabulary and merges and installs its own (no
//! normalizer; Metaspace "▁" with prepend scheme `first`, or `always` for `legacy: true`, or
//! `never` for `add_prefix_space: false`, without splitting; a Replace/ByteFallback/Fuse/Strip
//! decoder), and adds BOS/EOS from `add_bos_token` (default true) / `add_eos_token` (default
//! false). Older llava checkpoints ship a "legacy" `tokenizer.json` (a Prepend("▁") normalizer)
//! that would put an extra "▁" after `<image>`; applying the same settings keeps lvlmscope's
//! ids equal to transformers'.

use serde_json::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

use super::error::ProcessingError;

/// Whether `tokenizer_config.json` asks for transformers' Llama tokenizer class.
pub fn is_llama_class(config: &Value) -> bool {
    matches!(
        config.get("tokenizer_class").and_then(Value::as_str),
        Some("LlamaTokenizer" | "LlamaTokenizerFast")
    )
}

/// Installs transformers' Llama normalizer, pre-tokenizer and decoder on `tokenizer`.
pub fn apply_llama_settings(
    tokenizer: &mut Tokenizer,
    config: &Value,
) -> Result<(), ProcessingError> {
    let add_prefix_space = config
        .get("add_prefix_space")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let legacy = config
        .get("legacy")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let scheme = match (add_prefix_space, legacy) {
        (false, _) => PrependScheme::Never,
        (true, true) => PrependScheme::Always,
        (true, false) => PrependScheme::First,
    };
    let replace = Replace::new("▁", " ").map_err(|e| ProcessingError::Encode(e.to_string()))?;
    let mut decoders = vec![
        DecoderWrapper::Replace(replace),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_prefix_space {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tokenizer.with_normalizer(None::<NormalizerWrapper>);
    tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
    tokenizer.with_decoder(Some(Sequence::new(decoders)));
    Ok(())
}
