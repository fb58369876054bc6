//! Conversations on the LLaVA path: follow-up questions on the same image, continuing from the
//! KV cache when the chat template's rendering of the conversation extends what was already run
//! (docs/design.md, "Conversations").
//!
//! Turn k's input is the conversation rendered through the chat template with every earlier
//! answer included and the generation prompt (as transformers' `apply_chat_template`), the image
//! expanded. The cache holds the last turn's input and its answer but the last token (which was
//! sampled, never run); when the new ids start with exactly those ids, only the rest runs; when
//! the template spells the earlier turns differently (a re-tokenised boundary, an end token it
//! drops), the new ids run from position 0 with the image features kept from the first turn.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::{
    prepare, validate, Capture, Decoding, GenerateError, LoadedModel, Prepared, Progress,
    RunRequest,
};
use crate::session::{Session, TurnInfo};

/// A conversation in progress: the model's state after the last turn and the session so far.
pub struct Conversation<'m> {
    loaded: &'m LoadedModel,
    original_size: [u32; 2],
    request: RunRequest,
    prepared: Prepared,
    run: Decoding<'m>,
    history: Vec<(String, String)>,
    session: Session,
}

/// Length of the common prefix of two id lists.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Where the next turn's own text starts and where the earlier answers lie in its input, when
/// its input agrees with the previous turn's `input ++ answer` on the first `common` positions:
/// the previous turn's `earlier_answers` that lie inside that prefix, plus the part of its
/// answer (`[prev_input, prev_input + prev_answer)`) inside it; the question starts at `common`.
pub fn follow_up_spans(
    prev_earlier: &[[usize; 2]],
    prev_input: usize,
    prev_answer: usize,
    common: usize,
) -> (usize, Vec<[usize; 2]>) {
    let mut answers: Vec<[usize; 2]> = prev_earlier
        .iter()
        .copied()
        .filter(|&[s, l]| s + l <= common)
        .collect();
    let end = common.min(prev_input + prev_answer);
    if end > prev_input {
        answers.push([prev_input, end - prev_input]);
    }
    (common, answers)
}

/// Refuses, before anything runs, a scripted conversation whose questions alone (every answer
/// taken as empty) and `max_new_tokens` already pass the model's context.
pub fn check_questions(
    loaded: &LoadedModel,
    prompts: &[String],
    max_new_tokens: usize,
) -> Result<(), GenerateError> {
    let Some((last, earlier)) = prompts.split_last() else {
        return Ok(());
    };
    let history: Vec<(String, String)> =
        earlier.iter().map(|q| (q.clone(), String::new())).collect();
    let model = &loaded.model;
    let encoded = loaded
        .prompts
        .encode_conversation(&history, last, model.num_image_features())?;
    let context = model.config().text_config.max_position_embeddings;
    let n = encoded.ids.len();
    if n + max_new_tokens > context {
        return Err(GenerateError::ConversationTooLong {
            turns: prompts.len(),
            prompt: n,
            new: max_new_tokens,
            context,
        });
    }
    Ok(())
}

