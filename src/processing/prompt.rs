//! Prompt side: chat template, tokenizer, image-token expansion, decoding, EOS ids.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::error::ProcessingError;
use super::llama::{apply_llama_settings, is_llama_class};
use super::template::{
    read_template_file, template_from_tokenizer_config, ChatTemplate, LLAVA_15_FORMAT,
};

/// The image placeholder used when `tokenizer_config.json` names none.
pub const DEFAULT_IMAGE_TOKEN: &str = "<image>";

/// A tokenized prompt with the image token expanded to one id per image feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// Token ids, the image token repeated `image_span[1]` times.
    pub ids: Vec<u32>,
    /// The token string of every position (image positions hold the image token's text).
    pub tokens: Vec<String>,
    /// `[start, len]` of the image positions in `ids`.
    pub image_span: [usize; 2],
    /// The prompt after the chat template, before tokenization.
    pub text: String,
}

impl EncodedPrompt {
    /// Errors when the prompt has more positions than the model's context `max_positions`.
    pub fn check_context(&self, max_positions: usize) -> Result<(), ProcessingError> {
        if self.ids.len() > max_positions {
            return Err(ProcessingError::PromptTooLong {
                tokens: self.ids.len(),
                context: max_positions,
            });
        }
        Ok(())
    }
}

/// Turns a user prompt into model input ids, and ids back into text.
#[derive(Debug)]
pub struct PromptProcessor {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    image_token: String,
    image_token_id: u32,
    eos_ids: Vec<u32>,
    vocab_size: usize,
}

fn read_json(path: &Path) -> Result<Value, ProcessingError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProcessingError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ProcessingError::config(&path.display().to_string(), e))
}

