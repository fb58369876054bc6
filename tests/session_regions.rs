//! Session schema 2: image regions. Schema 1 files still open, schema 2 files round-trip, every
//! kind of lie about the regions is refused with one sentence, and no manifest mutation panics
//! the loader (or the catalogue on what the loader accepts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lvlmscope::explain::{catalogue, faithfulness};
use lvlmscope::session::{
    self, AttentionDtype, ImageRegion, RegionKind, Session, SessionError, SCHEMA,
};
use proptest::prelude::*;
use safetensors::SafeTensors;

/// The committed schema 1 file (`tools/make_session_schema1.py`): N = 6, image span [1, 4],
/// grid 2x2, image 48x36 in `default` mode, T = 3.
fn schema1_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/session-schema1.safetensors")
}

fn schema1() -> Session {
    session::load(&schema1_path()).expect("the schema 1 fixture opens")
}

/// The fixture as a two-region session: a 1x1 base view, then a 1x2 high-resolution grid
/// whose row ends in a separator.
fn two_regions() -> Session {
    let mut s = schema1();
    s.manifest.schema = SCHEMA.into();
    s.manifest.model.image_grid = [1, 1];
    s.manifest.regions = vec![
        ImageRegion {
            kind: RegionKind::Base,
            span: [1, 1],
            grid: [1, 1],
            rect: [0.0, 0.0, 48.0, 36.0],
            separators: vec![],
        },
        ImageRegion {
            kind: RegionKind::Highres,
            span: [2, 3],
            grid: [1, 2],
            rect: [0.0, 0.0, 48.0, 36.0],
            separators: vec![4],
        },
    ];
    s
}

fn reload(s: &Session) -> Result<Session, SessionError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    session::save(s, &path, AttentionDtype::F32).unwrap();
    session::load(&path)
}

#[test]
fn a_schema1_file_opens_as_one_image_region() {
    let s = schema1();
    assert_eq!(s.manifest.schema, "lvlmscope.session/1");
    assert!(s.manifest.regions.is_empty());
    let regions = s.regions();
    assert_eq!(regions.len(), 1);
    let r = &regions[0];
    assert_eq!(r.kind, RegionKind::Image);
    assert_eq!((r.span, r.grid), ([1, 4], [2, 2]));
    // `default` mode of a 48x36 image: the centred 36x36 square.
    assert_eq!(r.rect, [6.0, 0.0, 42.0, 36.0]);
    assert_eq!(s.cell_positions(), vec![1, 2, 3, 4]);
}

#[test]
fn schema2_round_trips() {
    let s = two_regions();
    let back = reload(&s).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.cell_positions(), vec![1, 2, 3]);
    // the saved manifest is readable as plain JSON with the regions in it
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.session");
    session::save(&s, &path, AttentionDtype::F16).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["lvlmscope"]).unwrap();
    assert_eq!(json["schema"], "lvlmscope.session/2");
    assert_eq!(json["regions"][1]["kind"], "highres");
    assert_eq!(json["regions"][1]["separators"][0], 4);
}

#[test]
fn catalogue_maps_and_deletion_windows_cover_every_region() {
    let s = two_regions();
    let e = catalogue::explain(&s, &[1], &catalogue::MapId::Random).unwrap();
    let shapes: Vec<_> = e.regions.iter().map(|r| r.grid.values.len()).collect();
    assert_eq!(shapes, vec![1, 2], "separators are no cells");
    assert_eq!(e.cells().len(), 3);
    assert_eq!(e.grid, e.regions[0].grid);
    let a = catalogue::explain(&s, &[1], &"attention.last.mean".parse().unwrap()).unwrap();
    let gen = s.attn_gen.as_ref().unwrap();
    let want: Vec<f32> = [1, 2, 3]
        .iter()
        .map(|&p| (0..2).map(|h| gen.get(&[1, 1, h, p])).sum::<f32>() / 2.0)
        .collect();
    assert_eq!(
        a.cells(),
        want,
        "cells at positions 1, 2, 3; separator 4 skipped"
    );
    // the picture is 2x2: the base cell is all of it, the high-resolution cells its halves
    let windows = faithfulness::cell_windows(&s, 2, 2);
    assert_eq!(windows, vec![(0..2, 0..2), (0..2, 0..1), (0..2, 1..2)]);
}

