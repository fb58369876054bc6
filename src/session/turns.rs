//! Conversations: a session of several turns (docs/design.md, "Conversations").
//!
//! A conversation is one image and a list of turns; turn k's input is the whole conversation up
//! to and including its question (rendered through the chat template, the earlier answers
//! included), its output the answer. The session's standard fields are the LAST turn, an
//! ordinary single-turn session; the earlier turns keep their own ids and attention rows in
//! [`Turn`]s, and [`Session::turn`] gives any turn as an ordinary single-turn session, so every
//! explanation and view works on it unchanged.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Array, CausalResults, Session, TokenStrings};
use crate::explain::lens::Lens;

/// One turn of a conversation as the manifest lists it (`turns`, in order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnInfo {
    /// The user's question of this turn, before the chat template.
    pub prompt: String,
    /// Input positions of this turn (N_k): the conversation up to and including its question.
    pub input_len: usize,
    /// Answer tokens of this turn (T_k).
    pub answer_len: usize,
    /// Where this turn's own text starts in its input: before it lie the earlier turns (and the
    /// image), from it on the template's turn markers and this turn's question.
    pub question_start: usize,
    /// `[start, len]` of the earlier answers inside this turn's input, ascending.
    #[serde(default)]
    pub earlier_answers: Vec<[usize; 2]>,
    /// Input positions taken over from the KV cache of the turn before (0: a fresh prefill).
    #[serde(default)]
    pub reused: usize,
    /// Token strings of an earlier turn; `None` for the last turn, whose strings are the
    /// manifest's `tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenStrings>,
    /// An earlier turn's answer tokens whose relevancy rows `turn.{k}.relevancy.*` hold (the
    /// last turn's are the manifest's `relevancy_tokens`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relevancy_tokens: Vec<usize>,
    /// An earlier turn's causal results (the last turn's are the manifest's `causal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causal: Option<CausalResults>,
    /// An earlier turn's logit-lens readings (the last turn's are the manifest's `lens`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lens: Vec<Lens>,
}

/// The tensors of an earlier turn (every turn but the last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    /// The turn's input ids (N_k), the image expanded.
    pub input_ids: Vec<i64>,
    /// The turn's answer ids (T_k).
    pub output_ids: Vec<i64>,
    /// `[T_k, L, H, N_k + T_k − 1]`: the answer's attention rows, as `attn.gen`.
    pub attn_gen: Option<Array>,
    /// `[T_k, N_k + T_k − 1]`: decoder relevancy rows, as `relevancy.llm`.
    pub relevancy_llm: Option<Array>,
    /// `[T_k, P]`: vision-tower relevancy, as `relevancy.vit`.
    pub relevancy_vit: Option<Array>,
    /// `[T_k, P]`: decoder relevancy through the vision tower, as `relevancy.combined`.
    pub relevancy_combined: Option<Array>,
}

impl TurnInfo {
    /// The info of a single-question run: the whole input is its question.
    pub fn single(prompt: &str, input_len: usize, answer_len: usize) -> Self {
        Self {
            prompt: prompt.to_string(),
            input_len,
            answer_len,
            question_start: 0,
            earlier_answers: Vec::new(),
            ..Self::default()
        }
    }

    /// Whether the entry carries explanations of its own (only an earlier turn's may).
    fn has_results(&self) -> bool {
        !self.relevancy_tokens.is_empty() || self.causal.is_some() || !self.lens.is_empty()
    }
}

impl Session {
    /// Number of turns: the manifest's list, or 1 for a session without one (schema 1 and
    /// single-question schema 2 files).
    pub fn num_turns(&self) -> usize {
        self.manifest.turns.len().max(1)
    }

    /// The manifest's entry of the last turn (the one the standard fields hold), when the
    /// session lists turns.
    pub fn current_turn(&self) -> Option<&TurnInfo> {
        self.manifest.turns.last()
    }

