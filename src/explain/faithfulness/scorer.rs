//! What the deletion experiments run on: a model that re-reads a run with modified pictures.

use candle_core::Tensor;

use crate::model::{AttentionRecorder, Llava};

/// A model that re-reads a run with modified pictures: all the deletion experiments need.
/// LLaVA models batch the pictures; Qwen VL models cut each into native-resolution patches
/// (the implementation for them lives with the job layer, `src/job/models.rs`).
pub trait PictureScorer {
    /// Logits of the token after `ids` (the prompt `ids[..n_input]`, whose image placeholders
    /// take the picture's features, then generated tokens), one row per picture. Each picture
    /// is `[3, h, w]` normalised planes of the session's picture size, flattened.
    fn next_token_logits(
        &self,
        ids: &[u32],
        n_input: usize,
        pictures: &[Vec<f32>],
        hw: (usize, usize),
    ) -> candle_core::Result<Vec<Vec<f32>>>;
}

impl PictureScorer for Llava {
    fn next_token_logits(
        &self,
        ids: &[u32],
        n_input: usize,
        pictures: &[Vec<f32>],
        (h, w): (usize, usize),
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let data: Vec<f32> = pictures.concat();
        let images = Tensor::from_vec(data, (pictures.len(), 3, h, w), self.device())?;
        let features = self.batch_image_features(&images)?;
        let embeds = (0..pictures.len())
            .map(|b| self.embed_sequence(ids, n_input, Some(&features.get(b)?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let embeds = Tensor::cat(&embeds, 0)?;
        let mut cache = self.new_cache();
        let mut rec = AttentionRecorder::off();
        let logits = self.forward(&embeds, 0, &mut cache, &mut rec, false)?;
        logits.squeeze(1)?.to_vec2()
    }
}
