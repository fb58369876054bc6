use super::*;
use crate::explain::attention::{self as attn, HeadAgg};
use crate::explain::causal::{self, CausalParams};
use crate::explain::relevancy::views::{prepare_row, Normalization};
use crate::session::synthetic::{synthetic_session, SyntheticSpec};

fn tiny(relevancy: bool) -> Session {
    let mut spec = SyntheticSpec::tiny();
    spec.relevancy = relevancy;
    synthetic_session(&spec)
}

fn id(s: &str) -> MapId {
    s.parse().unwrap()
}

#[test]
fn attention_maps_are_the_recorded_rows() {
    let s = tiny(false);
    let e = explain(&s, &[2], &id("attention.l1.h3")).unwrap();
    let a = s.attn_gen.as_ref().unwrap();
    let span = attn::patch_positions(&s).unwrap();
    for (i, v) in e.grid.values.iter().enumerate() {
        assert_eq!(*v, a.get(&[2, 1, 3, span.start + i]));
    }
    assert_eq!((e.layer, e.head), (Some(1), Some(3)));
    assert_eq!(e.title, "attention · layer 1 · head 3 · token 2");
    // text: every position up to the query outside the image
    let q = s.query_position(2);
    assert_eq!(e.text.len(), q + 1 - span.len());
    assert_eq!(e.text[&0], a.get(&[2, 1, 3, 0]));
    // the last layer under its two spellings
    let last = explain(&s, &[2], &id("attention.last.max")).unwrap();
    let l3 = explain(&s, &[2], &id("attention.l3.max")).unwrap();
    assert_eq!(last.grid, l3.grid);
    assert_eq!(last.layer, Some(3));
}

#[test]
fn several_tokens_give_the_mean_of_their_maps() {
    let s = tiny(true);
    for name in [
        "attention.l2.mean",
        "attention.layers.max",
        "relevancy.decoder.residual",
        "relevancy.combined",
    ] {
        let both = explain(&s, &[1, 3], &id(name)).unwrap();
        let one = explain(&s, &[1], &id(name)).unwrap();
        let three = explain(&s, &[3], &id(name)).unwrap();
        for i in 0..both.grid.values.len() {
            let want = (one.grid.values[i] + three.grid.values[i]) / 2.0;
            assert!(
                (both.grid.values[i] - want).abs() < 1e-6,
                "{name} patch {i}"
            );
        }
        assert!(both.title.ends_with("mean of 2 tokens"), "{}", both.title);
    }
}

#[test]
fn the_mean_over_layers_is_the_mean_of_the_layer_maps() {
    let s = tiny(false);
    let e = explain(&s, &[0], &id("attention.layers.mean")).unwrap();
    for p in 0..16 {
        let want: f32 = (0..4)
            .map(|l| attn::image_map(&s, 0, l, HeadAgg::Mean).unwrap().values[p])
            .sum::<f32>()
            / 4.0;
        assert!((e.grid.values[p] - want).abs() < 1e-6);
    }
}

#[test]
fn decoder_relevancy_has_one_definition_per_normalisation() {
    let s = tiny(true);
    let t = 1;
    let raw = s.relevancy_llm.as_ref().unwrap().row(&[t]).to_vec();
    let q = s.query_position(t);
    let span = attn::patch_positions(&s).unwrap();
    let plain = explain(&s, &[t], &id("relevancy.decoder")).unwrap();
    // the self-removed row differs from the raw one only at the query, outside the image
    assert_eq!(plain.grid.values, raw[span.clone()].to_vec());
    assert_eq!(plain.text[&q], raw[q] - 1.0);
    let residual = explain(&s, &[t], &id("relevancy.decoder.residual")).unwrap();
    let want = prepare_row(&raw, q, Normalization::Residual);
    assert_eq!(residual.grid.values, want[span].to_vec());
    assert!(residual.title.starts_with("relevancy.llm · residual"));
    // the tensor's name parses to the same map
    assert_eq!(explain(&s, &[t], &id("relevancy.llm")).unwrap(), plain);
}

