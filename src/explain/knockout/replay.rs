//! Re-running the positions `0..=q_t` of answer token t (`input_ids + output_ids[..t]`) through
//! the decoder with a tape at its hook point, for every pipeline: a [`Replayer`] gives the
//! embeddings of those positions (the image features rebuilt as the pipeline builds them) and
//! their rotary tables; the decoder's one forward does the rest, so a knockout or a lens needs
//! no copy of any forward.
//!
//! LLaVA-style models re-read the session's pixel values; Qwen2-VL / Qwen2.5-VL cut the
//! session's picture into patches again and use M-RoPE positions; LLaVA-NeXT / OneVision re-run
//! the anyres processor on the session's original image (`crate::generate::replay`).

use candle_core::{Device, Tensor};

use super::KnockoutError;
use crate::explain::relevancy::{self, RelevancyMaps};
use crate::model::decoder::Decoder;
use crate::model::tape::Tape;
use crate::model::{KvCache, Llava, NoTape};
use crate::session::Session;

/// The decoder input of one answer token's positions.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Embeddings `[1, n, hidden]` of positions `0..n` (already scaled as the decoder takes
    /// them).
    pub embeds: Tensor,
    /// RoPE tables `cos`, `sin` `[n, head_dim / 2]` when the positions are not `0..n` (M-RoPE);
    /// `None`: the decoder's own.
    pub rope: Option<(Tensor, Tensor)>,
}

impl Replay {
    /// Number of positions.
    pub fn len(&self) -> usize {
        self.embeds.dims().get(1).copied().unwrap_or(0)
    }

    /// Whether there is no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last layer's output `[1, n, hidden]` of one forward from position 0 with `tape`.
    pub fn hidden_states(
        &self,
        decoder: &Decoder,
        tape: &mut dyn Tape,
    ) -> Result<Tensor, KnockoutError> {
        let mut cache = KvCache::new(decoder.layers().len());
        Ok(match &self.rope {
            Some((cos, sin)) => {
                decoder.hidden_states_with_rope(&self.embeds, 0, (cos, sin), &mut cache, tape)?
            }
            None => decoder.hidden_states(&self.embeds, 0, &mut cache, tape)?,
        })
    }

    /// f32 logits `[vocab]` of the last position with `tape`.
    pub fn last_logits(
        &self,
        decoder: &Decoder,
        tape: &mut dyn Tape,
    ) -> Result<Vec<f32>, KnockoutError> {
        let xs = self.hidden_states(decoder, tape)?;
        let n = xs.dim(1)?;
        Ok(decoder
            .logits(&xs.narrow(1, n - 1, 1)?)?
            .flatten_all()?
            .to_vec1()?)
    }
}

/// A model that can rebuild a session's positions for the decoder: what knockouts and the
/// logit lens run on.
pub trait Replayer {
    /// The decoder (layers, final norm, output head).
    fn decoder(&self) -> &Decoder;

    /// The decoder input of positions `0..=q_t` of answer token `t` of `s`.
    fn replay(&self, s: &Session, t: usize) -> Result<Replay, KnockoutError>;

    /// Relevancy rows of output tokens `todo` of `s` in the session's layout (what a key set
    /// of a relevancy map needs).
    fn relevancy(&self, s: &Session, todo: &[usize]) -> Result<RelevancyMaps, KnockoutError>;

    /// Number of decoder layers.
    fn num_layers(&self) -> usize {
        self.decoder().layers().len()
    }
}

/// The ids of positions `0..=q_t` of answer token `t` and the prompt's length.
pub fn sequence_ids(s: &Session, t: usize) -> Result<(Vec<u32>, usize), KnockoutError> {
    let to_u32 = |ids: &[i64]| -> Result<Vec<u32>, KnockoutError> {
        ids.iter()
            .map(|&i| u32::try_from(i).map_err(|_| KnockoutError::Session(format!("token id {i}"))))
            .collect()
    };
    let end = t.min(s.output_ids.len());
    let mut ids = to_u32(&s.input_ids)?;
    let n_input = ids.len();
    ids.extend(to_u32(&s.output_ids[..end])?);
    Ok((ids, n_input))
}

impl Replayer for Llava {
    fn decoder(&self) -> &Decoder {
        Llava::decoder(self)
    }

    fn replay(&self, s: &Session, t: usize) -> Result<Replay, KnockoutError> {
        let (ids, n_input) = sequence_ids(s, t)?;
        let px = &s.pixel_values;
        if px.shape.len() != 3 || px.shape[0] != 3 {
            return Err(KnockoutError::Session(format!(
                "pixel values of shape {:?}, expected [3, h, w]",
                px.shape
            )));
        }
        let pixels = Tensor::from_vec(px.data.clone(), px.shape.as_slice(), &Device::Cpu)?;
        let features = self.image_features(&pixels, &mut NoTape)?;
        Ok(Replay {
            embeds: self.embed_sequence(&ids, n_input, Some(&features))?,
            rope: None,
        })
    }

    fn relevancy(&self, s: &Session, todo: &[usize]) -> Result<RelevancyMaps, KnockoutError> {
        Ok(relevancy::relevancy(self, s, todo, &mut |_| {})?)
    }
}
