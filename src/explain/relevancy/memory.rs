//! How much memory the tracked pass needs, and how many tokens one backward can carry.
//!
//! The estimate follows what `model::tracked` keeps and allocates (e = bytes of the model
//! dtype, S positions, h/I/H/d the decoder's hidden, MLP, heads, head size, kv = key/value
//! heads; the same letters with a `v` for the vision tower over n = P + 1 tokens):
//! - kept from the forward, per decoder layer: two norms' normalised inputs (f32) `2·S·h·4`,
//!   Q/K/V `S·(H + 2·kv)·d·e`, the attention probabilities (f32) `H·S²·4`, the MLP's
//!   activation and `up ⊙ act'` `2·S·I·e`; per vision layer that runs, the same with the
//!   vision sizes (and one `n·Iv·e` MLP tensor); plus the embeddings and the largest forward
//!   transient (scores in e, f32 copy, probabilities: `H·S²·(e + 8)`).
//! - per output token carried by one backward: the attention-sized gradients of one layer
//!   (∇A, ∇A ⊙ A, two temporaries, all f32, and dS in e): `H·S²·(16 + e)`, and the
//!   hidden/MLP-sized gradients `S·(6·h + 3·I)·e`; the vision backward's counterpart is
//!   smaller for LLaVA and is covered by the larger of the two.
//!
//! LLaVA-1.5-7B (decoder 32 layers, h 4096, I 11008, 32 heads; CLIP-L/336, 23 of 24 layers
//! run, n = 577) at S = 650 positions in bf16: about 4.5 GiB kept from the forward plus
//! 0.3 GiB per token of a backward chunk, so about 5.7 GiB with 4 tokens per backward (4.7 GiB
//! at the least, one token per backward), on top of the weights (13.5 GiB).
//! (`tests/relevancy_memory.rs` pins these numbers.)

use candle_core::{DType, Device};

use crate::model::LlavaConfig;

/// The estimate, split into what is fixed and what grows with the backward chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes kept from the forward pass (and its largest transient).
    pub fixed: u64,
    /// Bytes per output token carried in one backward.
    pub per_token: u64,
}

impl MemoryPlan {
    /// Peak bytes with `chunk` tokens per backward.
    pub fn peak(&self, chunk: usize) -> u64 {
        self.fixed + self.per_token * chunk as u64
    }

    /// The most tokens per backward that fit in `available` bytes (at most `cap`), or
    /// `None` when not even one does.
    pub fn chunk_for(&self, available: u64, cap: usize) -> Option<usize> {
        if self.peak(1) > available {
            return None;
        }
        let extra = (available - self.fixed) / self.per_token.max(1);
        Some((extra as usize).clamp(1, cap.max(1)))
    }
}

/// The memory plan of the tracked pass for `cfg` over `seq_len` positions in `dtype`.
pub fn plan(cfg: &LlavaConfig, seq_len: usize, dtype: DType) -> MemoryPlan {
    let e = dtype.size_in_bytes() as u64;
    let t = &cfg.text_config;
    let s = seq_len as u64;
    let (h, i, nh, nkv, d) = (
        t.hidden_size as u64,
        t.intermediate_size as u64,
        t.num_attention_heads as u64,
        t.num_key_value_heads as u64,
        t.head_dim as u64,
    );
    let dec_layer = 2 * s * h * 4 + s * (nh + 2 * nkv) * d * e + nh * s * s * 4 + 2 * s * i * e;
    let dec = t.num_hidden_layers as u64 * dec_layer + s * h * e;
    let v = &cfg.vision_config;
    let n = v.num_patches() as u64 + 1;
    let (vh, vi, vnh) = (
        v.hidden_size as u64,
        v.intermediate_size as u64,
        v.num_attention_heads as u64,
    );
    let run = cfg
        .feature_layers()
        .ok()
        .and_then(|l| l.into_iter().max())
        .unwrap_or(v.num_hidden_layers) as u64;
    let vis_layer = 2 * n * vh * 4 + 3 * n * vh * e + vnh * n * n * 4 + n * vi * e;
    let vis = run * vis_layer + n * t.hidden_size as u64 * e;
    let transient = (nh * s * s).max(vnh * n * n) * (e + 8);
    let per_token =
        (nh * s * s).max(vnh * n * n) * (16 + e) + s * (6 * h + 3 * i) * e + n * 6 * vh * e;
    MemoryPlan {
        fixed: dec + vis + transient,
        per_token,
    }
}

/// Peak bytes of the tracked pass with one token per backward (the least it can need).
pub fn estimate_tracked_bytes(cfg: &LlavaConfig, seq_len: usize, dtype: DType) -> u64 {
    plan(cfg, seq_len, dtype).peak(1)
}

/// `MemAvailable` of `/proc/meminfo` in bytes, when readable.
pub fn available_cpu_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

/// Free memory of `device` in bytes: `MemAvailable` on the CPU, the driver's free device memory
/// on a CUDA GPU (`cuMemGetInfo` in the device's context); `None` when it cannot be read.
pub fn available_bytes(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => available_cpu_bytes(),
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => gpu
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    let mult = match unit {
        "kB" => 1024,
        "mB" | "MB" => 1024 * 1024,
        _ => 1,
    };
    Some(value * mult)
}

/// Bytes as a short human string (GiB/MiB).
pub fn human_bytes(b: u64) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses() {
        let text = "MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(parse_mem_available(text), Some(2000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn chunk_fits_in_budget() {
        let p = MemoryPlan {
            fixed: 100,
            per_token: 10,
        };
        assert_eq!(p.chunk_for(95, 8), None);
        assert_eq!(p.chunk_for(110, 8), Some(1));
        assert_eq!(p.chunk_for(135, 8), Some(3));
        assert_eq!(p.chunk_for(10_000, 8), Some(8));
        assert_eq!(p.peak(3), 130);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(5 << 20), "5 MiB");
    }
}