#[test]
fn missing_results_say_what_they_need() {
    let s = tiny(false);
    let rel = id("relevancy.vision");
    assert_eq!(
        explain(&s, &[2], &rel).unwrap_err(),
        CatalogueError::NoRelevancy(2)
    );
    assert_eq!(need(&s, &[2, 0, 2], &rel), Need::Relevancy(vec![0, 2]));
    let c = id("causal");
    assert_eq!(
        explain(&s, &[1], &c).unwrap_err(),
        CatalogueError::NoCausal(1)
    );
    assert_eq!(need(&s, &[1], &c), Need::Causal(vec![1]));
    assert_eq!(need(&s, &[1], &id("attention.last.mean")), Need::Ready);
    assert!(matches!(
        explain(&s, &[9], &c),
        Err(CatalogueError::Token(9, 5))
    ));
    assert_eq!(explain(&s, &[], &c).unwrap_err(), CatalogueError::NoTokens);
}

#[test]
fn causal_maps_sum_max_or_pick_heads() {
    let mut s = tiny(false);
    let params = CausalParams::for_session(&s);
    let computed = explain_with(
        &s,
        &[1],
        &id("causal.max"),
        Options {
            seed: None,
            compute_causal: true,
        },
    )
    .unwrap();
    s.manifest.causal = Some(causal::explain_session(&s, &[1], &params).unwrap());
    let ct = causal::stored_token(&s, 1).unwrap().clone();
    assert_eq!(computed.causal.as_ref(), Some(&ct));
    let span = attn::patch_positions(&s).unwrap();
    let sum = explain(&s, &[1], &id("causal")).unwrap();
    let total = causal::total_image_weights(&ct, (span.start, span.len()));
    for (v, w) in sum.grid.values.iter().zip(&total) {
        assert_eq!(*v, *w as f32);
    }
    let max = explain(&s, &[1], &id("causal.max")).unwrap();
    assert_eq!(max.grid, computed.grid);
    for h in &ct.heads {
        let one = explain(&s, &[1], &MapId::Causal(CausalHeads::Head(h.head))).unwrap();
        for (p, v) in one.grid.values.iter().enumerate() {
            let w = h
                .image_weights
                .get(&(span.start + p))
                .copied()
                .unwrap_or(0.0);
            assert_eq!(*v, w as f32);
            assert!(max.grid.values[p] >= *v);
        }
    }
    assert_eq!(sum.layer, Some(params.layer));
}

#[test]
fn the_random_map_is_seeded() {
    let s = tiny(false);
    let a = explain_with(
        &s,
        &[0],
        &MapId::Random,
        Options {
            seed: Some(5),
            compute_causal: false,
        },
    )
    .unwrap();
    let b = explain_with(
        &s,
        &[3],
        &MapId::Random,
        Options {
            seed: Some(5),
            compute_causal: false,
        },
    )
    .unwrap();
    assert_eq!(a.grid, b.grid);
    assert_ne!(a.grid, explain(&s, &[0], &MapId::Random).unwrap().grid);
    assert!(a.grid.values.iter().all(|v| (0.0..1.0).contains(v)));
}

#[test]
fn comparisons_hold_the_shown_maps_once_in_order() {
    let s = tiny(true);
    let shown = [
        id("attention.l1.mean"),
        id("attention.l1.mean"),
        id("causal.h2"),
    ];
    let names: Vec<String> = compared_maps(&s, 0, &shown, 1)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect();
    // no causal result stored: neither `causal` nor `causal.h2`
    assert_eq!(
        names,
        [
            "attention.l1.mean",
            "attention.last.mean",
            "attention.layers.mean",
            "attention.last.max",
            "relevancy.decoder",
            "relevancy.vision",
            "relevancy.combined",
            "random"
        ]
    );
}

/// A two-turn synthetic conversation: positions 0..3 template, 3..19 the image, 19..21 the
/// first question, 21..23 the first answer, 23..25 this question, 25.. this answer.
fn two_turns(relevancy: bool) -> Session {
    crate::session::synthetic::second_turn(tiny(relevancy), 2, 2)
}

