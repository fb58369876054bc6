//! The benchmark's pure metrics: patch coverage of a mask, the pointing game, mass in mask,
//! deletion-curve areas and patch orders, on hand-made cases and with proptests.

use lvlmscope::demo::Mask;
use lvlmscope::eval::metrics::{
    map_argmax, mass_in_mask, patch_coverage, pointing_hit, pointing_tolerance,
    pointing_tolerance_in, region_coverage, target_patches, zhang_tolerance,
};
use lvlmscope::explain::faithfulness::{curve_area, fraction_ks, patch_order};
use lvlmscope::session::{ImageRegion, RegionKind};
use proptest::prelude::*;

/// A `size × size` mask made of whole patches of a `grid × grid` split.
fn patch_mask(size: u32, grid: usize, patches: &[usize]) -> Mask {
    let mut m = Mask::new(size, size);
    let cell = size as usize / grid;
    for &p in patches {
        let (r, c) = (p / grid, p % grid);
        for y in r * cell..(r + 1) * cell {
            for x in c * cell..(c + 1) * cell {
                m.set(x as u32, y as u32, true);
            }
        }
    }
    m
}

#[test]
fn zhang_pointing_measures_from_the_top_patch_centre_to_the_object() {
    // A 16×16 image, 2×2 grid of 8-px patches; the top patch is patch 0, centre (4, 4).
    let map = [0.9, 0.1, 0.0, 0.0];
    let mut m = Mask::new(16, 16);
    // One object pixel covering x ∈ [7, 8), y ∈ [4, 5): 3 px right of the centre.
    m.set(7, 4, true);
    assert!(!pointing_tolerance(&map, &m, [2, 2], 2.9));
    assert!(pointing_tolerance(&map, &m, [2, 2], 3.0));
    // A pixel under the centre is at distance 0: a hit without tolerance.
    let mut on = Mask::new(16, 16);
    on.set(4, 4, true);
    assert!(pointing_tolerance(&map, &on, [2, 2], 0.0));
    // Diagonal: pixel [6,7)×[6,7) is √(2²+2²) = 2.83 px away.
    let mut diag = Mask::new(16, 16);
    diag.set(6, 6, true);
    assert!(!pointing_tolerance(&map, &diag, [2, 2], 2.8));
    assert!(pointing_tolerance(&map, &diag, [2, 2], 2.85));
    // A map that points nowhere misses, whatever the tolerance.
    assert!(!pointing_tolerance(&[0.0; 4], &on, [2, 2], 100.0));
    // 15 px at a 500-px image is 3 % of the long side.
    assert!((zhang_tolerance(64) - 1.92).abs() < 1e-9);
    assert!((zhang_tolerance(500) - 15.0).abs() < 1e-9);
}

#[test]
fn zhang_pointing_lies_between_strict_and_any_distance() {
    // An object filling patch 3 of a 2×2 grid of a 16-px image: a map on patch 3 hits at
    // tolerance 0, a map on patch 0 (centre 5.66 px from the object's corner) hits only
    // from that distance on.
    let m = patch_mask(16, 2, &[3]);
    assert!(pointing_tolerance(&[0.0, 0.0, 0.0, 1.0], &m, [2, 2], 0.0));
    let far = [1.0, 0.0, 0.0, 0.0];
    assert!(!pointing_tolerance(&far, &m, [2, 2], 5.6));
    assert!(pointing_tolerance(&far, &m, [2, 2], 5.7));
}

#[test]
fn coverage_counts_the_share_of_each_patch() {
    let mut m = Mask::new(8, 8);
    // Patch 0 of a 2×2 grid (pixels 0..4 × 0..4): 8 of 16 pixels; patch 3: one pixel.
    for y in 0..2 {
        for x in 0..4 {
            m.set(x, y, true);
        }
    }
    m.set(7, 7, true);
    let cov = patch_coverage(&m, 2, 2);
    assert_eq!(cov, vec![0.5, 0.0, 0.0, 1.0 / 16.0]);
    assert_eq!(target_patches(&cov), vec![0]);
}

fn region(grid: [usize; 2], rect: [f64; 4]) -> ImageRegion {
    ImageRegion {
        kind: RegionKind::Image,
        span: [0, grid[0] * grid[1]],
        grid,
        rect,
        separators: vec![],
    }
}

