//! Multimodal rotary positions (M-RoPE) of the Qwen VL decoders: every position has a
//! (temporal, height, width) triple, and `mrope_section` says which RoPE frequency pairs take
//! which of the three. Text positions have three equal entries; the image's merged token
//! (r, c) gets (s, s + r, s + c), s being the position after `<|vision_start|>`, and the text
//! after the image continues from the largest + 1 (transformers' `get_rope_index`).

use candle_core::{DType, Device, Result, Tensor};

/// The positions of a prompt, and the offset that continues them while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MropePositions {
    /// `[t, h, w]` of each prompt position.
    pub prompt: Vec<[i64; 3]>,
    /// Decoded token at sequence index i (i ≥ prompt length) has position i + `delta` in all
    /// three (transformers' `rope_deltas`).
    pub delta: i64,
}

impl MropePositions {
    /// Positions of the prompt `ids` whose runs of `image_token_id` are images of merged grids
    /// `grids` (`[rows, cols]`, in order). Errors when a run's length is not rows × cols.
    pub fn new(ids: &[u32], image_token_id: u32, grids: &[[usize; 2]]) -> Result<Self> {
        let mut prompt = Vec::with_capacity(ids.len());
        let mut next: i64 = 0;
        let mut grids = grids.iter();
        let mut i = 0;
        while i < ids.len() {
            if ids[i] != image_token_id {
                prompt.push([next; 3]);
                next += 1;
                i += 1;
                continue;
            }
            let run = ids[i..]
                .iter()
                .take_while(|&&id| id == image_token_id)
                .count();
            let Some(&[rows, cols]) = grids.next() else {
                candle_core::bail!("the prompt holds more images than image grids were given");
            };
            if run != rows * cols {
                candle_core::bail!(
                    "the prompt holds {run} image tokens but the image has {rows}x{cols} merged tokens"
                );
            }
            for r in 0..rows {
                for c in 0..cols {
                    prompt.push([next, next + r as i64, next + c as i64]);
                }
            }
            next += rows.max(cols) as i64;
            i += run;
        }
        let delta = next - ids.len() as i64;
        Ok(Self { prompt, delta })
    }

    /// The positions of sequence indices `offset..offset + len` (prompt ones from the table,
    /// later ones continued with `delta`).
    pub fn range(&self, offset: usize, len: usize) -> Vec<[i64; 3]> {
        (offset..offset + len)
            .map(|i| match self.prompt.get(i) {
                Some(p) => *p,
                None => [i as i64 + self.delta; 3],
            })
            .collect()
    }
}

/// M-RoPE frequency tables.
#[derive(Debug, Clone)]
pub struct Mrope {
    inv_freq: Vec<f32>,
    /// For each frequency pair, which of (t, h, w) drives it.
    band: Vec<usize>,
}

impl Mrope {
    /// Frequencies of a head of `head_dim` with base `theta`, split by `section` (sums to
    /// head_dim / 2).
    pub fn new(head_dim: usize, theta: f64, section: &[usize]) -> Self {
        let base = theta as f32;
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
            .collect();
        let band = section
            .iter()
            .enumerate()
            .flat_map(|(k, &n)| std::iter::repeat_n(k % 3, n))
            .collect();
        Self { inv_freq, band }
    }

    /// `cos`, `sin` `[n, head_dim / 2]` of `positions`, in `dtype`.
    pub fn cos_sin(
        &self,
        positions: &[[i64; 3]],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for p in positions {
            for (f, &b) in self.inv_freq.iter().zip(&self.band) {
                let a = p[b] as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let n = positions.len();
        let cos = Tensor::from_vec(cos, (n, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (n, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_positions_follow_get_rope_index() {
        // 2 text tokens, a 2x3 image, 1 text token
        let ids = [7, 8, 5, 5, 5, 5, 5, 5, 9];
        let p = MropePositions::new(&ids, 5, &[[2, 3]]).unwrap();
        assert_eq!(p.prompt[2], [2, 2, 2]);
        assert_eq!(p.prompt[7], [2, 3, 4]);
        assert_eq!(p.prompt[8], [5, 5, 5]);
        assert_eq!(p.delta, 6 - 9);
        assert_eq!(p.range(9, 1), vec![[6, 6, 6]]);
        assert!(MropePositions::new(&ids, 5, &[[2, 2]]).is_err());
    }

    #[test]
    fn sections_pick_the_band() {
        let r = Mrope::new(16, 10000.0, &[2, 3, 3]);
        assert_eq!(r.band, vec![0, 0, 1, 1, 1, 2, 2, 2]);
    }
}
