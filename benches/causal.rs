//! CLEANN over all heads of one token at LLaVA-1.5 scale: 32 heads, 600 positions of which 576
//! are image tokens, on synthetic causal attention (random scores, strongly attended image
//! tokens, a sink on position 0, causal mask, softmax).

use criterion::{criterion_group, criterion_main, Criterion};
use lvlmscope::explain::causal::explain_token;
use lvlmscope::session::{Array, CausalParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HEADS: usize = 32;
const SEQ: usize = 600;
const IMAGE: (usize, usize) = (5, 576);

/// `hot` image tokens per head get a boost in `boost`; noise has standard deviation `sd`.
fn synthetic(seed: u64, hot: (usize, usize), boost: (f64, f64), sd: f64) -> Array {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0f32; HEADS * SEQ * SEQ];
    for h in 0..HEADS {
        let n_hot = rng.gen_range(hot.0..=hot.1);
        let hot_cols: Vec<(usize, f64)> = (0..n_hot)
            .map(|_| {
                (
                    rng.gen_range(IMAGE.0..IMAGE.0 + IMAGE.1),
                    rng.gen_range(boost.0..boost.1),
                )
            })
            .collect();
        for q in 0..SEQ {
            let mut scores: Vec<f64> = (0..=q)
                .map(|_| {
                    // sum of uniforms: roughly normal noise
                    let u: f64 = (0..4).map(|_| rng.gen::<f64>() - 0.5).sum();
                    u * sd * 1.7
                })
                .collect();
            scores[0] += 4.0;
            for &(c, b) in &hot_cols {
                if c <= q {
                    scores[c] += b;
                }
            }
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            let row = &mut data[(h * SEQ + q) * SEQ..(h * SEQ + q + 1) * SEQ];
            for (k, s) in scores.iter().enumerate() {
                row[k] = ((s - m).exp() / z) as f32;
            }
        }
    }
    Array::new(vec![HEADS, SEQ, SEQ], data).expect("shape matches")
}

fn bench(c: &mut Criterion) {
    let params = CausalParams::default();
    let target = SEQ - 1;
    let sparse = synthetic(7, (2, 8), (2.0, 5.0), 1.0);
    let dense = synthetic(8, (40, 80), (4.0, 6.0), 1.0);
    for (name, att) in [("sparse", &sparse), ("dense", &dense)] {
        let token = explain_token(att, IMAGE, target, &params);
        let nodes: usize = token.heads.iter().map(|h| h.nodes.len()).sum();
        let expl: usize = token.heads.iter().map(|h| h.explanation.len()).sum();
        eprintln!(
            "{name}: {HEADS} heads, {:.1} nodes and {:.1} explaining positions per head",
            nodes as f64 / HEADS as f64,
            expl as f64 / HEADS as f64
        );
        c.bench_function(&format!("cleann_32_heads_600_positions_{name}"), |b| {
            b.iter(|| explain_token(att, IMAGE, target, &params))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
