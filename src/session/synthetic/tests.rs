use super::*;
use crate::session::RegionKind;

#[test]
fn rows_are_causal_softmax_and_deterministic() {
    let spec = SyntheticSpec::tiny();
    let s = synthetic_session(&spec);
    assert_eq!(s, synthetic_session(&spec));
    let gen = s.attn_gen.as_ref().expect("attn.gen");
    let n = s.num_input();
    for t in 0..s.num_output() {
        for l in 0..spec.layers {
            for h in 0..spec.heads {
                let row = gen.row(&[t, l, h]);
                let q = n - 1 + t;
                let sum: f32 = row[..=q].iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "row sums to {sum}");
                assert!(row[q + 1..].iter().all(|&v| v == 0.0));
                assert!(row[0] > row[1], "position 0 is a sink");
            }
        }
    }
    let full = &s.attn_full[&(spec.layers - 1)];
    for t in 0..s.num_output() {
        for h in 0..spec.heads {
            assert_eq!(full.row(&[h, n - 1 + t]), gen.row(&[t, spec.layers - 1, h]));
        }
    }
}

#[test]
fn anyres_spec_gives_two_regions_a_file_accepts() {
    let s = synthetic_session(&SyntheticSpec::anyres_tiny());
    let regions = s.regions();
    let [base, hi] = &regions[..] else {
        panic!("{} regions", regions.len())
    };
    assert_eq!((base.kind, base.grid), (RegionKind::Base, [4, 4]));
    assert_eq!((hi.kind, hi.grid), (RegionKind::Highres, [6, 8]));
    assert_eq!(hi.separators.len(), 6);
    assert_eq!(s.manifest.image_span, [3, 16 + 6 * 9]);
    assert_eq!(s.manifest.image.original_size, [32, 24]);
    let cells = s.cell_positions();
    assert_eq!(cells.len(), 16 + 48);
    assert!(hi.separators.iter().all(|p| !cells.contains(p)));
    assert_eq!(hi.separators[0], 3 + 16 + 8);
    assert_eq!(s.relevancy_vit.as_ref().unwrap().shape, vec![5, 64]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anyres.session");
    crate::session::save(&s, &file, crate::session::AttentionDtype::F32).unwrap();
    assert_eq!(crate::session::load(&file).unwrap(), s);
}

#[test]
fn llava_shape_matches_the_spec() {
    let mut spec = SyntheticSpec::llava_7b();
    spec.layers = 2;
    let s = synthetic_session(&spec);
    assert_eq!(s.num_input(), 621);
    assert_eq!(s.num_positions(), 652);
    assert_eq!(s.pixel_values.shape, vec![3, 336, 336]);
    assert_eq!(s.image_range(), 5..581);
}
