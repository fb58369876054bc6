//! Rotary position embedding frequencies: plain, linear, dynamic NTK and llama3 scaling, computed
//! in f32 as transformers' `ROPE_INIT_FUNCTIONS` do.

use candle_core::{DType, Device, Result, Tensor};

use super::config::{RopeScaling, TextConfig};

/// Rotary embedding frequencies, computed in f32 as transformers does.
#[derive(Debug, Clone)]
pub struct Rope {
    dim: usize,
    theta: f64,
    scaling: RopeScaling,
    max_position_embeddings: usize,
    inv_freq: Vec<f32>,
}

fn default_inv_freq(dim: usize, base: f64) -> Vec<f32> {
    let base = base as f32;
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect()
}

impl Rope {
    /// Frequencies for `cfg`.
    pub fn new(cfg: &TextConfig) -> Self {
        let dim = cfg.head_dim;
        let mut inv_freq = default_inv_freq(dim, cfg.rope_theta);
        match cfg.rope_scaling {
            RopeScaling::None | RopeScaling::Dynamic { .. } => {}
            RopeScaling::Linear { factor } => {
                inv_freq.iter_mut().for_each(|f| *f /= factor as f32);
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old = original_max_position_embeddings as f32;
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    // transformers: neither high-frequency (wavelen < high) nor low-frequency (wavelen > low)
                    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                    *f = if medium {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
        Self {
            dim,
            theta: cfg.rope_theta,
            scaling: cfg.rope_scaling.clone(),
            max_position_embeddings: cfg.max_position_embeddings,
            inv_freq,
        }
    }

    /// Frequencies used for a forward call whose last position is `seq_len - 1` (dynamic NTK
    /// grows the base past `max_position_embeddings`).
    fn inv_freq_for(&self, seq_len: usize) -> Vec<f32> {
        match self.scaling {
            RopeScaling::Dynamic { factor } if seq_len > self.max_position_embeddings => {
                let d = self.dim as f64;
                let ratio = factor * seq_len as f64 / self.max_position_embeddings as f64;
                let base = self.theta * (ratio - (factor - 1.0)).powf(d / (d - 2.0));
                default_inv_freq(self.dim, base)
            }
            _ => self.inv_freq.clone(),
        }
    }

    /// `cos`, `sin` of shape `[len, dim/2]` for positions `offset..offset + len`.
    pub fn cos_sin(
        &self,
        offset: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let inv_freq = self.inv_freq_for(offset + len);
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in offset..offset + len {
            for f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LlavaConfig;

    fn text(json: &str) -> TextConfig {
        LlavaConfig::from_json(json, std::path::Path::new("config.json"))
            .unwrap()
            .text_config
    }

    fn close(got: &[f32], want: &[(usize, f64)]) {
        for &(i, w) in want {
            let g = got[i] as f64;
            assert!(
                (g - w).abs() <= 1e-6 * w.abs(),
                "inv_freq[{i}] = {g}, want {w}"
            );
        }
    }

    // Expected values: transformers' ROPE_INIT_FUNCTIONS for the same parameters.
    #[test]
    fn llama3_inv_freq_matches_transformers() {
        let cfg = text(
            r#"{"text_config": {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}}"#,
        );
        let rope = Rope::new(&cfg);
        close(
            &rope.inv_freq,
            &[
                (0, 1.0),
                (20, 0.016560440883040428),
                (40, 3.428102354519069e-05),
                (45, 1.2297638932068367e-05),
                (50, 4.411534519022098e-06),
                (63, 3.068925877869333e-07),
            ],
        );
    }

    #[test]
    fn linear_and_dynamic_inv_freq_match_transformers() {
        let cfg = text(
            r#"{"text_config": {"hidden_size": 64, "num_attention_heads": 4,
            "max_position_embeddings": 256, "rope_scaling": {"type": "linear", "factor": 2.0}}}"#,
        );
        close(
            &Rope::new(&cfg).inv_freq,
            &[
                (0, 0.5),
                (1, 0.15811388194561005),
                (7, 0.00015811389312148094),
            ],
        );
        let cfg = text(
            r#"{"text_config": {"hidden_size": 64, "num_attention_heads": 4,
            "max_position_embeddings": 256, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}}"#,
        );
        let rope = Rope::new(&cfg);
        // Within the trained context nothing changes; past it the base grows.
        assert_eq!(rope.inv_freq_for(256), default_inv_freq(16, 10000.0));
        close(
            &rope.inv_freq_for(300),
            &[
                (0, 1.0),
                (1, 0.30315783619880676),
                (4, 0.0084464680403471),
                (7, 0.00023533229250460863),
            ],
        );
    }
}