/// A special token in `tokenizer_config.json`: a string or an AddedToken object.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Ids of an `eos_token_id` entry: an integer or a list of integers.
pub fn eos_ids_from_value(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

impl PromptProcessor {
    /// Loads the tokenizer and, when given, `tokenizer_config.json`, the chat template file
    /// (`chat_template.json` or `chat_template.jinja`, which wins over the tokenizer config's
    /// template) and `generation_config.json` (EOS ids).
    pub fn from_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&Path>,
        chat_template_json: Option<&Path>,
        generation_config: Option<&Path>,
    ) -> Result<Self, ProcessingError> {
        Self::from_files_with_token(
            tokenizer_json,
            tokenizer_config,
            chat_template_json,
            generation_config,
            DEFAULT_IMAGE_TOKEN,
        )
    }

    /// [`PromptProcessor::from_files`] with `default_token` as the image placeholder when
    /// `tokenizer_config.json` names none.
    fn from_files_with_token(
        tokenizer_json: &Path,
        tokenizer_config: Option<&Path>,
        chat_template_json: Option<&Path>,
        generation_config: Option<&Path>,
        default_token: &str,
    ) -> Result<Self, ProcessingError> {
        let mut tokenizer =
            Tokenizer::from_file(tokenizer_json).map_err(|e| ProcessingError::Tokenizer {
                path: tokenizer_json.to_path_buf(),
                reason: e.to_string(),
            })?;
        let config = tokenizer_config
            .map(read_json)
            .transpose()?
            .unwrap_or(Value::Null);
        let llama = is_llama_class(&config);
        if llama {
            apply_llama_settings(&mut tokenizer, &config)?;
        }
        let flag = |key: &str, llama_default: bool| {
            config
                .get(key)
                .and_then(Value::as_bool)
                .or(llama.then_some(llama_default))
        };
        let mut source = chat_template_json
            .map(read_template_file)
            .transpose()?
            .flatten();
        if source.is_none() {
            source = template_from_tokenizer_config(&config);
        }
        let template = source.as_deref().map(ChatTemplate::new).transpose()?;
        let image_token =
            token_text(config.get("image_token")).unwrap_or_else(|| default_token.to_string());
        let image_token_id = tokenizer.token_to_id(&image_token).ok_or_else(|| {
            ProcessingError::ImageTokenMissing {
                token: image_token.clone(),
            }
        })?;
        let bos_token = token_text(config.get("bos_token"));
        let eos_token = token_text(config.get("eos_token"));
        let mut eos_ids = Vec::new();
        if let Some(path) = generation_config {
            eos_ids.extend(eos_ids_from_value(read_json(path)?.get("eos_token_id")));
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            eos_ids.push(id);
        }
        let vocab_size = tokenizer
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        let mut p = PromptProcessor {
            tokenizer,
            template,
            bos_token,
            eos_token,
            add_bos: flag("add_bos_token", true),
            add_eos: flag("add_eos_token", false),
            image_token,
            image_token_id,
            eos_ids: Vec::new(),
            vocab_size,
        };
        p.add_eos_token_ids(&eos_ids);
        Ok(p)
    }

    /// Loads everything from a Hugging Face model folder: `tokenizer.json` (required),
    /// `tokenizer_config.json`, `chat_template.jinja` or `chat_template.json`,
    /// `generation_config.json`, `processor_config.json`'s `image_token` and `config.json`'s
    /// `eos_token_id` (top level or `text_config`), each when present.
    pub fn from_dir(dir: &Path) -> Result<Self, ProcessingError> {
        Self::from_dir_with_token(dir, DEFAULT_IMAGE_TOKEN)
    }

    /// [`PromptProcessor::from_dir`] for a model whose image placeholder is `default_token`
    /// unless the folder's files name another (Qwen VL: `<|image_pad|>`).
    pub fn from_dir_with_token(dir: &Path, default_token: &str) -> Result<Self, ProcessingError> {
        let opt = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let template = opt("chat_template.jinja").or_else(|| opt("chat_template.json"));
        let tok_config = opt("tokenizer_config.json");
        let gen_config = opt("generation_config.json");
        let mut p = Self::from_files_with_token(
            &dir.join("tokenizer.json"),
            tok_config.as_deref(),
            template.as_deref(),
            gen_config.as_deref(),
            default_token,
        )?;
        if let Some(path) = opt("processor_config.json") {
            if let Some(token) = token_text(read_json(&path)?.get("image_token")) {
                p.set_image_token(&token)?;
            }
        }
        if let Some(path) = opt("config.json") {
            let config = read_json(&path)?;
            p.add_eos_token_ids(&eos_ids_from_value(config.get("eos_token_id")));
            let text = config.get("text_config");
            p.add_eos_token_ids(&eos_ids_from_value(
                text.and_then(|t| t.get("eos_token_id")),
            ));
        }
        Ok(p)
    }

    /// Uses `token` as the image placeholder (e.g. from `processor_config.json`'s
    /// `image_token`); errors when the tokenizer does not have it.
    pub fn set_image_token(&mut self, token: &str) -> Result<(), ProcessingError> {
        self.image_token_id = self.tokenizer.token_to_id(token).ok_or_else(|| {
            ProcessingError::ImageTokenMissing {
                token: token.to_string(),
            }
        })?;
        self.image_token = token.to_string();
        Ok(())
    }

    /// Adds end-of-sequence ids (e.g. from the model's `config.json`), skipping duplicates.
    pub fn add_eos_token_ids(&mut self, ids: &[u32]) {
        for &id in ids {
            if !self.eos_ids.contains(&id) {
                self.eos_ids.push(id);
            }
        }
    }

    /// Applies the chat template to one user turn (the image, then `prompt`), with the
    /// generation prompt; without a template, LLaVA-1.5's `USER: <image>\n{prompt} ASSISTANT:`.
    ///
    /// The turn is first given as content parts (image, text), as a processor's template
    /// (`chat_template.json`, LLaVA-1.5's, llava-interleave's) expects. When that fails or
    /// places no image token (a text-only tokenizer template, such as Gemma's or Qwen's, which
    /// Intel/llava-gemma-2b ships), it is given as the string `"<image>\n{prompt}"`, as those
    /// models' own instructions build it.
    pub fn render(&self, prompt: &str) -> Result<String, ProcessingError> {
        self.render_conversation(&[], prompt)
    }

    /// Applies the chat template to a conversation: the earlier `(question, answer)` pairs of
    /// `history` (the image with the first question), then `prompt`, with the generation
    /// prompt; in the same form [`PromptProcessor::render`] picks for one question. Without a
    /// template, LLaVA-1.5's format continues with `" {answer} USER: {question} ASSISTANT:"`
    /// per turn, as llava-hf's template renders a conversation.
    pub fn render_conversation(
        &self,
        history: &[(String, String)],
        prompt: &str,
    ) -> Result<String, ProcessingError> {
        let prompt = prompt.trim();
        if prompt.is_empty() || history.iter().any(|(q, _)| q.trim().is_empty()) {
            return Err(ProcessingError::EmptyPrompt);
        }
        let history: Vec<(String, String)> = history
            .iter()
            .map(|(q, a)| (q.trim().to_string(), a.clone()))
            .collect();
        let Some(t) = &self.template else {
            let first = history.first().map_or(prompt, |(q, _)| q.as_str());
            let mut out = LLAVA_15_FORMAT.replace("{prompt}", first);
            let next = history
                .iter()
                .skip(1)
                .map(|(q, _)| q.as_str())
                .chain([prompt]);
            for ((_, answer), question) in history.iter().zip(next) {
                out.push_str(&format!(" {answer} USER: {question} ASSISTANT:"));
            }
            return Ok(out);
        };
        let bos = self.bos_token.as_deref().unwrap_or("");
        let eos = self.eos_token.as_deref().unwrap_or("");
        let image = self.image_token.as_str();
        let parts = t.render_conversation(&history, prompt, true, image, bos, eos);
        if parts.as_ref().is_ok_and(|text| text.contains(image)) {
            return parts;
        }
        match t.render_conversation(&history, prompt, false, image, bos, eos) {
            Ok(out) if out.contains(image) => Ok(out),
            _ => parts,
        }
    }

    /// [`PromptProcessor::encode`] of a conversation (see
    /// [`PromptProcessor::render_conversation`]): the ids of every turn so far and the new
    /// question, the image token expanded.
    pub fn encode_conversation(
        &self,
        history: &[(String, String)],
        prompt: &str,
        num_image_features: usize,
    ) -> Result<EncodedPrompt, ProcessingError> {
        if num_image_features == 0 {
            return Err(ProcessingError::config(
                "model configuration",
                "the number of image features must be positive",
            ));
        }
        let text = self.render_conversation(history, prompt)?;
        self.encode_rendered(text, num_image_features)
    }

    /// Renders and tokenizes `prompt` as transformers' `LlavaProcessor` does, then expands the
    /// single image token into `num_image_features` copies.
    ///
    /// Special tokens: BOS is added unless the rendered text already starts with it; when
    /// `tokenizer_config.json` sets `add_bos_token` / `add_eos_token` (or names the Llama
    /// tokenizer class, whose defaults are true / false) those decide, as in transformers;
    /// otherwise the tokenizer's post-processor does.
    pub fn encode(
        &self,
        prompt: &str,
        num_image_features: usize,
    ) -> Result<EncodedPrompt, ProcessingError> {
        self.encode_conversation(&[], prompt, num_image_features)
    }

    /// Tokenizes a rendered prompt `text` and expands its one image token.
    fn encode_rendered(
        &self,
        text: String,
        num_image_features: usize,
    ) -> Result<EncodedPrompt, ProcessingError> {
        let starts_with_bos = self
            .bos_token
            .as_deref()
            .is_some_and(|b| !b.is_empty() && text.starts_with(b));
        let explicit = self.add_bos.is_some() || self.add_eos.is_some();
        let enc = self
            .tokenizer
            .encode(text.as_str(), !explicit && !starts_with_bos)
            .map_err(|e| ProcessingError::Encode(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        let mut tokens = enc.get_tokens().to_vec();
        if explicit {
            let bos = self
                .bos_token
                .as_deref()
                .and_then(|b| self.tokenizer.token_to_id(b));
            if let (true, false, Some(id)) = (self.add_bos.unwrap_or(false), starts_with_bos, bos) {
                ids.insert(0, id);
                tokens.insert(0, self.decode_token(id));
            }
            let eos = self
                .eos_token
                .as_deref()
                .and_then(|e| self.tokenizer.token_to_id(e));
            if let (true, Some(id)) = (self.add_eos.unwrap_or(false), eos) {
                ids.push(id);
                tokens.push(self.decode_token(id));
            }
        }
        let positions: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == self.image_token_id)
            .map(|(i, _)| i)
            .collect();
        let start = match positions.as_slice() {
            [] => {
                return Err(ProcessingError::NoImageToken {
                    token: self.image_token.clone(),
                })
            }
            [p] => *p,
            many => {
                return Err(ProcessingError::TooManyImageTokens {
                    token: self.image_token.clone(),
                    count: many.len(),
                })
            }
        };
        let image = std::iter::repeat_n(self.image_token_id, num_image_features);
        ids.splice(start..=start, image);
        let labels = std::iter::repeat_n(self.image_token.clone(), num_image_features);
        tokens.splice(start..=start, labels);
        Ok(EncodedPrompt {
            ids,
            tokens,
            image_span: [start, num_image_features],
            text,
        })
    }

    /// The token's string as the tokenizer spells it (e.g. "▁cat"); `<unk:ID>` for an id the
    /// tokenizer does not know.
    pub fn decode_token(&self, id: u32) -> String {
        self.tokenizer
            .id_to_token(id)
            .unwrap_or_else(|| format!("<unk:{id}>"))
    }

    /// Readable text of `ids`, special tokens (BOS, EOS, image) left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer
            .decode(ids, true)
            .unwrap_or_else(|_| ids.iter().map(|&id| self.decode_token(id)).collect())
    }

    /// Ids that end generation (generation_config, tokenizer_config's `eos_token`, config).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// One more than the largest id the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of the image placeholder token.
    pub fn image_token_id(&self) -> u32 {
        self.image_token_id
    }

    /// The image placeholder token's text (e.g. "<image>").
    pub fn image_token(&self) -> &str {
        &self.image_token
    }

    /// Whether the model ships a chat template (otherwise LLaVA-1.5's format is used).
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The underlying tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Checks that the tokenizer fits a model with `model_vocab` embedding rows whose image
    /// token is `image_token_index`.
    pub fn check_vocab(
        &self,
        model_vocab: usize,
        image_token_index: u32,
    ) -> Result<(), ProcessingError> {
        if self.vocab_size > model_vocab {
            return Err(ProcessingError::VocabMismatch(format!(
                "the tokenizer has ids up to {} but the model's vocabulary has only {model_vocab} entries",
                self.vocab_size - 1
            )));
        }
        if self.image_token_id != image_token_index {
            return Err(ProcessingError::VocabMismatch(format!(
                "the tokenizer's image token {} is id {} but the model expects id {image_token_index}",
                self.image_token, self.image_token_id
            )));
        }
        Ok(())
    }
}
