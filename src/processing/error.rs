//! Errors of the processing stage (image loading, preprocessing, prompt, tokenizer).

use std::path::PathBuf;

/// Everything that can go wrong between an image file + prompt and the model's inputs.
/// Each variant displays as one sentence a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ProcessingError {
    /// A file could not be read (missing, unreadable, permission denied).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The bytes are not an image in a format lvlmscope can decode.
    #[error("{what} is not an image lvlmscope can read (PNG, JPEG, BMP, GIF or WebP): {reason}")]
    NotAnImage {
        /// The file path, or "the image data" for in-memory images.
        what: String,
        /// The decoder's explanation.
        reason: String,
    },
    /// The image has no pixels.
    #[error("{what} is an empty image ({width}x{height} pixels)")]
    EmptyImage {
        /// The file path, or "the image data" for in-memory images.
        what: String,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The image is larger than the decode limits (a decompression bomb or a huge scan).
    #[error("{what} is too large to decode (the limit is {max_side}x{max_side} pixels and {max_mib} MiB): {reason}")]
    ImageTooLarge {
        /// The file path, or "the image data" for in-memory images.
        what: String,
        /// Largest accepted side in pixels.
        max_side: u32,
        /// Largest accepted decoded size in MiB.
        max_mib: u64,
        /// The decoder's explanation.
        reason: String,
    },
    /// The resize step would produce an unreasonably large image (an extreme aspect ratio).
    #[error("resizing the image would give {width}x{height} pixels, more than lvlmscope accepts; crop the image or use --image-mode resize")]
    ResizedTooLarge {
        /// Width after resizing.
        width: usize,
        /// Height after resizing.
        height: usize,
    },
    /// An image mode name that is not one of default, crop, resize, pad.
    #[error("unknown image mode \"{0}\"; use default, crop, resize or pad")]
    UnknownImageMode(String),
    /// A JSON configuration file is malformed or holds an invalid value.
    #[error("invalid {what}: {reason}")]
    InvalidConfig {
        /// Which configuration (e.g. "preprocessor_config.json").
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer file could not be loaded.
    #[error("cannot load the tokenizer from {}: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer.json path.
        path: PathBuf,
        /// The tokenizers library's explanation.
        reason: String,
    },
    /// Encoding text with the tokenizer failed.
    #[error("the tokenizer could not encode the prompt: {0}")]
    Encode(String),
    /// The chat template could not be parsed or rendered.
    #[error("the model's chat template failed: {0}")]
    Template(String),
    /// The prompt is empty after trimming whitespace.
    #[error("the prompt is empty; write a question or instruction about the image")]
    EmptyPrompt,
    /// After templating and tokenizing, the prompt holds no image token.
    #[error("the prompt has no image token ({token}) after applying the chat template, so the image cannot be placed")]
    NoImageToken {
        /// The image token's text, e.g. "<image>".
        token: String,
    },
    /// After templating and tokenizing, the prompt holds more than one image token.
    #[error("the prompt has {count} image tokens ({token}) after applying the chat template; lvlmscope supports exactly one image")]
    TooManyImageTokens {
        /// The image token's text.
        token: String,
        /// How many were found.
        count: usize,
    },
    /// The tokenizer has no image token at all.
    #[error("the tokenizer has no image token {token}; this does not look like a LLaVA-style model's tokenizer")]
    ImageTokenMissing {
        /// The image token's text that was looked for.
        token: String,
    },
    /// The tokenizer does not match the model's vocabulary.
    #[error("the tokenizer does not match the model: {0}")]
    VocabMismatch(String),
    /// The prompt does not fit in the model's context.
    #[error("prompt is {tokens} tokens, the model's context is {context}")]
    PromptTooLong {
        /// Number of prompt tokens (image tokens included).
        tokens: usize,
        /// The model's maximum number of positions.
        context: usize,
    },
}

impl ProcessingError {
    /// Builds an [`ProcessingError::InvalidConfig`] from anything displayable.
    pub(crate) fn config(what: &str, reason: impl std::fmt::Display) -> Self {
        ProcessingError::InvalidConfig {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}