#[test]
fn region_coverage_maps_the_mask_through_the_rectangle() {
    let mut m = Mask::new(8, 4);
    for x in 0..4 {
        m.set(x, 0, true);
    }
    m.set(5, 1, true);
    // the whole image as a 2x2 grid: the patch coverage
    let whole = region_coverage(&m, &[region([2, 2], [0.0, 0.0, 8.0, 4.0])], [8, 4]);
    assert_eq!(whole, patch_coverage(&m, 2, 2));
    assert_eq!(whole, vec![0.5, 0.125, 0.0, 0.0]);
    // the centred 4x4 square (a crop): columns 2..6
    let crop = region_coverage(&m, &[region([2, 2], [2.0, 0.0, 6.0, 4.0])], [8, 4]);
    assert_eq!(crop, vec![0.5, 0.25, 0.0, 0.0]);
    // the 8x8 square the image is padded to: the top row of cells is half outside the image
    let pad = region_coverage(&m, &[region([2, 2], [0.0, -2.0, 8.0, 6.0])], [8, 4]);
    assert_eq!(pad, vec![0.25, 0.0625, 0.0, 0.0]);
    // a mask at another resolution than the image's size
    let half = region_coverage(&m, &[region([2, 2], [0.0, 0.0, 16.0, 8.0])], [16, 8]);
    assert_eq!(half, whole);
    // two regions: their cells one after the other
    let both = region_coverage(
        &m,
        &[
            region([1, 1], [0.0, 0.0, 8.0, 4.0]),
            region([2, 2], [0.0, 0.0, 8.0, 4.0]),
        ],
        [8, 4],
    );
    assert_eq!(both, vec![0.15625, 0.5, 0.125, 0.0, 0.0]);
}

#[test]
fn zhang_pointing_on_a_region_measures_from_its_cell_rectangle() {
    // One object pixel [48, 49) × [32, 33) of a 64×64 image.
    let mut m = Mask::new(64, 64);
    m.set(48, 32, true);
    // A 1×1 grid over the right half: its cell's centre (48, 32) is on the object.
    let right = region([1, 1], [32.0, 0.0, 64.0, 64.0]);
    assert!(pointing_tolerance_in(&[1.0], &m, &right, [64, 64], 0.0));
    // Over the whole image the centre is (32, 32), 16 px from the pixel.
    assert!(!pointing_tolerance(&[1.0], &m, [1, 1], 15.9));
    assert!(pointing_tolerance(&[1.0], &m, [1, 1], 16.0));
    // The region's rectangle is in the image's pixels: a mask at half the resolution scales it.
    let mut half = Mask::new(32, 32);
    half.set(24, 16, true);
    assert!(pointing_tolerance_in(&[1.0], &half, &right, [64, 64], 0.0));
    // A map that points nowhere misses.
    assert!(!pointing_tolerance_in(&[0.0], &m, &right, [64, 64], 100.0));
}

#[test]
fn a_small_object_still_has_its_best_patch_as_target() {
    let mut m = Mask::new(8, 8);
    m.set(5, 1, true);
    m.set(6, 1, true);
    m.set(1, 6, true);
    let cov = patch_coverage(&m, 2, 2);
    assert_eq!(target_patches(&cov), vec![1]);
    assert!(pointing_hit(&[0.0, 0.9, 0.1, 0.0], &cov));
    assert!(!pointing_hit(&[0.0, 0.1, 0.9, 0.0], &cov));
    assert!(target_patches(&[0.0; 4]).is_empty());
}

#[test]
fn argmax_takes_the_first_maximum_and_flat_maps_point_nowhere() {
    assert_eq!(map_argmax(&[0.1, 0.3, 0.3, 0.2]), Some(1));
    assert_eq!(map_argmax(&[0.0, 0.0]), None);
    assert_eq!(map_argmax(&[-1.0, f32::NAN]), None);
    assert_eq!(map_argmax(&[f32::NAN, 0.5]), Some(1));
    let cov = [1.0, 0.0];
    assert!(!pointing_hit(&[0.0, 0.0], &cov), "a zero map must miss");
}

#[test]
fn mass_in_mask_weights_by_coverage_and_ignores_negatives() {
    let cov = [1.0, 0.5, 0.0, 0.0];
    assert!((mass_in_mask(&[1.0, 1.0, 1.0, 1.0], &cov) - 0.375).abs() < 1e-6);
    assert!((mass_in_mask(&[1.0, 0.0, -5.0, 0.0], &cov) - 1.0).abs() < 1e-6);
    assert_eq!(mass_in_mask(&[0.0; 4], &cov), 0.0);
    assert_eq!(mass_in_mask(&[-1.0; 4], &cov), 0.0);
}

#[test]
fn patch_order_breaks_ties_by_index_and_puts_nan_last() {
    assert_eq!(patch_order(&[0.2, 0.5, 0.2, 0.5]), vec![1, 3, 0, 2]);
    assert_eq!(patch_order(&[f32::NAN, 0.0, -1.0]), vec![1, 2, 0]);
    assert_eq!(patch_order(&[0.0; 3]), vec![0, 1, 2]);
}

#[test]
fn curve_area_is_the_normalised_trapezoid() {
    // Linear fall from 1 to 0 over all patches: area 1/2.
    assert!((curve_area(&[0, 2, 4], &[1.0, 0.5, 0.0], 4) - 0.5).abs() < 1e-6);
    // Constant curve: its value, whatever the spacing.
    assert!((curve_area(&[0, 1, 4], &[0.3, 0.3, 0.3], 4) - 0.3).abs() < 1e-6);
    // A step that drops at once is better (smaller) than one that drops late.
    let early = curve_area(&[0, 1, 4], &[1.0, 0.0, 0.0], 4);
    let late = curve_area(&[0, 3, 4], &[1.0, 1.0, 0.0], 4);
    assert!(early < late);
    // Partial curves are normalised by the span they cover.
    assert!((curve_area(&[0, 2], &[1.0, 0.0], 4) - 0.5).abs() < 1e-6);
    assert_eq!(curve_area(&[], &[], 4), 0.0);
    assert!((curve_area(&[3], &[0.7], 4) - 0.7).abs() < 1e-6);
}

