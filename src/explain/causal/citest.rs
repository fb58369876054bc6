//! Partial-correlation conditional-independence test with Fisher's z, as causality-lab's
//! `CondIndepParCorr` computes it from a correlation matrix (CLEANN: the normalised `A·Aᵀ` of one
//! head's attention matrix `A`).
//!
//! Correlations are computed only between the graph's nodes, and each test's p-value is cached
//! per (unordered pair, sorted conditioning set).

use std::collections::HashMap;

/// Sentinel for positions that are not graph nodes.
const NOT_A_NODE: u32 = u32::MAX;

/// Correlation matrix over a node subset plus a cached Fisher-z partial-correlation test.
#[derive(Debug, Clone)]
pub struct ParCorrTest {
    /// Position → index into `corr` (or [`NOT_A_NODE`]).
    index: Vec<u32>,
    /// Number of nodes.
    k: usize,
    /// `k × k` correlations, row-major, in node-index order.
    corr: Vec<f64>,
    /// Records assumed by the test (the degrees of freedom before conditioning).
    num_records: usize,
    /// Significance level: independence when the p-value exceeds it.
    alpha: f64,
    cache: HashMap<(usize, usize, Vec<usize>), f64>,
    tests: usize,
}

impl ParCorrTest {
    /// Builds the correlations `cov(i,j)/√(cov(i,i)·cov(j,j))` with `cov = A·Aᵀ` between the
    /// rows of `attention` (`seq_len × seq_len`, row-major) at the given node positions.
    pub fn new(
        attention: &[f64],
        seq_len: usize,
        nodes: &[usize],
        num_records: usize,
        alpha: f64,
    ) -> Self {
        let rows: Vec<Vec<f64>> = nodes
            .iter()
            .map(|&p| attention[p * seq_len..(p + 1) * seq_len].to_vec())
            .collect();
        Self::from_rows(&rows, seq_len, nodes, num_records, alpha)
    }

    /// Like [`Self::new`], from the attention rows of the nodes (`rows[i]` is the row of
    /// `nodes[i]`), each of `seq_len` values.
    pub fn from_rows(
        rows: &[Vec<f64>],
        seq_len: usize,
        nodes: &[usize],
        num_records: usize,
        alpha: f64,
    ) -> Self {
        let k = nodes.len();
        let mut index = vec![NOT_A_NODE; seq_len.max(nodes.iter().max().map_or(0, |m| m + 1))];
        for (i, &p) in nodes.iter().enumerate() {
            index[p] = i as u32;
        }
        // Causal attention rows end in zeros: only the leading part takes part in products.
        let used: Vec<&[f64]> = rows
            .iter()
            .map(|r| {
                let end = r.iter().rposition(|&v| v != 0.0).map_or(0, |e| e + 1);
                &r[..end]
            })
            .collect();
        let inv_std: Vec<f64> = used.iter().map(|r| 1.0 / dot(r, r).sqrt()).collect();
        let mut corr = vec![0.0; k * k];
        for i in 0..k {
            for j in i..k {
                let cov = dot(used[i], used[j]);
                // numpy: cov * inv_std (per column) * inv_std[:, None] (per row)
                corr[i * k + j] = cov * inv_std[j] * inv_std[i];
                corr[j * k + i] = cov * inv_std[i] * inv_std[j];
            }
        }
        Self {
            index,
            k,
            corr,
            num_records,
            alpha,
            cache: HashMap::new(),
            tests: 0,
        }
    }

    fn c(&self, x: usize, y: usize) -> f64 {
        self.corr[self.index[x] as usize * self.k + self.index[y] as usize]
    }

    /// Number of tests actually computed (cache misses).
    pub fn tests_computed(&self) -> usize {
        self.tests
    }

    /// Whether `x ⫫ y | zz` at level `alpha` (p-value > alpha), cached.
    pub fn independent(&mut self, x: usize, y: usize, zz: &[usize]) -> bool {
        let mut cond = zz.to_vec();
        cond.sort_unstable();
        let key = (x.min(y), x.max(y), cond);
        let p = match self.cache.get(&key) {
            Some(&p) => p,
            None => {
                let p = self.p_value(x, y, zz);
                self.tests += 1;
                self.cache.insert(key, p);
                p
            }
        };
        p > self.alpha
    }

    /// The p-value of `x ⫫ y | zz` with `num_records` records (uncached; may exceed 1 only by
    /// rounding, and is NaN when the records are too few for the conditioning set).
    pub fn p_value(&self, x: usize, y: usize, zz: &[usize]) -> f64 {
        self.p_value_with_records(x, y, zz, self.num_records)
    }

