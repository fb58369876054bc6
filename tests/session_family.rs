//! The session manifest names the model's families; files written before families existed
//! still open.

use lvlmscope::session::{ModelFamily, ModelInfo};

const OLD: &str = r#"{"path":"llava-hf/llava-1.5-7b-hf","architecture":"LlavaForConditionalGeneration",
"text_layers":32,"text_heads":32,"vision_layers":24,"vision_heads":16,"image_grid":[24,24]}"#;

#[test]
fn family_is_written_and_read() {
    let mut info: ModelInfo = serde_json::from_str(OLD).unwrap();
    assert_eq!(info.family, None, "a schema-1 file without family opens");
    info.family = Some(ModelFamily {
        decoder: "gemma".into(),
        vision: "clip".into(),
    });
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(
        json["family"],
        serde_json::json!({"decoder": "gemma", "vision": "clip"})
    );
    let back: ModelInfo = serde_json::from_value(json).unwrap();
    assert_eq!(back, info);
    assert_eq!(back.family.unwrap().to_string(), "gemma + clip");
}

#[test]
fn no_family_writes_no_key() {
    let info: ModelInfo = serde_json::from_str(OLD).unwrap();
    let json = serde_json::to_value(&info).unwrap();
    assert!(json.get("family").is_none(), "{json}");
}

#[test]
fn header_shows_the_family() {
    use lvlmscope::session::synthetic::{synthetic_session, SyntheticSpec};
    use lvlmscope::style::{ColorMode, Look, Theme};
    use lvlmscope::tui::{draw, App};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    let header = |family: Option<ModelFamily>| {
        let mut s = synthetic_session(&SyntheticSpec::tiny());
        s.manifest.model.family = family;
        let app = App::with_session(Look::new(Theme::dark(), ColorMode::NoColor), s, None);
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| draw(f, &app)).unwrap();
        let buf = t.backend().buffer();
        (0..120)
            .map(|x| buf[(x, 0)].symbol().to_string())
            .collect::<String>()
    };
    let with = header(Some(ModelFamily {
        decoder: "qwen2".into(),
        vision: "siglip".into(),
    }));
    assert!(
        with.contains("(LlavaForConditionalGeneration, qwen2 + siglip, 4×4"),
        "{with}"
    );
    let without = header(None);
    assert!(
        without.contains("(LlavaForConditionalGeneration, 4×4"),
        "{without}"
    );
}

#[test]
fn run_records_the_family() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (model, decoder, vision) in [
        ("tiny-llava-gqa", "llama", "clip"),
        ("tiny-llava-gemma", "gemma", "clip"),
        ("tiny-llava-mistral", "mistral", "clip"),
        ("tiny-llava-qwen2-siglip", "qwen2", "siglip"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let save = tmp.path().join("s.session");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lvlmscope"))
            .args(["run", "--model"])
            .arg(fixtures.join(model))
            .arg("--image")
            .arg(fixtures.join("image.png"))
            .args([
                "--prompt",
                "What is in the picture?",
                "--max-new-tokens",
                "2",
            ])
            .arg("--save")
            .arg(&save)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = lvlmscope::session::load(&save).unwrap();
        assert_eq!(
            s.manifest.model.family,
            Some(ModelFamily {
                decoder: decoder.into(),
                vision: vision.into(),
            }),
            "{model}"
        );
    }
}
