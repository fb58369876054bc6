//! The decoder side of a run, written once for every pipeline: [`TextModel`] (the LLaVA-style
//! decoder, or Qwen VL's with its M-RoPE positions) runs a prompt or the tokens after it, and
//! [`Decoding`] holds the recorder, the KV cache and the output while the decode loop samples,
//! streams and runs one token at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::{capture_mode, Capture, GenerateError, Progress, RunRequest, Sampler};
use crate::model::qwen_vl::MropePositions;
use crate::model::{AttentionRecorder, KvCache, Llava, QwenVl};
use crate::processing::PromptProcessor;
use crate::trace::Stage;

/// A decoder ready to run a sequence: LLaVA's (LLaVA-1.5 and anyres models), or Qwen VL's with
/// the M-RoPE positions of the sequence's prompt (later positions continue them).
pub enum TextModel<'a> {
    /// A LLaVA-style decoder.
    Llava(&'a Llava),
    /// A Qwen VL decoder and the positions of the prompt it runs.
    Qwen(&'a QwenVl, MropePositions),
}

impl TextModel<'_> {
    /// Runs positions `from..ids.len()` of the prompt `ids` after the `from` positions the
    /// cache holds: from 0 the image tokens take the rows of `features`; later only text runs.
    /// The logits of the last position.
    pub fn prefill(
        &self,
        ids: &[u32],
        from: usize,
        features: Option<&Tensor>,
        cache: &mut KvCache,
        recorder: &mut AttentionRecorder,
    ) -> candle_core::Result<Tensor> {
        let embeds = match (self, from) {
            (Self::Llava(m), 0) => m.embed(ids, features)?,
            (Self::Qwen(m, _), 0) => m.embed(ids, features)?,
            (Self::Llava(m), _) => m.embed_text(&ids[from..])?,
            (Self::Qwen(m, _), _) => m.embed_text(&ids[from..])?,
        };
        self.forward(&embeds, from, cache, recorder)
    }

    /// Runs one generated token after what the cache holds; the logits of the next one.
    pub fn step(
        &self,
        id: u32,
        cache: &mut KvCache,
        recorder: &mut AttentionRecorder,
    ) -> candle_core::Result<Tensor> {
        let embeds = match self {
            Self::Llava(m) => m.embed_text(&[id])?,
            Self::Qwen(m, _) => m.embed_text(&[id])?,
        };
        let offset = cache.len();
        self.forward(&embeds, offset, cache, recorder)
    }

    /// The device the decoder runs on.
    fn device(&self) -> &Device {
        match self {
            Self::Llava(m) => m.device(),
            Self::Qwen(m, _) => m.device(),
        }
    }

    fn forward(
        &self,
        embeds: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        recorder: &mut AttentionRecorder,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Llava(m) => m.forward(embeds, offset, cache, recorder, false),
            Self::Qwen(m, pos) => m.forward(embeds, offset, pos, cache, recorder, false),
        }
    }
}

/// The state of one generation: recorder, cache, output so far, timings, and the image
/// features of the prefill (kept for a conversation's later turns).
pub struct Decoding {
    /// What the attention hooks recorded.
    pub recorder: AttentionRecorder,
    /// Keys and values of every position run so far.
    pub cache: KvCache,
    /// The answer's ids so far.
    pub output: Vec<u32>,
    /// Stage timings of the run.
    pub timings: BTreeMap<String, f64>,
    /// The image features, once the image was encoded.
    pub features: Option<Tensor>,
}

impl Decoding {
    /// An empty state for a decoder of `num_layers` layers recording what `capture` asks for.
    pub fn new(num_layers: usize, capture: Capture) -> Self {
        Self {
            recorder: AttentionRecorder::new(capture_mode(capture, num_layers)),
            cache: KvCache::new(num_layers),
            output: Vec::new(),
            timings: BTreeMap::new(),
            features: None,
        }
    }

    /// Runs the prompt `ids` with `text` after the first `from` positions the cache holds
    /// (the image features kept in `self`), timed as the "prefill" stage and counted as
    /// `prefill_positions`; returns the logits of the last position.
    pub fn prefill_with(
        &mut self,
        text: &TextModel<'_>,
        ids: &[u32],
        from: usize,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<Tensor, GenerateError> {
        let new = ids.len().saturating_sub(from);
        let stage = if from == 0 {
            "prefill".to_string()
        } else {
            format!("prefill: {new} new positions, {from} from the cache")
        };
        on_progress(Progress::Stage(stage));
        let clock = Instant::now();
        let span = tracing::info_span!("prefill", positions = new, cached = from);
        let stage = Stage::new(span, text.device());
        let logits = text.prefill(
            ids,
            from,
            self.features.as_ref(),
            &mut self.cache,
            &mut self.recorder,
        )?;
        // Closed first: with LVLMSCOPE_LOG_SYNC=1 the timing then also covers the work.
        drop(stage);
        self.timings
            .insert("prefill".into(), clock.elapsed().as_secs_f64());
        self.timings.insert("prefill_positions".into(), new as f64);
        Ok(logits)
    }

    /// Picks a token, streams it, runs it; until an end token or the token budget. A generated
    /// image-token id is embedded as an ordinary token (as transformers does).
    pub fn decode(
        &mut self,
        text: &TextModel<'_>,
        mut logits: Tensor,
        prompts: &PromptProcessor,
        request: &RunRequest,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<(), GenerateError> {
        on_progress(Progress::Stage("decoding".into()));
        let clock = Instant::now();
        let stage = Stage::new(
            tracing::info_span!("decode", tokens = tracing::field::Empty),
            text.device(),
        );
        let mut sampler = Sampler::new(request.temperature, request.top_p, request.seed);
        let eos = prompts.eos_token_ids().to_vec();
        let mut shown = String::new();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(GenerateError::Cancelled);
            }
            let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            let id = sampler.sample(&row);
            self.output.push(id);
            let text_so_far = prompts.decode(&self.output);
            let piece = text_so_far
                .strip_prefix(shown.as_str())
                .unwrap_or(&text_so_far)
                .to_string();
            shown = text_so_far;
            on_progress(Progress::Token {
                index: self.output.len() - 1,
                id,
                text: piece,
            });
            on_progress(Progress::Fraction(
                self.output.len() as f64 / request.max_new_tokens as f64,
            ));
            if eos.contains(&id) || self.output.len() >= request.max_new_tokens {
                break;
            }
            let span = tracing::debug_span!("decode_step", token = self.output.len());
            let _step = Stage::new(span, text.device());
            logits = text.step(id, &mut self.cache, &mut self.recorder)?;
        }
        stage.span().record("tokens", self.output.len());
        drop(stage);
        let seconds = clock.elapsed().as_secs_f64();
        self.timings.insert("decode".into(), seconds);
        self.timings.insert(
            "tokens_per_second".into(),
            self.output.len() as f64 / seconds.max(1e-9),
        );
        Ok(())
    }
}
