//! The embedded demo: a tiny LLaVA trained on synthetic scenes with known object masks
//! (`tools/train_demo.py`), a few demo scenes with questions and target masks, and the scene
//! generator they all come from.
//!
//! The model folder and the scenes are compiled into the binary with `include_bytes!`, so the
//! demo works offline; [`demo_model_dir`] writes the model to a cache folder once, because the
//! model loader reads Hugging Face folders.

pub mod cache;
pub mod draw;
pub mod mask;
pub mod scenes;

pub use draw::{Background, Color, Shape};
pub use mask::{Mask, MaskError, RleMask};
pub use scenes::{generate, scene_seed, Question, QuestionKind, Scene, SceneConfig, SceneObject};

use cache::EmbeddedFile;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::OnceLock;

macro_rules! asset {
    ($dir:literal, $name:literal) => {
        (
            $name,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/",
                $dir,
                "/",
                $name
            )) as &[u8],
        )
    };
}

/// The files of the embedded demo model folder (a Hugging Face llava folder).
pub const DEMO_MODEL_FILES: [EmbeddedFile; 6] = [
    asset!("demo-model", "config.json"),
    asset!("demo-model", "generation_config.json"),
    asset!("demo-model", "model.safetensors"),
    asset!("demo-model", "preprocessor_config.json"),
    asset!("demo-model", "tokenizer.json"),
    asset!("demo-model", "tokenizer_config.json"),
];

/// The files of the embedded demo scenes: `scenes.json` and the PNGs it names.
pub const DEMO_SCENE_FILES: [EmbeddedFile; 11] = [
    asset!("demo-scenes", "scenes.json"),
    asset!("demo-scenes", "scene_0.png"),
    asset!("demo-scenes", "scene_1.png"),
    asset!("demo-scenes", "scene_2.png"),
    asset!("demo-scenes", "scene_3.png"),
    asset!("demo-scenes", "scene_4.png"),
    asset!("demo-scenes", "scene_5.png"),
    asset!("demo-scenes", "scene_6.png"),
    asset!("demo-scenes", "scene_7.png"),
    asset!("demo-scenes", "scene_8.png"),
    asset!("demo-scenes", "scene_9.png"),
];

/// Content hash of the embedded model (names the cache folder, so a new model gets a new one).
pub fn demo_model_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| cache::content_hash(&DEMO_MODEL_FILES))
}

/// Writes the embedded demo model folder to the cache (once; atomically) and returns its path:
/// `<cache root>/demo-<hash>` (see [`cache::cache_root`]), or a folder under the system temp
/// dir when the cache root cannot be written.
pub fn demo_model_dir() -> std::io::Result<PathBuf> {
    let hash = demo_model_hash();
    cache::materialise(&cache::cache_root(), "demo", &DEMO_MODEL_FILES, hash).or_else(|_| {
        let tmp = std::env::temp_dir().join("lvlmscope");
        cache::materialise(&tmp, "demo", &DEMO_MODEL_FILES, hash)
    })
}

/// Writes the embedded demo scenes (`scenes.json` and `scene_<k>.png`) to the cache (once;
/// atomically) and returns the folder, for code that wants image files rather than bytes.
pub fn demo_scenes_dir() -> std::io::Result<PathBuf> {
    let hash = cache::content_hash(&DEMO_SCENE_FILES);
    cache::materialise(
        &cache::cache_root(),
        "demo-scenes",
        &DEMO_SCENE_FILES,
        &hash,
    )
    .or_else(|_| {
        let tmp = std::env::temp_dir().join("lvlmscope");
        cache::materialise(&tmp, "demo-scenes", &DEMO_SCENE_FILES, &hash)
    })
}

/// One demo scene: a picture, a question about it, the true answer and the object it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoScene {
    /// Short name, e.g. `scene_0` (its PNG is `scene_0.png`).
    pub name: String,
    /// The PNG file's bytes (64×64).
    pub png: &'static [u8],
    /// The question (without the chat template).
    pub question: String,
    /// The true answer, one word.
    pub answer: String,
    /// What kind of question it is.
    pub kind: QuestionKind,
    /// Index of the object the question is about, if any.
    pub object: Option<usize>,
    /// The pixels of that object, if the question is about one (the pointing-game target).
    pub target_mask: Option<Mask>,
    /// Prompt ids (image token expanded) that transformers built for this question.
    pub prompt_ids: Vec<i64>,
    /// Ids the demo model generated with transformers (greedy), ending with EOS.
    pub output_ids: Vec<i64>,
}

#[derive(Deserialize)]
struct SceneEntry {
    name: String,
    image: String,
    question: String,
    answer: String,
    #[serde(rename = "type")]
    kind: QuestionKind,
    object: Option<usize>,
    mask: Option<RleMask>,
    prompt_ids: Vec<i64>,
    output_ids: Vec<i64>,
}

/// The embedded demo scenes, in the order of `scenes.json` (by question type). Entries whose
/// image is not embedded or whose mask does not decode are left out.
pub fn demo_scenes() -> Vec<DemoScene> {
    let json = DEMO_SCENE_FILES[0].1;
    let entries: Vec<SceneEntry> = serde_json::from_slice(json).unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|e| {
            let png = DEMO_SCENE_FILES
                .iter()
                .find(|(name, _)| *name == e.image)
                .map(|(_, bytes)| *bytes)?;
            let target_mask = match &e.mask {
                Some(rle) => Some(Mask::from_rle(rle).ok()?),
                None => None,
            };
            Some(DemoScene {
                name: e.name,
                png,
                question: e.question,
                answer: e.answer,
                kind: e.kind,
                object: e.object,
                target_mask,
                prompt_ids: e.prompt_ids,
                output_ids: e.output_ids,
            })
        })
        .collect()
}