impl<'m> Conversation<'m> {
    /// Runs the first turn (`request.prompt` about `image`) as [`super::generate`] does and
    /// keeps the model's state for follow-ups.
    pub fn start(
        loaded: &'m LoadedModel,
        image: image::DynamicImage,
        request: &RunRequest,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<Self, GenerateError> {
        validate(request)?;
        let capture = if request.causal {
            Capture::Full
        } else {
            request.capture
        };
        let prepared = prepare(loaded, &image, request)?;
        let mut run = Decoding::new(&loaded.model, capture);
        let logits = run.prefill(&prepared, on_progress)?;
        run.decode(logits, &loaded.prompts, request, cancel, on_progress)?;
        let original_size = [image.width(), image.height()];
        let session = run.session(&prepared, loaded, original_size, request)?;
        let answer = loaded.prompts.decode(&run.output);
        Ok(Self {
            loaded,
            original_size,
            request: request.clone(),
            prepared,
            run,
            history: vec![(request.prompt.trim().to_string(), answer)],
            session,
        })
    }

    /// Continues `session` (a conversation, or one question, made by `loaded`'s model) with
    /// `loaded`: the image features are computed again from the session's pixel values and the
    /// KV cache starts empty, so the next turn runs afresh. `max_new_tokens` bounds the next
    /// answers; the sampling settings are the session's.
    pub fn resume(
        loaded: &'m LoadedModel,
        session: Session,
        max_new_tokens: usize,
    ) -> Result<Self, GenerateError> {
        let m = &session.manifest;
        let image_mode = m.image.mode.parse().map_err(GenerateError::Processing)?;
        let request = RunRequest {
            model: m.model.path.clone(),
            image: m.image.path.clone().into(),
            prompt: m.prompt.clone(),
            image_mode,
            max_new_tokens,
            temperature: m.generation.temperature,
            top_p: m.generation.top_p,
            seed: m.generation.seed,
            capture: Capture::Full,
            ..RunRequest::default()
        };
        validate(&request)?;
        let mut history = Vec::with_capacity(session.num_turns());
        for k in 0..session.num_turns() {
            let turn = session
                .turn(k)
                .ok_or_else(|| GenerateError::Setting("the session's turns do not match".into()))?;
            let ids: Vec<u32> = turn.output_ids.iter().map(|&i| i as u32).collect();
            history.push((
                turn.manifest.prompt.trim().to_string(),
                loaded.prompts.decode(&ids),
            ));
        }
        let shape = &session.pixel_values.shape;
        if shape.len() != 3 {
            return Err(GenerateError::Setting(
                "the session's pixel values are not one [3, h, w] image".into(),
            ));
        }
        let pixels = crate::processing::PixelValues {
            shape: [shape[0], shape[1], shape[2]],
            data: session.pixel_values.data.clone(),
        };
        let mut run = Decoding::new(&loaded.model, Capture::Full);
        let [c, h, w] = pixels.shape;
        let tensor = candle_core::Tensor::from_vec(
            pixels.data.clone(),
            (1, c, h, w),
            loaded.model.device(),
        )?;
        run.features = Some(loaded.model.image_features(&tensor, &mut run.recorder)?);
        let encoded = crate::processing::EncodedPrompt {
            ids: session.input_ids.iter().map(|&i| i as u32).collect(),
            tokens: session.manifest.tokens.input.clone(),
            image_span: session.manifest.image_span,
            text: String::new(),
        };
        Ok(Self {
            loaded,
            original_size: m.image.original_size,
            request,
            prepared: Prepared { pixels, encoded },
            run,
            history,
            session,
        })
    }

    /// The conversation so far: the last turn in the standard fields, the earlier ones as turns.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The conversation so far, the model's state dropped.
    pub fn into_session(self) -> Session {
        self.session
    }

    /// Input positions the follow-up `prompt` would have (the whole conversation rendered);
    /// errors in one sentence when it and the requested new tokens do not fit the model's
    /// context, before anything runs.
    pub fn check_follow_up(&self, prompt: &str) -> Result<usize, GenerateError> {
        Ok(self.encode_next(prompt)?.ids.len())
    }

    fn encode_next(&self, prompt: &str) -> Result<crate::processing::EncodedPrompt, GenerateError> {
        let model = &self.loaded.model;
        let encoded = self.loaded.prompts.encode_conversation(
            &self.history,
            prompt,
            model.num_image_features(),
        )?;
        let context = model.config().text_config.max_position_embeddings;
        let n = encoded.ids.len();
        if n + self.request.max_new_tokens > context {
            return Err(GenerateError::TooLong {
                prompt: n,
                new: self.request.max_new_tokens,
                context,
            });
        }
        Ok(encoded)
    }

    /// Asks `prompt` next: renders the whole conversation, continues from the KV cache when the
    /// new ids extend the cached ones exactly (else runs them afresh), decodes the answer
    /// (streamed to `on_progress`) and adds the turn. On an error the conversation is unchanged
    /// (a later turn runs afresh if the cache was touched).
    pub fn follow_up(
        &mut self,
        prompt: &str,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<&Session, GenerateError> {
        let encoded = self.encode_next(prompt)?;
        let model = &self.loaded.model;
        let previous: Vec<u32> = self
            .session
            .input_ids
            .iter()
            .chain(&self.session.output_ids)
            .map(|&i| i as u32)
            .collect();
        let cached = previous.len() - 1;
        let common = common_prefix(&encoded.ids, &previous);
        let reuse =
            self.run.cache.len() == cached && common >= cached && encoded.ids.len() > cached;
        self.run.output.clear();
        self.run.timings.clear();
        self.run.recorder.clear_rows();
        on_progress(Progress::Stage("prefill".into()));
        let clock = Instant::now();
        let logits = if reuse {
            let embeds = model.embed_text(&encoded.ids[cached..])?;
            model.forward(
                &embeds,
                cached,
                &mut self.run.cache,
                &mut self.run.recorder,
                false,
            )?
        } else {
            self.run.cache.clear();
            self.run.recorder.clear_text();
            let embeds = model.embed(&encoded.ids, self.run.features.as_ref())?;
            model.forward(
                &embeds,
                0,
                &mut self.run.cache,
                &mut self.run.recorder,
                false,
            )?
        };
        self.run
            .timings
            .insert("prefill".into(), clock.elapsed().as_secs_f64());
        let request = RunRequest {
            prompt: prompt.trim().to_string(),
            ..self.request.clone()
        };
        self.run
            .decode(logits, &self.loaded.prompts, &request, cancel, on_progress)?;
        let prepared = Prepared {
            pixels: self.prepared.pixels.clone(),
            encoded,
        };
        let next = self
            .run
            .session(&prepared, self.loaded, self.original_size, &request)?;
        let prev_earlier = self
            .session
            .current_turn()
            .map(|t| t.earlier_answers.clone())
            .unwrap_or_default();
        let (question_start, earlier_answers) = follow_up_spans(
            &prev_earlier,
            self.session.num_input(),
            self.session.num_output(),
            common,
        );
        let info = TurnInfo {
            prompt: request.prompt.clone(),
            input_len: next.num_input(),
            answer_len: next.num_output(),
            question_start,
            earlier_answers,
            reused: if reuse { cached } else { 0 },
            tokens: None,
        };
        let answer = self.loaded.prompts.decode(&self.run.output);
        self.prepared = prepared;
        self.session.push_turn(next, info);
        self.history.push((request.prompt, answer));
        Ok(&self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_the_common_prefix() {
        // previous turn: 10 input positions, 4 answer tokens; the new ids agree on 13 (the
        // answer's end token is not in the re-rendered conversation)
        let (q, answers) = follow_up_spans(&[], 10, 4, 13);
        assert_eq!(q, 13);
        assert_eq!(answers, vec![[10, 3]]);
        // a third turn keeps the first answer and adds the second
        let (q, answers) = follow_up_spans(&[[10, 3]], 20, 5, 25);
        assert_eq!((q, answers), (25, vec![[10, 3], [20, 5]]));
        // a template that re-spells the first answer keeps neither past the divergence
        let (q, answers) = follow_up_spans(&[[10, 3]], 20, 5, 11);
        assert_eq!((q, answers), (11, vec![]));
    }

    #[test]
    fn common_prefix_counts_equal_leading_ids() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
    }
}