    /// [`Self::p_value`] with an explicit number of records.
    pub fn p_value_with_records(&self, x: usize, y: usize, zz: &[usize], records: usize) -> f64 {
        let par_corr = match zz.len() {
            0 => {
                let r = self.c(x, y);
                if r >= 1.0 {
                    return 0.0;
                }
                r
            }
            1 => {
                let z = zz[0];
                let (rxy, rxz, ryz) = (self.c(x, y), self.c(x, z), self.c(y, z));
                if rxz >= 1.0 || ryz >= 1.0 {
                    return 0.0;
                }
                (rxy - rxz * ryz) / ((1.0 - rxz.powi(2)) * (1.0 - ryz.powi(2))).sqrt()
            }
            _ => {
                let vars: Vec<usize> = [x, y].iter().chain(zz).copied().collect();
                match self.partial_from_inverse(&vars) {
                    Some(r) => r,
                    None => return 0.0,
                }
            }
        };
        if par_corr.abs() >= 1.0 {
            return 0.0;
        }
        let dof = records as f64 - (zz.len() + 2) as f64;
        let z = 0.5 * (2.0 * par_corr / (1.0 - par_corr)).ln_1p();
        let v = ((dof - 1.0).sqrt() * z).abs();
        2.0 * (1.0 - normal_cdf(v))
    }

    /// `-inv[0,1] / √|inv[0,0]·inv[1,1]|` of the correlation submatrix over `vars`
    /// (LU with partial pivoting); `None` when it is singular.
    fn partial_from_inverse(&self, vars: &[usize]) -> Option<f64> {
        let n = vars.len();
        let mut m = vec![0.0; n * n];
        for (i, &a) in vars.iter().enumerate() {
            for (j, &b) in vars.iter().enumerate() {
                m[i * n + j] = self.c(a, b);
            }
        }
        // Solve M · X = [e0 e1] by Gaussian elimination with partial pivoting.
        let mut rhs = vec![0.0; n * 2];
        rhs[0] = 1.0;
        rhs[3] = 1.0;
        for col in 0..n {
            let piv = (col..n)
                .max_by(|&a, &b| m[a * n + col].abs().total_cmp(&m[b * n + col].abs()))
                .unwrap_or(col);
            if m[piv * n + col] == 0.0 || !m[piv * n + col].is_finite() {
                return None;
            }
            if piv != col {
                for j in 0..n {
                    m.swap(col * n + j, piv * n + j);
                }
                rhs.swap(col * 2, piv * 2);
                rhs.swap(col * 2 + 1, piv * 2 + 1);
            }
            let d = m[col * n + col];
            for r in col + 1..n {
                let f = m[r * n + col] / d;
                if f != 0.0 {
                    for j in col..n {
                        m[r * n + j] -= f * m[col * n + j];
                    }
                    rhs[r * 2] -= f * rhs[col * 2];
                    rhs[r * 2 + 1] -= f * rhs[col * 2 + 1];
                }
            }
        }
        for r in (0..n).rev() {
            for c in 0..2 {
                let mut s = rhs[r * 2 + c];
                for j in r + 1..n {
                    s -= m[r * n + j] * rhs[j * 2 + c];
                }
                rhs[r * 2 + c] = s / m[r * n + r];
            }
        }
        let (i00, i01, i11) = (rhs[0], rhs[2], rhs[3]);
        // causality-lab negates the inverse first: -(-i01) / sqrt(|(-i00)(-i11)|)
        Some(-i01 / (i00 * i11).abs().sqrt())
    }
}

/// Dot product over the common length, with independent partial sums (vectorisable).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// Standard normal CDF as scipy's `ndtr` evaluates it.
pub fn normal_cdf(a: f64) -> f64 {
    let x = a * std::f64::consts::FRAC_1_SQRT_2;
    let z = x.abs();
    if z < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        let y = 0.5 * libm::erfc(z);
        if x > 0.0 {
            1.0 - y
        } else {
            y
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-15);
        assert!((normal_cdf(1.959963984540054) - 0.975).abs() < 1e-12);
        assert!((normal_cdf(-3.0) - 0.0013498980316301).abs() < 1e-13);
    }

    #[test]
    fn partial_correlation_agrees_between_formulas() {
        // 4 rows of a small attention-like matrix
        let s = 4;
        let a = vec![
            0.7, 0.1, 0.1, 0.1, //
            0.2, 0.5, 0.2, 0.1, //
            0.1, 0.3, 0.4, 0.2, //
            0.25, 0.25, 0.25, 0.25,
        ];
        let t = ParCorrTest::new(&a, s, &[0, 1, 2, 3], 128, 1e-5);
        // order-1 formula vs. inverse with one conditioning variable
        let r1 = {
            let (rxy, rxz, ryz) = (t.c(0, 1), t.c(0, 2), t.c(1, 2));
            (rxy - rxz * ryz) / ((1.0 - rxz * rxz) * (1.0 - ryz * ryz)).sqrt()
        };
        let r_inv = t.partial_from_inverse(&[0, 1, 2]).unwrap();
        assert!((r1 - r_inv).abs() < 1e-12, "{r1} vs {r_inv}");
        let p = t.p_value(0, 1, &[2]);
        assert!((0.0..=1.0).contains(&p));
    }
}
