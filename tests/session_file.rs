//! The session file: round trip, atomic save, and clear errors for broken files.

use std::collections::BTreeMap;

use lvlmscope::session::{
    self, Array, AttentionDtype, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session,
    SessionError, TokenStrings, SCHEMA,
};

/// A small, fully populated session: N = 6 inputs (image span [1, 4]), T = 3 outputs, L = 2, H = 2.
fn small_session() -> Session {
    let (n, t, l, h) = (6usize, 3usize, 2usize, 2usize);
    let s = n + t - 1;
    let mut gen = Array::zeros(&[t, l, h, s]);
    for ti in 0..t {
        for li in 0..l {
            for hi in 0..h {
                let q = n - 1 + ti;
                let row = gen.row_mut(&[ti, li, hi]);
                for (k, v) in row.iter_mut().enumerate().take(q + 1) {
                    *v = (1 + k + li + hi) as f32 / 100.0;
                }
            }
        }
    }
    let mut full = Array::zeros(&[h, s, s]);
    for (i, v) in full.data.iter_mut().enumerate() {
        *v = (i % 7) as f32 * 0.125;
    }
    Session {
        manifest: Manifest {
            schema: SCHEMA.into(),
            model: ModelInfo {
                path: "tests/fixtures/tiny-llava-gqa".into(),
                architecture: "LlavaForConditionalGeneration".into(),
                text_layers: l,
                text_heads: h,
                vision_layers: 1,
                vision_heads: 1,
                image_grid: [2, 2],
                family: None,
            },
            prompt: "What is it?".into(),
            image: ImageInfo {
                path: "image.png".into(),
                mode: "default".into(),
                original_size: [48, 36],
            },
            generation: GenerationInfo {
                max_new_tokens: 3,
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                dtype: None,
                device: None,
            },
            tokens: TokenStrings {
                input: ["<s>", "<image>", "<image>", "<image>", "<image>", "▁What"]
                    .map(String::from)
                    .to_vec(),
                output: ["▁a", "▁cat", "</s>"].map(String::from).to_vec(),
            },
            image_span: [1, 4],
            regions: Vec::new(),
            relevancy_tokens: vec![1],
            causal: None,
            timings: BTreeMap::from([("prefill".to_string(), 0.5)]),
            lens: Vec::new(),
            turns: Vec::new(),
            vision_attention: None,
        },
        input_ids: vec![1, 3, 3, 3, 3, 40],
        output_ids: vec![7, 8, 2],
        pixel_values: Array::new(vec![3, 2, 2], (0..12).map(|i| i as f32 - 6.0).collect())
            .expect("shape matches"),
        attn_gen: Some(gen),
        attn_full: BTreeMap::from([(l - 1, full)]),
        attn_vit: None,
        relevancy_llm: Some(Array::zeros(&[t, s])),
        relevancy_vit: Some(Array::zeros(&[t, 4])),
        relevancy_combined: None,
        turns: Vec::new(),
    }
}

#[test]
fn f32_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    let original = small_session();
    session::save(&original, &path, AttentionDtype::F32).unwrap();
    let loaded = session::load(&path).unwrap();
    assert_eq!(loaded, original);
}

#[test]
fn f16_attention_is_within_half_precision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    let original = small_session();
    session::save(&original, &path, AttentionDtype::F16).unwrap();
    let loaded = session::load(&path).unwrap();
    let (a, b) = (original.attn_gen.unwrap(), loaded.attn_gen.unwrap());
    assert_eq!(a.shape, b.shape);
    let worst = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "f16 error {worst}");
    assert_eq!(
        loaded.pixel_values, original.pixel_values,
        "pixels stay f32"
    );
    assert_eq!(loaded.manifest, original.manifest);
}

#[test]
fn save_leaves_no_temporary_file_and_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    std::fs::write(&path, b"old contents").unwrap();
    session::save(&small_session(), &path, AttentionDtype::F16).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["a.session".to_string()]);
    assert!(session::load(&path).is_ok());
}

#[test]
fn truncated_file_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    session::save(&small_session(), &path, AttentionDtype::F16).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = session::load(&path).unwrap_err();
    assert!(matches!(err, SessionError::Format { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    let mut s = small_session();
    s.manifest.schema = "lvlmscope.session/99".into();
    session::save(&s, &path, AttentionDtype::F16).unwrap();
    let err = session::load(&path).unwrap_err();
    assert!(matches!(err, SessionError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("lvlmscope.session/99"), "{err}");
}

#[test]
fn a_plain_safetensors_file_is_not_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    let data = [0u8; 8];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data)
        .expect("valid view");
    let bytes = safetensors::serialize([("w", view)], None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let err = session::load(&path).unwrap_err();
    assert!(err.to_string().contains("no lvlmscope manifest"), "{err}");
}

#[test]
fn inconsistent_shapes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    let mut s = small_session();
    s.manifest.model.text_layers = 5;
    session::save(&s, &path, AttentionDtype::F16).unwrap();
    let err = session::load(&path).unwrap_err();
    assert!(err.to_string().contains("attn.gen has shape"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = session::load(std::path::Path::new("/nonexistent/x.session")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.session"), "{err}");
}

#[test]
fn an_absurd_image_grid_is_refused_before_anything_is_sized_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absurd.session");
    for grid in [[100_000, 100_000], [1 << 40, 1 << 40], [3, 3]] {
        let mut s = small_session();
        s.manifest.model.image_grid = grid;
        session::save(&s, &path, AttentionDtype::F16).unwrap();
        let err = session::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SessionError::Schema { .. }), "{msg}");
        assert!(
            msg.contains(&format!("{}x{} image grid", grid[0], grid[1]))
                && msg.contains("4 positions"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
    }
    // The app says the same sentence in its status line; the report refuses the file.
    let look = lvlmscope::style::Look::new(
        lvlmscope::style::Theme::dark(),
        lvlmscope::style::ColorMode::NoColor,
    );
    let mut s = small_session();
    s.manifest.model.image_grid = [100_000, 100_000];
    session::save(&s, &path, AttentionDtype::F16).unwrap();
    let opts = lvlmscope::tui::TuiOptions {
        session: Some(path.clone()),
        ..Default::default()
    };
    let (app, _) = lvlmscope::tui::initial_app(&opts, look);
    assert!(app.doc.session.is_none());
    let notice = app.status.notice().cloned().expect("a notice");
    assert!(notice.error && notice.text.contains("100000x100000 image grid"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
        .args(["report", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("100000x100000 image grid") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn sizes_no_tensor_holds_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.session");
    let mut s = small_session();
    s.attn_gen = None;
    s.attn_full.clear();
    s.manifest.model.text_heads = 1 << 30;
    session::save(&s, &path, AttentionDtype::F16).unwrap();
    let err = session::load(&path).unwrap_err().to_string();
    assert!(err.contains("text_heads"), "{err}");
    let mut s = small_session();
    s.manifest.image_span = [usize::MAX, 2];
    session::save(&s, &path, AttentionDtype::F16).unwrap();
    let err = session::load(&path).unwrap_err().to_string();
    assert!(err.contains("lies outside"), "{err}");
    let mut s = small_session();
    s.relevancy_vit = Some(Array::zeros(&[3, 9]));
    session::save(&s, &path, AttentionDtype::F16).unwrap();
    let err = session::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("relevancy.vit has shape [3, 9], expected [3, 4]"),
        "{err}"
    );
}