#[test]
fn every_kind_of_lie_is_refused_with_one_sentence() {
    type Lie = fn(&mut Session);
    let lies: Vec<(&str, Lie, &str)> = vec![
        (
            "span past the input",
            |s| s.manifest.regions[1].span = [2, 30],
            "outside the 6 input positions",
        ),
        (
            "span outside image_span",
            |s| s.manifest.regions[0].span = [0, 1],
            "outside the image span",
        ),
        (
            "overlapping regions",
            |s| s.manifest.regions[1].span = [1, 3],
            "overlaps",
        ),
        (
            "grid bigger than the span",
            |s| s.manifest.regions[1].grid = [2, 2],
            "span holds 3 positions",
        ),
        (
            "absurd grid",
            |s| s.manifest.regions[1].grid = [1 << 40, 1 << 40],
            "span holds 3 positions",
        ),
        (
            "separator outside the span",
            |s| s.manifest.regions[1].separators = vec![5],
            "separators",
        ),
        (
            "rect outside the image",
            |s| s.manifest.regions[0].rect = [0.0, 0.0, 480.0, 36.0],
            "not inside the 48x36 image",
        ),
        (
            // JSON has no infinity: the manifest no longer parses (the region check refuses a
            // non-finite rectangle too, see session::regions' tests).
            "rect not finite",
            |s| s.manifest.regions[0].rect = [0.0, f64::INFINITY, 48.0, 36.0],
            "manifest is malformed",
        ),
        (
            "image_grid not the first region's",
            |s| s.manifest.model.image_grid = [2, 2],
            "first image region is 1x1",
        ),
        (
            "schema 1 with regions",
            |s| s.manifest.schema = "lvlmscope.session/1".into(),
            "lists image regions",
        ),
        (
            "relevancy table of the wrong width",
            |s| s.relevancy_vit = Some(session::Array::zeros(&[3, 4])),
            "relevancy.vit has shape [3, 4], expected [3, 3]",
        ),
    ];
    for (what, lie, words) in lies {
        let mut s = two_regions();
        lie(&mut s);
        let err = reload(&s).expect_err(what);
        let msg = err.to_string();
        assert!(matches!(err, SessionError::Schema { .. }), "{what}: {msg}");
        assert!(msg.contains(words), "{what}: {msg}");
        assert_eq!(msg.lines().count(), 1, "{what}: {msg}");
    }
}

/// The fixture's tensors with `manifest` as its manifest, as file bytes.
fn with_manifest(manifest: &str) -> Vec<u8> {
    let bytes = std::fs::read(schema1_path()).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<_> = st.tensors();
    let meta = HashMap::from([("lvlmscope".to_string(), manifest.to_string())]);
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// Every number of a JSON value, as paths of keys / indices.
fn number_paths(v: &serde_json::Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        serde_json::Value::Number(_) => out.push(at),
        serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
            let mut p = at.clone();
            p.push(i.to_string());
            number_paths(x, p, out)
        }),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            let mut p = at.clone();
            p.push(k.clone());
            number_paths(x, p, out)
        }),
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut serde_json::Value, path: &[String]) -> &'a mut serde_json::Value {
    path.iter().fold(v, |v, k| match v {
        serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

fn base_manifest() -> serde_json::Value {
    serde_json::to_value(&two_regions().manifest).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any number of the manifest set to any value (huge, zero, negative, fractional), or any
    /// key removed: the loader answers Ok or one sentence, never a panic, and the catalogue
    /// answers on whatever it accepts.
    #[test]
    fn no_manifest_mutation_panics_the_loader(
        pick in any::<prop::sample::Index>(),
        value in prop_oneof![
            Just(serde_json::json!(0)),
            Just(serde_json::json!(1)),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(1.5)),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::json!(1u64 << 32)),
            (0u64..64).prop_map(|x| serde_json::json!(x)),
            Just(serde_json::Value::Null),
        ],
        remove in any::<bool>(),
        schema1 in any::<bool>(),
    ) {
        let mut m = base_manifest();
        if schema1 {
            m["schema"] = "lvlmscope.session/1".into();
            m.as_object_mut().unwrap().remove("regions");
            m["model"]["image_grid"] = serde_json::json!([2, 2]);
        }
        let mut paths = Vec::new();
        number_paths(&m, Vec::new(), &mut paths);
        let path = pick.get(&paths).clone();
        if remove && path.len() > 1 {
            let (last, parent) = path.split_last().unwrap();
            match at_path(&mut m, parent) {
                serde_json::Value::Object(o) => { o.remove(last); }
                serde_json::Value::Array(a) => { a.remove(last.parse::<usize>().unwrap()); }
                _ => {}
            }
        } else {
            *at_path(&mut m, &path) = value;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.session");
        std::fs::write(&file, with_manifest(&m.to_string())).unwrap();
        match session::load(&file) {
            Ok(s) => {
                for id in ["attention.last.mean", "random", "attention.layers.max"] {
                    let _ = catalogue::explain(&s, &[0], &id.parse().unwrap());
                }
            }
            Err(e) => prop_assert_eq!(e.to_string().lines().count(), 1),
        }
    }
}
