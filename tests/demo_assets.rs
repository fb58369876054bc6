//! The embedded demo assets: scenes parse and agree with their masks, the model folder is
//! written to a cache once and atomically, and the embedded tokenizer reproduces the prompt ids
//! transformers built for each demo question.

use lvlmscope::demo::cache::{content_hash, materialise, EmbeddedFile};
use lvlmscope::demo::{demo_model_dir, demo_scenes, Color, QuestionKind, DEMO_MODEL_FILES};

fn decode(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png)
        .expect("embedded PNG decodes")
        .to_rgb8()
}

#[test]
fn demo_scenes_parse_and_masks_cover_one_coloured_object() {
    let scenes = demo_scenes();
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(lvlmscope::demo::DEMO_SCENE_FILES[0].1).expect("scenes.json");
    assert_eq!(scenes.len(), listed.len(), "every listed scene loads");
    assert!(scenes.len() >= 5);
    for kind in [QuestionKind::Color, QuestionKind::Shape] {
        assert!(
            scenes.iter().any(|s| s.kind == kind),
            "a {kind:?} scene is shipped"
        );
    }
    for s in &scenes {
        let img = decode(s.png);
        assert_eq!(img.dimensions(), (64, 64), "{}", s.name);
        assert_eq!(s.object.is_some(), s.target_mask.is_some(), "{}", s.name);
        let Some(mask) = &s.target_mask else { continue };
        assert_eq!((mask.width(), mask.height()), (64, 64));
        assert!(mask.count() > 20, "{}", s.name);
        // Every target pixel shows one object colour, which is bright (not background).
        let colours: std::collections::HashSet<[u8; 3]> = (0..64u32)
            .flat_map(|y| (0..64u32).map(move |x| (x, y)))
            .filter(|&(x, y)| mask.get(x, y))
            .map(|(x, y)| img.get_pixel(x, y).0)
            .collect();
        assert_eq!(
            colours.len(),
            1,
            "{}: target pixels share one colour",
            s.name
        );
        let rgb = *colours.iter().next().expect("one colour");
        assert!(rgb.iter().any(|c| *c > 150), "{}", s.name);
        if s.kind == QuestionKind::Color {
            // The answer is the palette colour nearest to the drawn one.
            let nearest = Color::ALL
                .iter()
                .min_by_key(|c| {
                    c.rgb()
                        .iter()
                        .zip(rgb)
                        .map(|(a, b)| (*a as i32 - b as i32).pow(2))
                        .sum::<i32>()
                })
                .expect("palette");
            assert_eq!(nearest.name(), s.answer, "{}", s.name);
        }
    }
}

#[test]
fn embedded_tokenizer_reproduces_transformers_prompt_ids() {
    let tok_json = DEMO_MODEL_FILES
        .iter()
        .find(|(n, _)| *n == "tokenizer.json")
        .expect("tokenizer.json is embedded")
        .1;
    let tok = tokenizers::Tokenizer::from_bytes(tok_json).expect("tokenizer parses");
    let config: serde_json::Value =
        serde_json::from_slice(DEMO_MODEL_FILES[0].1).expect("config.json parses");
    let image_id = config["image_token_index"]
        .as_i64()
        .expect("image_token_index");
    let n_image = config["image_seq_length"]
        .as_u64()
        .expect("image_seq_length") as usize;
    for s in demo_scenes() {
        let prompt = format!("USER: <image>\n{} ASSISTANT:", s.question);
        let enc = tok.encode(prompt, true).expect("encodes");
        let mut ids = Vec::new();
        for &id in enc.get_ids() {
            if id as i64 == image_id {
                ids.extend(std::iter::repeat_n(image_id, n_image));
            } else {
                ids.push(id as i64);
            }
        }
        assert_eq!(ids, s.prompt_ids, "{}", s.name);
        let answer = tok
            .decode(
                &s.output_ids.iter().map(|i| *i as u32).collect::<Vec<_>>(),
                true,
            )
            .expect("decodes");
        assert_eq!(answer.trim(), s.answer, "{}", s.name);
    }
}

#[test]
fn model_folder_is_written_once_and_complete() {
    let dir = demo_model_dir().expect("demo model folder");
    for (name, bytes) in DEMO_MODEL_FILES.iter() {
        assert_eq!(
            std::fs::read(dir.join(name)).expect("file written"),
            *bytes,
            "{name}"
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["model_type"], "llava");
    assert_eq!(demo_model_dir().expect("second call"), dir);
}

#[test]
fn materialise_is_atomic_and_repairs_damaged_copies() {
    static A: &[u8] = b"first file";
    static B: &[u8] = b"second, longer file";
    let files: [EmbeddedFile; 2] = [("a.txt", A), ("b.txt", B)];
    let root = tempfile::tempdir().expect("tempdir");
    let hash = content_hash(&files);
    let dir = materialise(root.path(), "demo", &files, &hash).expect("written");
    assert_eq!(dir, root.path().join(format!("demo-{hash}")));
    assert_eq!(std::fs::read(dir.join("b.txt")).expect("b"), B);
    // No temporary folders are left behind.
    let entries: Vec<_> = std::fs::read_dir(root.path()).expect("list").collect();
    assert_eq!(entries.len(), 1);
    // A truncated file is detected and the copy replaced.
    std::fs::write(dir.join("a.txt"), b"fir").expect("damage");
    let again = materialise(root.path(), "demo", &files, &hash).expect("rewritten");
    assert_eq!(again, dir);
    assert_eq!(std::fs::read(dir.join("a.txt")).expect("a"), A);
    // Different contents give a different folder.
    let other: [EmbeddedFile; 1] = [("a.txt", B)];
    assert_ne!(content_hash(&other), hash);
}
