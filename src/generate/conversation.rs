//! Conversations on every pipeline: follow-up questions on the same image, continuing from the
//! KV cache (docs/design.md, "Conversations (turns)").
//!
//! Turn k's input is the conversation rendered through the chat template with every earlier
//! answer included and the generation prompt (as transformers' `apply_chat_template`), the image
//! expanded. The cache holds the last turn's input and its answer but the last token (which was
//! sampled, never run); the positions the new ids share with those keep their keys and values
//! (a position's depend on the positions up to it only) and the rest runs: only the new question
//! when the template spells the conversation so far as it ran, more from where it spells an
//! earlier turn differently (a re-tokenised boundary, an end token it drops). Nothing shared
//! (a resumed conversation): the new ids run from position 0 with the image features kept.

use std::ops::Deref;
use std::sync::atomic::AtomicBool;

use super::pipeline::{check_context, encode_image, Seen, Talker};
use super::{validate, Capture, Decoding, GenerateError, Progress, RunRequest};
use crate::processing::EncodedPrompt;
use crate::session::{Session, TurnInfo};

/// A conversation in progress on a model of any pipeline (held as `M`: a reference, or an
/// `Arc` a long-lived worker keeps): the model's state after the last turn (KV cache, image
/// features, recorder) and the session so far.
pub struct Conversation<M> {
    model: M,
    seen: Seen,
    request: RunRequest,
    run: Decoding,
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

/// Refuses, before anything runs, a scripted conversation on `image` whose questions alone
/// (every answer taken as empty) and `max_new_tokens` already pass the model's context.
pub fn check_questions(
    model: &(impl Talker + ?Sized),
    image: &image::DynamicImage,
    request: &RunRequest,
    prompts: &[String],
) -> Result<(), GenerateError> {
    let Some((last, earlier)) = prompts.split_last() else {
        return Ok(());
    };
    let model = model.pipeline();
    let history: Vec<(String, String)> =
        earlier.iter().map(|q| (q.clone(), String::new())).collect();
    let tokens = model.image_tokens(image, request)?;
    let encoded = model
        .prompts()
        .encode_conversation(&history, last, tokens)?;
    let context = model.context();
    let n = encoded.ids.len();
    if n + request.max_new_tokens > context {
        return Err(GenerateError::ConversationTooLong {
            turns: prompts.len(),
            prompt: n,
            new: request.max_new_tokens,
            context,
        });
    }
    Ok(())
}

/// The ids of the last turn of `session`: its input, then its answer.
fn turn_ids(session: &Session) -> Vec<u32> {
    session
        .input_ids
        .iter()
        .chain(&session.output_ids)
        .map(|&i| i as u32)
        .collect()
}

impl<M> Conversation<M>
where
    M: Deref,
    M::Target: Talker,
{
    /// Runs the first turn (`request.prompt` about `image`) and keeps the model's state for
    /// follow-ups; its session is what a one-question run gives.
    pub fn start(
        model: M,
        image: &image::DynamicImage,
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
        let p = model.pipeline();
        let mut run = Decoding::new(p.num_layers(), capture);
        let (seen, encoded) = p.see(image, request, &mut run, on_progress)?;
        let text = p.text(&seen, &encoded.ids)?;
        let logits = run.prefill_with(&text, &encoded.ids, 0, on_progress)?;
        run.decode(&text, logits, p.prompts(), request, cancel, on_progress)?;
        let session = seen.session(p, request, encoded, &run);
        let answer = p.prompts().decode(&run.output);
        Ok(Self {
            model,
            seen,
            request: request.clone(),
            run,
            history: vec![(request.prompt.trim().to_string(), answer)],
            session,
        })
    }

    /// Continues `session` (a conversation, or one question, made by this model) with `model`:
    /// nothing runs until the next turn, which (once its input is checked against the context)
    /// computes the image features again from the session's picture (a LLaVA-NeXT / OneVision
    /// model re-reads the original image) and runs afresh, the KV cache being empty.
    /// `max_new_tokens` bounds the next answers; the sampling settings are the session's.
    pub fn resume(
        model: M,
        session: Session,
        max_new_tokens: usize,
    ) -> Result<Self, GenerateError> {
        let m = &session.manifest;
        let (dtype, device) = super::recorded_settings(&m.generation);
        let image_mode = match m.image.mode.as_str() {
            "native" | "anyres" => Default::default(),
            mode => mode.parse().map_err(GenerateError::Processing)?,
        };
        let request = RunRequest {
            model: m.model.path.clone(),
            image: m.image.path.clone().into(),
            prompt: m.prompt.clone(),
            image_mode,
            max_new_tokens,
            temperature: m.generation.temperature,
            top_p: m.generation.top_p,
            seed: m.generation.seed,
            dtype,
            device,
            capture: Capture::Full,
            ..RunRequest::default()
        };
        validate(&request)?;
        let p = model.pipeline();
        let mut history = Vec::with_capacity(session.num_turns());
        for k in 0..session.num_turns() {
            let turn = session
                .turn(k)
                .ok_or_else(|| GenerateError::Setting("the session's turns do not match".into()))?;
            let ids: Vec<u32> = turn.output_ids.iter().map(|&i| i as u32).collect();
            history.push((
                turn.manifest.prompt.trim().to_string(),
                p.prompts().decode(&ids),
            ));
        }
        let run = Decoding::new(p.num_layers(), Capture::Full);
        let seen = p.see_session(&session)?;
        Ok(Self {
            model,
            seen,
            request,
            run,
            history,
            session,
        })
    }

    /// The conversation with later turns recording that the model runs in `dtype` on `device`
    /// (a resumed one records the session's own, or f32 on the CPU).
    pub fn running_on(
        mut self,
        dtype: candle_core::DType,
        device: crate::model::DeviceName,
    ) -> Self {
        self.request.dtype = dtype;
        self.request.device = device;
        self
    }

    /// The conversation so far: the last turn in the standard fields, the earlier ones as turns.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The conversation so far, the model's state dropped.
    pub fn into_session(self) -> Session {
        self.session
    }

    /// Whether `session` is this conversation (the same turns: questions, input and answer
    /// ids, and the same picture), whatever explanations were added to it since.
    pub fn continues(&self, session: &Session) -> bool {
        let (a, b) = (&self.session, session);
        a.num_turns() == b.num_turns()
            && a.pixel_values == b.pixel_values
            && a.manifest.model.path == b.manifest.model.path
            && (0..a.num_turns()).all(|k| match (a.turn(k), b.turn(k)) {
                (Some(x), Some(y)) => {
                    x.input_ids == y.input_ids
                        && x.output_ids == y.output_ids
                        && x.manifest.prompt.trim() == y.manifest.prompt.trim()
                }
                _ => false,
            })
    }

    /// Takes `session` as the conversation so far when it [`continues`](Self::continues) this
    /// one (the explanations added to it kept for the next turn); returns whether it did.
    pub fn adopt(&mut self, session: Session) -> bool {
        if !self.continues(&session) {
            return false;
        }
        self.session = session;
        true
    }

    /// Positions the KV cache holds.
    pub fn cached(&self) -> usize {
        self.run.cache.len()
    }

    /// Input positions the follow-up `prompt` would have (the whole conversation rendered);
    /// errors in one sentence when it and the requested new tokens do not fit the model's
    /// context, before anything runs.
    pub fn check_follow_up(&self, prompt: &str) -> Result<usize, GenerateError> {
        Ok(self.encode_next(prompt)?.ids.len())
    }

    fn encode_next(&self, prompt: &str) -> Result<EncodedPrompt, GenerateError> {
        let p = self.model.pipeline();
        let encoded = p
            .prompts()
            .encode_conversation(&self.history, prompt, self.seen.tokens)?;
        check_context(encoded.ids.len(), self.request.max_new_tokens, p.context())?;
        if encoded.image_span != self.seen.image_span {
            return Err(GenerateError::Setting(format!(
                "the chat template puts the image at positions {:?} in the follow-up but {:?} \
                 in the first turn",
                encoded.image_span, self.seen.image_span
            )));
        }
        Ok(encoded)
    }

    /// Asks `prompt` next: renders the whole conversation, keeps the longest prefix of the new
    /// ids the KV cache holds (all of it when the template spells the conversation so far as it
    /// ran; up to where it re-spells an earlier answer otherwise) and runs only the rest,
    /// decodes the answer (streamed to `on_progress`) and adds the turn. On an error (a cancel
    /// included) the conversation is unchanged and the cache is cut back to the kept prefix.
    pub fn follow_up(
        &mut self,
        prompt: &str,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<&Session, GenerateError> {
        let encoded = self.encode_next(prompt)?;
        // the cache holds a prefix of the last turn's input and answer (all but the answer's
        // last token, which was sampled and never run, unless a failed turn cut it back)
        let previous = turn_ids(&self.session);
        let common = common_prefix(&encoded.ids, &previous);
        let [start, len] = self.seen.image_span;
        let from = match common
            .min(self.run.cache.len())
            .min(encoded.ids.len().saturating_sub(1))
        {
            // a prefix that ends before the image's end runs afresh, the image with it
            kept if kept < start + len => 0,
            kept => kept,
        };
        let result = self.run_turn(prompt, encoded, from, cancel, on_progress);
        if result.is_err() {
            self.run.cache.truncate(from);
        }
        let (next, request) = result?;
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
            reused: from,
            ..TurnInfo::default()
        };
        let answer = self.model.pipeline().prompts().decode(&self.run.output);
        self.session.push_turn(next, info);
        self.history.push((request.prompt, answer));
        Ok(&self.session)
    }

    /// Runs one turn's prefill (after the first `from` positions the cache holds, or afresh
    /// with the image features kept when `from` is 0) and decoding; the turn's session and
    /// request.
    fn run_turn(
        &mut self,
        prompt: &str,
        encoded: EncodedPrompt,
        from: usize,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<(Session, RunRequest), GenerateError> {
        let p = self.model.pipeline();
        let text = p.text(&self.seen, &encoded.ids)?;
        self.run.output.clear();
        self.run.timings.clear();
        if self.run.features.is_none() {
            let session = &self.session;
            encode_image(&mut self.run, on_progress, |recorder| {
                p.session_features(session, recorder)
            })?;
        }
        // the recorded rows of the last layer's full matrix from `from` on are recorded again
        self.run.cache.truncate(from);
        if from > 0 {
            self.run.recorder.clear_rows();
        } else {
            self.run.recorder.clear_text();
        }
        let logits = self
            .run
            .prefill_with(&text, &encoded.ids, from, on_progress)?;
        let request = RunRequest {
            prompt: prompt.trim().to_string(),
            ..self.request.clone()
        };
        self.run
            .decode(&text, logits, p.prompts(), &request, cancel, on_progress)?;
        let next = self.seen.session(p, &request, encoded, &self.run);
        Ok((next, request))
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
