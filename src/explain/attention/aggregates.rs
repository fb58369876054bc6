//! Per-token aggregates computed once per session, so views never rescan `attn.gen`.

use super::{attn_gen, patch_positions, question_range, AttentionError, Region};
use crate::session::{Array, Session};

/// Per output token, layer and head (`[T, L, H]` each): the mean attention to the image patches,
/// the mean attention to the question, and the share of attention on the whole image span.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAggregates {
    /// Mean attention over the grid's patches.
    pub image_mean: Array,
    /// Mean attention over the question positions (after the image, before the answer).
    pub question_mean: Array,
    /// Summed attention over the image span (CLS included).
    pub image_share: Array,
}

impl TokenAggregates {
    /// One pass over `attn.gen`.
    pub fn compute(s: &Session) -> Result<Self, AttentionError> {
        let a = attn_gen(s)?;
        let (t_len, layers, heads) = (a.shape[0], a.shape[1], a.shape[2]);
        let patches = patch_positions(s)?;
        let question = question_range(s);
        let span = s.image_range();
        let mut image_mean = Array::zeros(&[t_len, layers, heads]);
        let mut question_mean = Array::zeros(&[t_len, layers, heads]);
        let mut image_share = Array::zeros(&[t_len, layers, heads]);
        let s_len = a.shape[3];
        for (i, row) in a.data.chunks_exact(s_len.max(1)).enumerate() {
            let p: f32 = row[patches.clone()].iter().sum();
            image_mean.data[i] = p / patches.len().max(1) as f32;
            let q: f32 = row[question.clone()].iter().sum();
            question_mean.data[i] = q / question.len().max(1) as f32;
            image_share.data[i] = row[span.clone()].iter().sum();
        }
        Ok(Self {
            image_mean,
            question_mean,
            image_share,
        })
    }

    fn source(&self, region: Region) -> &Array {
        match region {
            Region::Image => &self.image_mean,
            Region::Question => &self.question_mean,
        }
    }

    /// The heads × layers grid (`[L, H]`) for `region`, averaged over `tokens`; tokens out of range
    /// are ignored, and no token gives zeros.
    pub fn heads_layers(&self, tokens: &[usize], region: Region) -> Array {
        let src = self.source(region);
        let (t_len, layers, heads) = (src.shape[0], src.shape[1], src.shape[2]);
        let mut out = Array::zeros(&[layers, heads]);
        let valid: Vec<usize> = tokens.iter().copied().filter(|&t| t < t_len).collect();
        for &t in &valid {
            let block = &src.data[t * layers * heads..(t + 1) * layers * heads];
            for (o, v) in out.data.iter_mut().zip(block) {
                *o += v / valid.len() as f32;
            }
        }
        out
    }

    /// Mean image attention of token `t`, layer `l`, head `h` (0 out of range).
    pub fn head_image_mean(&self, t: usize, l: usize, h: usize) -> f32 {
        let s = &self.image_mean.shape;
        if t < s[0] && l < s[1] && h < s[2] {
            self.image_mean.get(&[t, l, h])
        } else {
            0.0
        }
    }

    /// Share of attention on the image for token `t`: at layer `l` averaged over heads, or over
    /// every layer and head when `l` is `None` (0 out of range).
    pub fn image_share(&self, t: usize, l: Option<usize>) -> f32 {
        let s = &self.image_share.shape;
        let (layers, heads) = (s[1], s[2]);
        if t >= s[0] {
            return 0.0;
        }
        let block = &self.image_share.data[t * layers * heads..(t + 1) * layers * heads];
        match l {
            Some(l) if l < layers => {
                block[l * heads..(l + 1) * heads].iter().sum::<f32>() / heads as f32
            }
            Some(_) => 0.0,
            None => block.iter().sum::<f32>() / block.len().max(1) as f32,
        }
    }
}
