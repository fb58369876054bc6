use super::*;
use crate::session::synthetic::{synthetic_session, SyntheticSpec};

fn tiny() -> Session {
    synthetic_session(&SyntheticSpec::tiny())
}

#[test]
fn head_map_is_the_raw_row_over_the_patches() {
    let s = tiny();
    let a = s.attn_gen.as_ref().unwrap();
    let g = image_map(&s, 2, 1, HeadAgg::Head(3)).unwrap();
    assert_eq!((g.rows, g.cols), (4, 4));
    for p in 0..16 {
        assert_eq!(g.values[p], a.get(&[2, 1, 3, 3 + p]));
    }
}

#[test]
fn mean_and_max_combine_heads() {
    let s = tiny();
    let heads: Vec<Grid> = (0..4)
        .map(|h| image_map(&s, 0, 2, HeadAgg::Head(h)).unwrap())
        .collect();
    let mean = image_map(&s, 0, 2, HeadAgg::Mean).unwrap();
    let max = image_map(&s, 0, 2, HeadAgg::Max).unwrap();
    for p in 0..16 {
        let m: f32 = heads.iter().map(|g| g.values[p]).sum::<f32>() / 4.0;
        assert!((mean.values[p] - m).abs() < 1e-7);
        let x = heads.iter().map(|g| g.values[p]).fold(f32::MIN, f32::max);
        assert_eq!(max.values[p], x);
    }
}

#[test]
fn several_tokens_average_their_maps() {
    let s = tiny();
    let a = image_map(&s, 1, 0, HeadAgg::Mean).unwrap();
    let b = image_map(&s, 3, 0, HeadAgg::Mean).unwrap();
    let ab = tokens_image_map(&s, &[1, 3], 0, HeadAgg::Mean).unwrap();
    for p in 0..16 {
        assert!((ab.values[p] - (a.values[p] + b.values[p]) / 2.0).abs() < 1e-7);
    }
    assert_eq!(
        tokens_image_map(&s, &[], 0, HeadAgg::Mean),
        Err(AttentionError::NoTokens)
    );
}

#[test]
fn region_maps_read_the_region_cells_and_agree_with_the_whole_image() {
    let s = tiny();
    let one = &s.regions()[0];
    assert_eq!(
        tokens_region_map(&s, &[0, 2], 1, HeadAgg::Mean, one).unwrap(),
        tokens_image_map(&s, &[0, 2], 1, HeadAgg::Mean).unwrap()
    );
    assert_eq!(
        heads_by_region_attention(&s, &[1], 3, one).unwrap(),
        heads_by_image_attention(&s, &[1], 3).unwrap()
    );
    let s = synthetic_session(&SyntheticSpec::anyres_tiny());
    let a = s.attn_gen.as_ref().unwrap();
    let hi = s.regions()[1].clone();
    let g = tokens_region_map(&s, &[2], 1, HeadAgg::Head(3), &hi).unwrap();
    assert_eq!((g.rows, g.cols), (6, 8));
    for (i, &p) in hi.cell_positions().iter().enumerate() {
        assert_eq!(g.values[i], a.get(&[2, 1, 3, p]));
    }
    let heads = heads_by_region_attention(&s, &[0, 1], 2, &hi).unwrap();
    assert_eq!(heads.len(), 4);
    assert!(heads.windows(2).all(|w| w[0].1 >= w[1].1));
    assert!(heads.iter().all(|(_, _, g)| g.values.len() == 48));
}

#[test]
fn heads_are_sorted_by_mean_image_attention() {
    let s = tiny();
    let sorted = heads_by_image_attention(&s, &[0, 1], 2).unwrap();
    assert_eq!(sorted.len(), 4);
    for w in sorted.windows(2) {
        assert!(w[0].1 >= w[1].1);
    }
    for (h, m, g) in &sorted {
        let direct = tokens_image_map(&s, &[0, 1], 2, HeadAgg::Head(*h)).unwrap();
        assert_eq!(&direct, g);
        assert!((direct.mean() - m).abs() < 1e-7);
    }
}

#[test]
fn cached_aggregates_match_direct_computation() {
    let s = tiny();
    let agg = TokenAggregates::compute(&s).unwrap();
    for region in [Region::Image, Region::Question] {
        let direct = heads_layers_grid(&s, &[0, 2, 4], region).unwrap();
        let cached = agg.heads_layers(&[0, 2, 4], region);
        assert_eq!(direct.shape, vec![4, 4]);
        for (x, y) in direct.data.iter().zip(&cached.data) {
            assert!((x - y).abs() < 1e-6);
        }
    }
    for t in 0..5 {
        let share = image_share(&s, t, None).unwrap();
        assert!((share - agg.image_share(t, None)).abs() < 1e-5);
        assert!(share > 0.0 && share < 1.0);
        assert!((image_share(&s, t, Some(1)).unwrap() - agg.image_share(t, Some(1))).abs() < 1e-5);
    }
    let q = region_mean(&s, 1, 2, 3, Region::Question).unwrap();
    let row = attention_row(&s, 1, 2, 3).unwrap();
    assert!((q - row[19..25].iter().sum::<f32>() / 6.0).abs() < 1e-7);
}

#[test]
fn patch_reverse_view_sums_attention_to_the_selection() {
    let s = tiny();
    let per_token = patch_attention(&s, &[0, 5], 3, HeadAgg::Head(1)).unwrap();
    assert_eq!(per_token.len(), 5);
    for (t, v) in per_token.iter().enumerate() {
        let row = attention_row(&s, t, 3, 1).unwrap();
        assert!((v - (row[3] + row[8])).abs() < 1e-7);
    }
    let heads = patch_head_means(&s, &[0, 5], 3).unwrap();
    let h1: f32 = per_token.iter().sum::<f32>() / 5.0;
    assert!((heads[1] - h1).abs() < 1e-6);
    assert_eq!(
        patch_attention(&s, &[16], 0, HeadAgg::Mean),
        Err(AttentionError::Patch(16, 16))
    );
}

#[test]
fn words_merge_sub_word_pieces() {
    let s = tiny();
    let words = prompt_words(&s);
    let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(texts, ["<s>", "USER:", "What", "ASSISTANT:"]);
    assert_eq!(words[3].positions, vec![20, 21, 22, 23, 24]);
    let wa = word_attention(&s, &[0], 0, HeadAgg::Mean).unwrap();
    let row = combined_row(&s, 0, 0, HeadAgg::Mean).unwrap();
    assert!((wa[1].1 - (row[1] + row[2])).abs() < 1e-7);
}

#[test]
fn out_of_range_inputs_are_errors_not_panics() {
    let s = tiny();
    assert_eq!(
        image_map(&s, 9, 0, HeadAgg::Mean),
        Err(AttentionError::Token(9, 5))
    );
    assert_eq!(
        image_map(&s, 0, 4, HeadAgg::Mean),
        Err(AttentionError::Layer(4, 4))
    );
    assert_eq!(
        image_map(&s, 0, 0, HeadAgg::Head(4)),
        Err(AttentionError::Head(4, 4))
    );
    let mut none = s.clone();
    none.attn_gen = None;
    assert_eq!(
        image_share(&none, 0, None),
        Err(AttentionError::NoAttention)
    );
}