/// Hand sums of `row` over the two-turn layout, positions up to `upto` (exclusive) for text.
fn by_hand(row: &[f32], upto: usize) -> [f32; 5] {
    let sum = |r: std::ops::Range<usize>| r.filter(|&p| p < upto).map(|p| row[p]).sum::<f32>();
    [
        (3..19).map(|p| row[p]).sum(),
        sum(23..25),
        sum(0..3) + sum(19..21),
        sum(21..23),
        sum(25..row.len()),
    ]
}

fn close(got: PartSums, want: [f32; 5]) {
    let got = [
        got.image,
        got.question,
        got.earlier_questions,
        got.earlier_answers,
        got.answer,
    ];
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{got:?} != {want:?}");
    }
}

#[test]
fn attention_parts_split_the_whole_row_of_a_later_turn() {
    let s = two_turns(false);
    let a = s.attn_gen.as_ref().unwrap();
    let e = explain(&s, &[2], &id("attention.l1.h3")).unwrap();
    let q = s.query_position(2);
    let row = a.row(&[2, 1, 3]).to_vec();
    let parts = e.parts.unwrap();
    close(parts, by_hand(&row, q + 1));
    // the whole softmax row: the parts sum to 1, and the earlier turns hold some of it
    assert!((parts.total() - 1.0).abs() < 1e-5, "{parts:?}");
    assert!(parts.earlier_answers > 0.0 && parts.earlier_questions > 0.0);
    // the mean of two tokens is the mean of their parts; the heads map is the same row
    let both = explain(&s, &[0, 2], &id("attention.l1.h3"))
        .unwrap()
        .parts
        .unwrap();
    let zero = explain(&s, &[0], &id("attention.l1.h3"))
        .unwrap()
        .parts
        .unwrap();
    assert!((both.question - (zero.question + parts.question) / 2.0).abs() < 1e-6);
    let heads = explain(&s, &[2], &id("attention.heads.l1h3")).unwrap();
    close(heads.parts.unwrap(), by_hand(&row, q + 1));
    // the first answer token's query is the question's last position: no answer part
    assert_eq!(zero.answer, 0.0);
}

#[test]
fn relevancy_parts_are_the_prepared_decoder_row_before_the_query() {
    let s = two_turns(true);
    let t = 3;
    let q = s.query_position(t);
    let row = prepare_row(
        s.relevancy_llm.as_ref().unwrap().row(&[t]),
        q,
        Normalization::SelfRemoved,
    );
    for name in [
        "relevancy.decoder",
        "relevancy.combined",
        "relevancy.vision",
    ] {
        let e = explain(&s, &[t], &id(name)).unwrap();
        close(e.parts.unwrap(), by_hand(&row, q));
    }
}

#[test]
fn causal_parts_are_the_map_values_and_random_has_none() {
    let s = two_turns(false);
    let options = Options {
        seed: None,
        compute_causal: true,
    };
    let e = explain_with(&s, &[1], &id("causal"), options).unwrap();
    let parts = e.parts.unwrap();
    assert!((parts.image - e.cells().iter().sum::<f32>()).abs() < 1e-6);
    let text: f32 = e.text.values().sum();
    assert!((parts.total() - parts.image - text).abs() < 1e-5);
    for (&p, &v) in &e.text {
        let part = TurnParts::of(&s).part(p);
        assert!(v <= parts.get(part) + 1e-6, "position {p}");
    }
    assert_eq!(explain(&s, &[1], &MapId::Random).unwrap().parts, None);
}

#[test]
fn a_single_turn_session_has_no_earlier_parts() {
    let s = tiny(false);
    let parts = explain(&s, &[2], &id("attention.l1.mean"))
        .unwrap()
        .parts
        .unwrap();
    assert_eq!((parts.earlier_answers, parts.earlier_questions), (0.0, 0.0));
    assert!(parts.question > 0.0 && !TurnParts::of(&s).has_history());
    assert!(TurnParts::of(&two_turns(false)).has_history());
}