    /// Turn `k` (0-based) as an ordinary single-turn session whose history is turns `..k`: the
    /// last turn is the session itself; an earlier one is built from its [`Turn`] and manifest
    /// entry (the image, the model and the settings shared; the turn's own saved relevancy,
    /// causal and lens results, not the last turn's). `None` when `k` is out of range.
    pub fn turn(&self, k: usize) -> Option<Cow<'_, Session>> {
        let last = self.num_turns() - 1;
        if k == last {
            return Some(Cow::Borrowed(self));
        }
        let data = self.turns.get(k)?;
        let info = self.manifest.turns.get(k)?;
        let mut manifest = self.manifest.clone();
        manifest.prompt = info.prompt.clone();
        manifest.tokens = info.tokens.clone().unwrap_or_default();
        manifest.turns = self.manifest.turns[..=k].to_vec();
        if let Some(own) = manifest.turns.last_mut() {
            own.tokens = None;
            own.relevancy_tokens.clear();
            own.causal = None;
            own.lens.clear();
        }
        manifest.relevancy_tokens = info.relevancy_tokens.clone();
        manifest.causal = info.causal.clone();
        manifest.lens = info.lens.clone();
        Some(Cow::Owned(Session {
            manifest,
            input_ids: data.input_ids.clone(),
            output_ids: data.output_ids.clone(),
            pixel_values: self.pixel_values.clone(),
            attn_gen: data.attn_gen.clone(),
            attn_full: Default::default(),
            attn_vit: self.attn_vit.clone(),
            relevancy_llm: data.relevancy_llm.clone(),
            relevancy_vit: data.relevancy_vit.clone(),
            relevancy_combined: data.relevancy_combined.clone(),
            turns: self.turns[..k].to_vec(),
        }))
    }

    /// Stores the explanations of `turn`, turn `k` (0-based) of this conversation as
    /// [`Session::turn`] gives it, with what was computed on it since: relevancy rows, causal
    /// and lens results. On the last turn they are the session's own fields; on an earlier
    /// one they go to its `turn.{k}.*` tensors and manifest entry. `false` (nothing stored)
    /// when `turn` is not that turn (other ids or out of range).
    pub fn set_turn_results(&mut self, k: usize, turn: &Session) -> bool {
        let last = self.num_turns() - 1;
        if k == last {
            if (&turn.input_ids, &turn.output_ids) != (&self.input_ids, &self.output_ids) {
                return false;
            }
            self.relevancy_llm = turn.relevancy_llm.clone();
            self.relevancy_vit = turn.relevancy_vit.clone();
            self.relevancy_combined = turn.relevancy_combined.clone();
            self.manifest.relevancy_tokens = turn.manifest.relevancy_tokens.clone();
            self.manifest.causal = turn.manifest.causal.clone();
            self.manifest.lens = turn.manifest.lens.clone();
            return true;
        }
        let (Some(data), Some(info)) = (self.turns.get_mut(k), self.manifest.turns.get_mut(k))
        else {
            return false;
        };
        if (&turn.input_ids, &turn.output_ids) != (&data.input_ids, &data.output_ids) {
            return false;
        }
        data.relevancy_llm = turn.relevancy_llm.clone();
        data.relevancy_vit = turn.relevancy_vit.clone();
        data.relevancy_combined = turn.relevancy_combined.clone();
        info.relevancy_tokens = turn.manifest.relevancy_tokens.clone();
        info.causal = turn.manifest.causal.clone();
        info.lens = turn.manifest.lens.clone();
        true
    }

    /// Appends `next` (a single-turn session of the same image, whose input continues this
    /// conversation) as a new last turn: this session's last turn becomes an earlier one (its
    /// ids and attention rows; the explanations computed on it are dropped, as the app keeps
    /// them in `App::kept` and stores them with [`Session::set_turn_results`] on save).
    /// `info` describes `next`'s turn.
    pub fn push_turn(&mut self, mut next: Session, info: TurnInfo) {
        let mut infos = std::mem::take(&mut self.manifest.turns);
        if infos.is_empty() {
            infos.push(TurnInfo::single(
                &self.manifest.prompt,
                self.num_input(),
                self.num_output(),
            ));
        }
        if let Some(prev) = infos.last_mut() {
            prev.tokens = Some(self.manifest.tokens.clone());
        }
        infos.push(info);
        let mut turns = std::mem::take(&mut self.turns);
        turns.push(Turn {
            input_ids: std::mem::take(&mut self.input_ids),
            output_ids: std::mem::take(&mut self.output_ids),
            attn_gen: self.attn_gen.take(),
            ..Turn::default()
        });
        next.manifest.turns = infos;
        next.turns = turns;
        *self = next;
    }
}

/// Checks the turn list of a loaded session against its tensors; one sentence on failure.
/// Each earlier turn is then checked as an ordinary session by the caller.
pub(super) fn check_turns(s: &Session) -> Result<(), String> {
    let infos = &s.manifest.turns;
    if infos.is_empty() {
        if !s.turns.is_empty() {
            return Err(format!(
                "it holds tensors of {} earlier turns but its manifest lists no turns",
                s.turns.len()
            ));
        }
        return Ok(());
    }
    if s.turns.len() + 1 != infos.len() {
        return Err(format!(
            "its manifest lists {} turns but it holds tensors of {} earlier turns",
            infos.len(),
            s.turns.len()
        ));
    }
    for (k, info) in infos.iter().enumerate() {
        let last = k + 1 == infos.len();
        let (n, t) = if last {
            (s.num_input(), s.num_output())
        } else {
            (s.turns[k].input_ids.len(), s.turns[k].output_ids.len())
        };
        let turn = k + 1;
        if info.input_len != n || info.answer_len != t {
            return Err(format!(
                "turn {turn} claims {} input and {} answer tokens, but its ids are {n} and {t}",
                info.input_len, info.answer_len
            ));
        }
        if last == info.tokens.is_some() {
            return Err(format!(
                "turn {turn}'s token strings are {}",
                if last { "given twice" } else { "missing" }
            ));
        }
        if last && info.has_results() {
            return Err(format!(
                "turn {turn}'s entry holds explanations, but the last turn's are the manifest's own"
            ));
        }
        if info.reused > n {
            return Err(format!(
                "turn {turn} claims {} positions from the cache, past its {n} input positions",
                info.reused
            ));
        }
        if info.question_start > n {
            return Err(format!(
                "turn {turn}'s question starts at {}, past its {n} input positions",
                info.question_start
            ));
        }
        let mut end = 0;
        for &[start, len] in &info.earlier_answers {
            if start < end
                || start
                    .checked_add(len)
                    .is_none_or(|e| e > info.question_start)
            {
                return Err(format!(
                    "turn {turn}'s earlier answer [{start}, {len}] is out of order or past its question"
                ));
            }
            end = start + len;
        }
    }
    Ok(())
}
