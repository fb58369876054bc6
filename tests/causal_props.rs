//! Properties of CLEANN explanations on random causal attention matrices.

use lvlmscope::explain::causal::explain_head_with_tree;
use lvlmscope::explain::causal::{explain_head, explain_head_f64, explain_token, tree_rows};
use lvlmscope::session::{Array, CausalParams};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A `[heads, s, s]` causal attention: noisy scores, a few boosted image columns, a sink on
/// position 0, softmax per row.
fn attention(seed: u64, heads: usize, s: usize, span: (usize, usize)) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0.0; heads * s * s];
    for h in 0..heads {
        let hot: Vec<usize> = (0..rng.gen_range(1..6))
            .map(|_| rng.gen_range(span.0..span.0 + span.1))
            .collect();
        let sd = rng.gen_range(0.5..3.0);
        for q in 0..s {
            let mut sc: Vec<f64> = (0..=q).map(|_| rng.gen_range(-sd..sd)).collect();
            sc[0] += 3.0;
            for &c in &hot {
                if c <= q {
                    sc[c] += 3.0;
                }
            }
            let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc.iter().map(|v| (v - m).exp()).sum();
            for (k, v) in sc.iter().enumerate() {
                out[(h * s + q) * s + k] = ((v - m).exp() / z * 1e8).round() / 1e8;
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    s: usize,
    span: (usize, usize),
    target: usize,
    params: CausalParams,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        1usize..4,
        6usize..30,
        2usize..10,
        0usize..4,
        prop_oneof![Just(1e-5), Just(1e-3), Just(0.05)],
        prop_oneof![Just(0.01), Just(0.03)],
        1usize..5,
        2usize..20,
    )
        .prop_map(
            |(seed, start, len, after, back, alpha, att_th, radius, max_img)| {
                let s = start + len + after;
                let target = s - 1 - back.min(after - 1);
                Case {
                    seed,
                    s,
                    span: (start, len),
                    target,
                    params: CausalParams {
                        alpha,
                        att_th,
                        search_radius: radius,
                        max_image_tokens: max_img,
                        ..CausalParams::default()
                    },
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn explanation_is_sound(c in case()) {
        let a = attention(c.seed, 1, c.s, c.span);
        let r = explain_head_f64(&a, c.s, c.span, c.target, 0, &c.params);
        // nodes: ascending, end at the target, never after it
        prop_assert!(r.nodes.windows(2).all(|w| w[0] < w[1]));
        prop_assert_eq!(r.nodes.last().copied(), Some(c.target));
        // explanation: ascending, inside the nodes, never the target or later
        prop_assert!(r.explanation.windows(2).all(|w| w[0] < w[1]));
        for p in &r.explanation {
            prop_assert!(*p < c.target);
            prop_assert!(r.nodes.contains(p));
        }
        // per radius: depths 1..=max ≤ radius, union is the explanation
        let max = r.per_radius.keys().max().copied().unwrap_or(0);
        prop_assert!(max <= c.params.search_radius);
        prop_assert!(r.per_radius.keys().copied().eq(1..=max));
        let mut union: Vec<usize> = r.per_radius.values().flatten().copied().collect();
        union.sort_unstable();
        union.dedup();
        prop_assert_eq!(&union, &r.explanation);
        // image weights: in [0, 1], exactly for the explaining image positions
        let image: Vec<usize> = r.explanation.iter().copied()
            .filter(|&p| p >= c.span.0 && p < c.span.0 + c.span.1).collect();
        prop_assert!(r.image_weights.keys().copied().eq(image.iter().copied()));
        for w in r.image_weights.values() {
            prop_assert!((0.0..=1.0).contains(w));
        }
        prop_assert!(r.importance.is_finite() && r.importance >= 0.0);
    }

    #[test]
    fn larger_radius_extends_the_tree(c in case()) {
        let a = attention(c.seed, 1, c.s, c.span);
        let r = explain_head_f64(&a, c.s, c.span, c.target, 0, &c.params);
        let mut wider = c.params.clone();
        wider.search_radius += 1;
        let w = explain_head_f64(&a, c.s, c.span, c.target, 0, &wider);
        prop_assert!(r.explanation.iter().all(|p| w.explanation.contains(p)));
        for (d, set) in &r.per_radius {
            prop_assert_eq!(Some(set), w.per_radius.get(d));
        }
        prop_assert_eq!(&r.nodes, &w.nodes);
    }

    #[test]
    fn results_are_deterministic_and_entry_points_agree(c in case()) {
        let heads = 3;
        let a = attention(c.seed, heads, c.s, c.span);
        let s2 = c.s * c.s;
        let f32s: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let full = Array::new(vec![heads, c.s, c.s], f32s.clone()).unwrap();
        let token = explain_token(&full, c.span, c.target, &c.params);
        prop_assert_eq!(token.target, c.target);
        prop_assert_eq!(token.heads.len(), heads);
        for h in 0..heads {
            let one = explain_head(&f32s[h * s2..(h + 1) * s2], c.s, c.span, c.target, h, &c.params);
            prop_assert_eq!(&token.heads[h], &one);
            let again = explain_head(&f32s[h * s2..(h + 1) * s2], c.s, c.span, c.target, h, &c.params);
            prop_assert_eq!(&one, &again);
        }
        let (r, tree) = explain_head_with_tree(&a[..s2], c.s, c.span, c.target, 0, &c.params);
        let rows = tree_rows(&tree);
        prop_assert_eq!(rows[0], (0, c.target));
        // the rows below the root are exactly the per-radius entries (with repeats per depth)
        for &(depth, p) in &rows[1..] {
            prop_assert!(r.per_radius[&depth].contains(&p));
        }
        for (&depth, set) in &r.per_radius {
            for p in set {
                prop_assert!(rows.contains(&(depth, *p)));
            }
        }
    }
}

#[test]
fn tree_rows_are_depth_first() {
    // A fixed case with a non-trivial tree.
    let (s, span) = (30, (2, 20));
    let params = CausalParams {
        alpha: 0.05,
        ..CausalParams::default()
    };
    let mut found = false;
    for seed in 0..50 {
        let a = attention(seed, 1, s, span);
        let (r, tree) = explain_head_with_tree(&a, s, span, s - 1, 0, &params);
        if r.per_radius.len() < 2 {
            continue;
        }
        found = true;
        let rows = tree_rows(&tree);
        // depth grows by at most one from a row to the next
        for w in rows.windows(2) {
            check_depth_step(w[0].0, w[1].0);
        }
    }
    assert!(found, "no seed gave a tree deeper than one level");
}

fn check_depth_step(prev: usize, next: usize) {
    assert!(next <= prev + 1, "depth jumped from {prev} to {next}");
    assert!(next >= 1);
}
