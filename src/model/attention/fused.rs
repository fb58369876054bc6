//! The element-wise part of the attention backward on the CPU in one pass each, over threads:
//! from `∇A` `[heads, n_q, B, n_k]` and `A` `[heads, n_q, n_k]` (f32), the relevancy's
//! `Ā = mean_heads(clamp(∇A ⊙ A, min = 0))` `[n_q, B, n_k]` and the softmax backward
//! `dS = A ⊙ (∇A − Σ_k ∇A ⊙ A)` `[heads, n_q, B, n_k]`. The composite tensor expressions
//! (`backward.rs`) compute the same numbers but pass over the `heads·n_q·B·n_k` tensors six
//! times, single-threaded, with a broadcast in the middle; at a few thousand positions that
//! was half of a layer's backward. Other devices keep the composite expressions.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Which of the two results an op computes.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// `Ā` `[n_q, B, n_k]`.
    Abar,
    /// `dS` `[heads, n_q, B, n_k]`.
    Ds,
}

struct Fused(Part);

/// The contiguous f32 data of `s` under layout `l`.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("the fused attention backward needs contiguous tensors"),
    }
}

/// Splits `out` into chunks of whole `unit`s, one chunk per thread, and runs `f(first unit,
/// chunk)` on each.
fn par_chunks(out: &mut [f32], unit: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let units = out.len() / unit.max(1);
    let threads = candle_core::utils::get_num_threads().clamp(1, units.max(1));
    let per = units.div_ceil(threads).max(1) * unit.max(1);
    std::thread::scope(|scope| {
        for (i, chunk) in out.chunks_mut(per).enumerate() {
            let f = &f;
            scope.spawn(move || f(i * per / unit.max(1), chunk));
        }
    });
}

impl CustomOp2 for Fused {
    fn name(&self) -> &'static str {
        match self.0 {
            Part::Abar => "attention-backward-abar",
            Part::Ds => "attention-backward-ds",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (heads, n_q, b, n_k) = l1.shape().dims4()?;
        if l2.shape().dims() != [heads, n_q, n_k] {
            candle_core::bail!(
                "attention probabilities {:?} do not match their gradient {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let (g, a) = (slice(s1, l1)?, slice(s2, l2)?);
        match self.0 {
            Part::Abar => {
                let mut out = vec![0f32; n_q * b * n_k];
                let scale = (1.0 / heads as f64) as f32;
                // One unit: a query row's B·n_k values.
                par_chunks(&mut out, b * n_k, |q0, chunk| {
                    for (i, row) in chunk.chunks_mut(b * n_k).enumerate() {
                        let q = q0 + i;
                        for h in 0..heads {
                            let ar = &a[(h * n_q + q) * n_k..][..n_k];
                            let gq = &g[(h * n_q + q) * b * n_k..][..b * n_k];
                            for (o, gb) in row.chunks_mut(n_k).zip(gq.chunks(n_k)) {
                                for ((o, &gv), &av) in o.iter_mut().zip(gb).zip(ar) {
                                    *o += (gv * av).max(0.0);
                                }
                            }
                        }
                        row.iter_mut().for_each(|v| *v *= scale);
                    }
                });
                Ok((CpuStorage::F32(out), Shape::from((n_q, b, n_k))))
            }
            Part::Ds => {
                let mut out = vec![0f32; heads * n_q * b * n_k];
                // One unit: a (head, query) pair's B rows.
                par_chunks(&mut out, b * n_k, |hq0, chunk| {
                    for (i, rows) in chunk.chunks_mut(b * n_k).enumerate() {
                        let hq = hq0 + i;
                        let ar = &a[hq * n_k..][..n_k];
                        let gq = &g[hq * b * n_k..][..b * n_k];
                        for (o, gb) in rows.chunks_mut(n_k).zip(gq.chunks(n_k)) {
                            let sum: f32 = gb.iter().zip(ar).map(|(&gv, &av)| gv * av).sum();
                            for ((o, &gv), &av) in o.iter_mut().zip(gb).zip(ar) {
                                *o = (gv - sum) * av;
                            }
                        }
                    }
                });
                Ok((CpuStorage::F32(out), Shape::from((heads, n_q, b, n_k))))
            }
        }
    }
}

/// `Ā` `[n_q, B, n_k]` of `grad_a` `[heads, n_q, B, n_k]` and `probs` `[heads, n_q, n_k]` (f32,
/// CPU).
pub(super) fn abar(grad_a: &Tensor, probs: &Tensor) -> Result<Tensor> {
    grad_a
        .contiguous()?
        .apply_op2_no_bwd(&probs.contiguous()?, &Fused(Part::Abar))
}

/// `dS` `[heads, n_q, B, n_k]` of `grad_a` and `probs` as [`abar`] takes them.
pub(super) fn ds(grad_a: &Tensor, probs: &Tensor) -> Result<Tensor> {
    grad_a
        .contiguous()?
        .apply_op2_no_bwd(&probs.contiguous()?, &Fused(Part::Ds))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// `(Ā, dS)` by the composite tensor expressions the fused ops replace.
    fn composite(g: &Tensor, probs: &Tensor) -> (Tensor, Tensor) {
        let heads = probs.dim(0).unwrap();
        let a = probs.unsqueeze(2).unwrap();
        let ga = g.broadcast_mul(&a).unwrap();
        let abar = (ga.relu().unwrap().sum(0).unwrap() / heads as f64).unwrap();
        let rowsum = ga.sum_keepdim(3).unwrap();
        drop(ga);
        let ds = g.broadcast_sub(&rowsum).unwrap().broadcast_mul(&a).unwrap();
        (abar, ds)
    }

    /// The largest absolute difference of two equally shaped tensors.
    fn diff(x: &Tensor, y: &Tensor) -> f32 {
        (x - y)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .unwrap()
    }

    #[test]
    fn fused_equals_the_composite_expressions() {
        let (h, n, b) = (3, 7, 2);
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 1.0, (h, n, b, n), &dev).unwrap();
        let scores = Tensor::randn(0f32, 1.0, (h, n, n), &dev).unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let (abar, ds) = composite(&g, &probs);
        assert!(diff(&super::abar(&g, &probs).unwrap(), &abar) < 1e-6);
        assert!(diff(&super::ds(&g, &probs).unwrap(), &ds) < 1e-6);
    }

    /// Side by side at the size of a layer of the anyres benchmark (8 heads, 2.6k positions,
    /// 4 seeds): `cargo test --lib fused -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_fused_against_composite() {
        let (h, n, b) = (8, 2608, 4);
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 1.0, (h, n, b, n), &dev).unwrap();
        let probs = Tensor::rand(0f32, 1.0, (h, n, n), &dev).unwrap();
        let clock = std::time::Instant::now();
        let (abar, ds) = composite(&g, &probs);
        let before = clock.elapsed().as_secs_f64();
        let clock = std::time::Instant::now();
        let (abar2, ds2) = (
            super::abar(&g, &probs).unwrap(),
            super::ds(&g, &probs).unwrap(),
        );
        let after = clock.elapsed().as_secs_f64();
        eprintln!(
            "composite {before:.2} s, fused {after:.2} s ({:.2}x); max diff abar {} ds {}",
            after / before,
            diff(&abar, &abar2),
            diff(&ds, &ds2)
        );
    }
}