#[test]
fn fraction_ks_span_the_grid() {
    assert_eq!(
        fraction_ks(64, 10),
        vec![0, 6, 13, 19, 26, 32, 38, 45, 51, 58, 64]
    );
    assert_eq!(fraction_ks(4, 8), vec![0, 1, 2, 3, 4]);
    assert_eq!(fraction_ks(0, 3), vec![0]);
}

fn grid_and_patches() -> impl Strategy<Value = (usize, Vec<usize>)> {
    (1usize..=8).prop_flat_map(|g| {
        let n = g * g;
        (Just(g), proptest::collection::btree_set(0..n, 1..=n))
            .prop_map(|(g, s)| (g, s.into_iter().collect()))
    })
}

proptest! {
    #[test]
    fn metrics_stay_in_the_unit_interval(
        pixels in proptest::collection::vec(any::<bool>(), 64),
        map in proptest::collection::vec(-1.0f32..1.0, 16),
    ) {
        let mut m = Mask::new(8, 8);
        for (i, &b) in pixels.iter().enumerate() {
            m.set((i % 8) as u32, (i / 8) as u32, b);
        }
        let cov = patch_coverage(&m, 4, 4);
        prop_assert!(cov.iter().all(|c| (0.0..=1.0).contains(c)));
        let mass = mass_in_mask(&map, &cov);
        prop_assert!((0.0..=1.0).contains(&mass));
        // No map puts more mass on the object than the best-covered patch holds.
        let best = cov.iter().copied().fold(0.0, f32::max);
        prop_assert!(mass <= best + 1e-6);
        let targets = target_patches(&cov);
        prop_assert_eq!(targets.is_empty(), m.count() == 0);
    }

    #[test]
    fn a_map_equal_to_a_patch_aligned_mask_scores_one((g, patches) in grid_and_patches()) {
        let mask = patch_mask(8 * g as u32, g, &patches);
        let cov = patch_coverage(&mask, g, g);
        let map: Vec<f32> = cov.clone();
        prop_assert!(pointing_hit(&map, &cov));
        prop_assert!((mass_in_mask(&map, &cov) - 1.0).abs() < 1e-6);
        prop_assert_eq!(target_patches(&cov), patches);
    }

    #[test]
    fn a_map_on_the_best_patch_reaches_the_largest_mass(
        pixels in proptest::collection::vec(any::<bool>(), 64),
    ) {
        let mut m = Mask::new(8, 8);
        for (i, &b) in pixels.iter().enumerate() {
            m.set((i % 8) as u32, (i / 8) as u32, b);
        }
        prop_assume!(m.count() > 0);
        let cov = patch_coverage(&m, 2, 2);
        let best = cov.iter().copied().fold(0.0, f32::max);
        let top = cov.iter().position(|&c| c == best).unwrap();
        let mut map = vec![0.0; 4];
        map[top] = 1.0;
        prop_assert!(pointing_hit(&map, &cov));
        prop_assert!((mass_in_mask(&map, &cov) - best).abs() < 1e-6);
    }

    #[test]
    fn curve_areas_of_probabilities_stay_in_the_unit_interval(
        probs in proptest::collection::vec(0.0f32..=1.0, 1..12),
        patches in 1usize..100,
    ) {
        let ks = fraction_ks(patches, probs.len() - 1);
        let n = ks.len().min(probs.len());
        let a = curve_area(&ks[..n], &probs[..n], patches);
        prop_assert!((0.0..=1.0 + 1e-6).contains(&a));
    }

    #[test]
    fn zhang_pointing_on_a_whole_image_region_is_the_grid_game(
        (g, patches) in grid_and_patches(),
        top in 0usize..64,
        tolerance in 0.0f64..20.0,
    ) {
        let size = 48u32;
        let m = patch_mask(size, g, &patches);
        let mut map = vec![0.0f32; g * g];
        map[top % (g * g)] = 1.0;
        let whole = region([g, g], [0.0, 0.0, size as f64, size as f64]);
        prop_assert_eq!(
            pointing_tolerance_in(&map, &m, &whole, [size, size], tolerance),
            pointing_tolerance(&map, &m, [g, g], tolerance)
        );
    }

    #[test]
    fn patch_order_is_a_permutation_sorted_by_value(map in proptest::collection::vec(0.0f32..1.0, 0..40)) {
        let order = patch_order(&map);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..map.len()).collect::<Vec<_>>());
        for w in order.windows(2) {
            let (a, b) = (w[0], w[1]);
            prop_assert!(map[a] > map[b] || (map[a] == map[b] && a < b));
        }
    }
}
