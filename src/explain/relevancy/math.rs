//! Rules 5 and 6 of Chefer et al. (2021) on plain arrays, and LVLM-Interpret's residual
//! normalisation. The model-side gradient pass (`model::tracked`) computes the same rows fused
//! into its backward; these functions define them independently and serve its tests.

/// Rule 5: `Ā = mean_heads(clamp(G ⊙ A, min = 0))` for one layer. `attn` and `grad` are
/// `[H, n, n]` row-major; the result is `[n, n]`.
pub fn head_mean_positive(attn: &[f32], grad: &[f32], heads: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * n];
    if heads == 0 || attn.len() != heads * n * n || grad.len() != attn.len() {
        return out;
    }
    for h in 0..heads {
        let base = h * n * n;
        for (o, (a, g)) in out.iter_mut().zip(
            attn[base..base + n * n]
                .iter()
                .zip(&grad[base..base + n * n]),
        ) {
            *o += (a * g).max(0.0);
        }
    }
    let inv = 1.0 / heads as f32;
    out.iter_mut().for_each(|v| *v *= inv);
    out
}

/// Rule 6 over all layers, the full matrix: `R = I`, then for each layer in order
/// `R ← R + Ā_l R`. Every `abar` is `[n, n]`; the result is `[n, n]`. O(L·n³).
pub fn rollout_matrix(abars: &[Vec<f32>], n: usize) -> Vec<f32> {
    let mut r = vec![0f32; n * n];
    for i in 0..n {
        r[i * n + i] = 1.0;
    }
    for a in abars {
        let mut next = r.clone();
        for i in 0..n {
            for k in 0..n {
                let aik = a[i * n + k];
                if aik == 0.0 {
                    continue;
                }
                for j in 0..n {
                    next[i * n + j] += aik * r[k * n + j];
                }
            }
        }
        r = next;
    }
    r
}

/// Row `q` of [`rollout_matrix`] without forming it: `R = (I + Ā_L) ⋯ (I + Ā_1)`, so
/// `e_qᵀ R` is a vector–matrix chain from the last layer down: `v ← v + v Ā_l`. O(L·n²).
pub fn rollout_row(abars: &[Vec<f32>], n: usize, q: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    if q < n {
        v[q] = 1.0;
    }
    for a in abars.iter().rev() {
        let mut next = v.clone();
        for (k, &vk) in v.iter().enumerate() {
            if vk == 0.0 {
                continue;
            }
            for j in 0..n {
                next[j] += vk * a[k * n + j];
            }
        }
        v = next;
    }
    v
}

/// LVLM-Interpret's `handle_residual` (its eq. 8–9) applied to one row `q` of a relevancy
/// matrix: `(r − e_q) / Σ(r − e_q) + e_q`, the division skipped when the sum is zero.
pub fn residual_normalize_row(row: &[f32], q: usize) -> Vec<f32> {
    let mut out = row.to_vec();
    if let Some(v) = out.get_mut(q) {
        *v -= 1.0;
    }
    let sum: f32 = out.iter().sum();
    let sum = if sum == 0.0 { 1.0 } else { sum };
    out.iter_mut().for_each(|v| *v /= sum);
    if let Some(v) = out.get_mut(q) {
        *v += 1.0;
    }
    out
}

/// `handle_residual` on a whole `[n, n]` matrix: every row normalised as in
/// [`residual_normalize_row`] with its own diagonal.
pub fn residual_normalize_matrix(m: &[f32], n: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|i| residual_normalize_row(&m[i * n..(i + 1) * n], i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower_random(n: usize, seed: u64) -> Vec<f32> {
        // a small deterministic LCG; lower-triangular like a causal Ā
        let mut s = seed;
        let mut out = vec![0f32; n * n];
        for i in 0..n {
            for j in 0..=i {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                out[i * n + j] = ((s >> 33) as f32 / (1u64 << 31) as f32) * 0.5;
            }
        }
        out
    }

    #[test]
    fn row_trick_equals_full_product() {
        let n = 7;
        let abars: Vec<Vec<f32>> = (0..4).map(|l| lower_random(n, 11 + l)).collect();
        let full = rollout_matrix(&abars, n);
        for q in 0..n {
            let row = rollout_row(&abars, n, q);
            for j in 0..n {
                let d = (row[j] - full[q * n + j]).abs();
                assert!(
                    d < 1e-5 * full[q * n + j].abs().max(1.0),
                    "q {q} j {j}: {d}"
                );
            }
        }
    }

    #[test]
    fn rollout_is_ordered_product() {
        // two layers, n = 2: R = (I + A2)(I + A1), not (I + A1)(I + A2)
        let a1 = vec![0.0, 0.0, 1.0, 0.0];
        let a2 = vec![0.0, 0.0, 0.0, 2.0];
        let r = rollout_matrix(&[a1, a2], 2);
        // (I + A1) = [[1,0],[1,1]]; (I + A2) = [[1,0],[0,3]]; product = [[1,0],[3,3]]
        assert_eq!(r, vec![1.0, 0.0, 3.0, 3.0]);
        assert_eq!(
            rollout_row(&[vec![0.0, 0.0, 1.0, 0.0], vec![0.0, 0.0, 0.0, 2.0]], 2, 1),
            vec![3.0, 3.0]
        );
    }

    #[test]
    fn head_mean_clamps_negative_products() {
        let attn = vec![0.5, 0.5, 0.2, 0.8, 0.5, 0.5, 0.2, 0.8];
        let grad = vec![1.0, -1.0, 2.0, 0.0, 3.0, 1.0, -2.0, 1.0];
        let a = head_mean_positive(&attn, &grad, 2, 2);
        assert_eq!(a, vec![(0.5 + 1.5) / 2.0, 0.5 / 2.0, 0.4 / 2.0, 0.8 / 2.0]);
    }

    #[test]
    fn residual_normalisation_matches_definition() {
        let row = vec![0.5, 1.5, 2.0, 0.0];
        let out = residual_normalize_row(&row, 2);
        // r − e_2 = [0.5, 1.5, 1.0, 0]; sum 3
        let want = [0.5 / 3.0, 0.5, 1.0 / 3.0 + 1.0, 0.0];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
        // zero sum: unchanged
        assert_eq!(residual_normalize_row(&[0.0, 1.0], 1), vec![0.0, 1.0]);
        let m = residual_normalize_matrix(&[1.0, 0.0, 2.0, 3.0], 2);
        assert_eq!(m[0..2], [1.0, 0.0]);
        assert!((m[2] - 2.0 / 4.0).abs() < 1e-6 && (m[3] - (2.0 / 4.0 + 1.0)).abs() < 1e-6);
    }
}
