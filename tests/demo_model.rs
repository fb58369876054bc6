//! The embedded demo model, run by lvlmscope's own model code, builds the same prompt ids and
//! gives the same greedy answers to the demo questions as transformers did when the scenes were
//! picked (`tools/demo_scenes.py`), and those answers are the true ones.

use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use lvlmscope::demo::{demo_model_dir, demo_scenes};
use lvlmscope::generate::{generate, LoadedModel, RunRequest};

#[test]
fn demo_model_answers_the_demo_questions_like_transformers() {
    let dir = demo_model_dir().expect("the demo model is written to the cache");
    let name = dir.to_string_lossy().to_string();
    let loaded = LoadedModel::load(&name, DType::F32, &Device::Cpu).expect("the demo model loads");
    let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).expect("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_bytes(&tokenizer_json).expect("tokenizer parses");
    let cancel = AtomicBool::new(false);
    let scenes = demo_scenes();
    assert!(!scenes.is_empty());
    for s in scenes {
        let image = image::load_from_memory(s.png).expect("demo PNG decodes");
        let request = RunRequest {
            model: name.clone(),
            prompt: s.question.clone(),
            max_new_tokens: 6,
            ..RunRequest::default()
        };
        let session =
            generate(&loaded, &image, &request, &cancel, &mut |_| {}).expect("generation runs");
        assert_eq!(session.input_ids, s.prompt_ids, "{}: prompt ids", s.name);
        assert_eq!(session.output_ids, s.output_ids, "{}: answer ids", s.name);
        let ids: Vec<u32> = session.output_ids.iter().map(|i| *i as u32).collect();
        let answer = tokenizer.decode(&ids, true).expect("decodes");
        assert_eq!(answer.trim(), s.answer, "{}: {}", s.name, s.question);
    }
}
