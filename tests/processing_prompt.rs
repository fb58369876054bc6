//! Chat template, tokenizer and image-token expansion against transformers' reference ids.

use std::path::{Path, PathBuf};

use lvlmscope::processing::{ProcessingError, PromptProcessor};
use serde_json::Value;

const MODELS: [&str; 2] = ["tiny-llava-gqa", "tiny-llava-full"];

/// The template of llava-hf/llava-1.5-7b-hf's `chat_template.json` (Python string methods,
/// `selectattr(..., 'equalto', ...)` and transformers' `{% generation %}` tag).
const LLAVA_15_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(model: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("reference/{model}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// A copy of a fixture model's tokenizer files in a temporary folder, to vary one file.
fn copy_model(model: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixtures().join(model).join(name), dir.path().join(name)).unwrap();
    }
    dir
}

#[test]
fn input_ids_match_transformers() {
    for model in MODELS {
        let r = reference(model);
        let p = PromptProcessor::from_dir(&fixtures().join(model)).unwrap();
        let features = r["num_image_features"].as_u64().unwrap() as usize;
        let enc = p.encode(r["prompt"].as_str().unwrap(), features).unwrap();
        assert_eq!(enc.text, r["rendered_prompt"].as_str().unwrap(), "{model}");
        assert_eq!(enc.ids, u32s(&r["input_ids"]), "{model}");
        assert_eq!(enc.tokens, strings(&r["input_tokens"]), "{model}");
        let span = u32s(&r["image_span"]);
        assert_eq!(
            enc.image_span,
            [span[0] as usize, span[1] as usize],
            "{model}"
        );
        assert!(enc.check_context(256).is_ok());
    }
}

#[test]
fn from_files_matches_from_dir() {
    let dir = fixtures().join("tiny-llava-full");
    let p = PromptProcessor::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
        Some(&dir.join("chat_template.json")),
        Some(&dir.join("generation_config.json")),
    )
    .unwrap();
    let r = reference("tiny-llava-full");
    let enc = p.encode("What is in the picture?", 17).unwrap();
    assert_eq!(enc.ids, u32s(&r["input_ids"]));
    assert!(p.has_chat_template());
}

#[test]
fn decoding_matches_transformers() {
    for model in MODELS {
        let r = reference(model);
        let p = PromptProcessor::from_dir(&fixtures().join(model)).unwrap();
        let out = u32s(&r["output_ids"]);
        let tokens: Vec<String> = out.iter().map(|&id| p.decode_token(id)).collect();
        assert_eq!(tokens, strings(&r["output_tokens"]), "{model}");
        assert_eq!(
            p.decode(&out),
            r["output_text"].as_str().unwrap(),
            "{model}"
        );
        assert_eq!(p.eos_token_ids(), &[2]);
        assert_eq!(p.image_token_id(), 3);
        assert_eq!(p.image_token(), "<image>");
        assert_eq!(p.vocab_size(), 570);
    }
}

#[test]
fn a_conversation_renders_alike_through_llava_15_template_and_without_template() {
    let history = vec![("What is in the picture?".to_string(), "A cat.".to_string())];
    let want = "USER: <image>\nWhat is in the picture? ASSISTANT: A cat. USER: And the colour? \
                ASSISTANT:";
    let dir = copy_model("tiny-llava-gqa");
    let template = serde_json::json!({ "chat_template": LLAVA_15_TEMPLATE });
    std::fs::write(dir.path().join("chat_template.json"), template.to_string()).unwrap();
    let with = PromptProcessor::from_dir(dir.path()).unwrap();
    assert_eq!(
        with.render_conversation(&history, "And the colour?")
            .unwrap(),
        want
    );
    let dir = copy_model("tiny-llava-gqa");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    config.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let without = PromptProcessor::from_dir(dir.path()).unwrap();
    assert_eq!(
        without
            .render_conversation(&history, " And the colour?\n")
            .unwrap(),
        want
    );
    // one image, with the first question; an empty earlier question is refused
    let enc = without
        .encode_conversation(&history, "And the colour?", 16)
        .unwrap();
    assert_eq!(enc.image_span[1], 16);
    let blank = vec![(" ".to_string(), "A cat.".to_string())];
    assert!(without.render_conversation(&blank, "Why?").is_err());
}

#[test]
fn llava_15_template_and_no_template_give_the_reference_ids() {
    let r = reference("tiny-llava-gqa");
    let want = u32s(&r["input_ids"]);
    // The real llava-1.5 template, from chat_template.json.
    let dir = copy_model("tiny-llava-gqa");
    let template = serde_json::json!({ "chat_template": LLAVA_15_TEMPLATE });
    std::fs::write(dir.path().join("chat_template.json"), template.to_string()).unwrap();
    let p = PromptProcessor::from_dir(dir.path()).unwrap();
    assert_eq!(p.encode("What is in the picture?", 16).unwrap().ids, want);
    // No template anywhere: LLaVA-1.5's format.
    let dir = copy_model("tiny-llava-gqa");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    config.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let p = PromptProcessor::from_dir(dir.path()).unwrap();
    assert!(!p.has_chat_template());
    let enc = p.encode("  What is in the picture?\n", 16).unwrap();
    assert_eq!(
        enc.text,
        "USER: <image>\nWhat is in the picture? ASSISTANT:"
    );
    assert_eq!(enc.ids, want);
}

#[test]
fn empty_prompt_is_an_error() {
    let p = PromptProcessor::from_dir(&fixtures().join("tiny-llava-gqa")).unwrap();
    for prompt in ["", "   \n\t"] {
        let err = p.encode(prompt, 16).unwrap_err();
        assert!(matches!(err, ProcessingError::EmptyPrompt), "{err}");
        assert_eq!(
            err.to_string(),
            "the prompt is empty; write a question or instruction about the image"
        );
    }
}

#[test]
fn too_long_prompt_names_both_lengths() {
    let p = PromptProcessor::from_dir(&fixtures().join("tiny-llava-gqa")).unwrap();
    let enc = p.encode("What is in the picture?", 16).unwrap();
    let err = enc.check_context(20).unwrap_err();
    assert_eq!(
        err.to_string(),
        "prompt is 30 tokens, the model's context is 20"
    );
    assert!(enc.check_context(30).is_ok());
}

#[test]
fn vocabulary_mismatch_is_an_error() {
    let p = PromptProcessor::from_dir(&fixtures().join("tiny-llava-gqa")).unwrap();
    assert!(p.check_vocab(570, 3).is_ok());
    assert!(p.check_vocab(32064, 3).is_ok());
    let err = p.check_vocab(500, 3).unwrap_err();
    assert!(matches!(err, ProcessingError::VocabMismatch(_)), "{err}");
    assert!(err.to_string().contains("ids up to 569"), "{err}");
    let err = p.check_vocab(570, 32000).unwrap_err();
    assert!(err.to_string().contains("expects id 32000"), "{err}");
}

#[test]
fn template_without_image_is_an_error() {
    let dir = copy_model("tiny-llava-gqa");
    let template = serde_json::json!({
        "chat_template": "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    });
    std::fs::write(dir.path().join("chat_template.json"), template.to_string()).unwrap();
    let p = PromptProcessor::from_dir(dir.path()).unwrap();
    let err = p.encode("Describe it.", 16).unwrap_err();
    assert!(matches!(err, ProcessingError::NoImageToken { .. }), "{err}");
    assert!(
        err.to_string().contains("has no image token (<image>)"),
        "{err}"
    );
}

#[test]
fn image_token_typed_in_the_prompt_is_an_error() {
    let p = PromptProcessor::from_dir(&fixtures().join("tiny-llava-gqa")).unwrap();
    let err = p.encode("<image> and what else?", 16).unwrap_err();
    assert!(
        matches!(err, ProcessingError::TooManyImageTokens { count: 2, .. }),
        "{err}"
    );
}

#[test]
fn tokenizer_without_image_token_is_an_error() {
    let dir = copy_model("tiny-llava-gqa");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    config["image_token"] = Value::from("<video>");
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let err = PromptProcessor::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, ProcessingError::ImageTokenMissing { .. }),
        "{err}"
    );
}

#[test]
fn missing_or_broken_tokenizer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = PromptProcessor::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ProcessingError::Tokenizer { .. }), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    let err = PromptProcessor::from_dir(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot load the tokenizer from"),
        "{err}"
    );
}

#[test]
fn broken_template_is_an_error() {
    let dir = copy_model("tiny-llava-gqa");
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{% for m in messages %}",
    )
    .unwrap();
    let err = PromptProcessor::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ProcessingError::Template(_)), "{err}");
}

/// Turns a copied fixture tokenizer into an old-style Llama `tokenizer.json` (a Prepend("▁")
/// normalizer, no pre-tokenizer) and sets `tokenizer_class` in `tokenizer_config.json`.
fn legacy_llama_copy(class: &str) -> tempfile::TempDir {
    let dir = copy_model("tiny-llava-gqa");
    let path = dir.path().join("tokenizer.json");
    let mut tok: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tok["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    ]});
    tok["pre_tokenizer"] = Value::Null;
    std::fs::write(&path, tok.to_string()).unwrap();
    let path = dir.path().join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["tokenizer_class"] = Value::from(class);
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

/// transformers 5 rebuilds a `LlamaTokenizer`'s normalizer, pre-tokenizer and decoder
/// (checked with transformers 5.24 on this very file: ids as the reference, decode of
/// [200, 101, 61, 132, 106] = "USER: What is"); a generic fast tokenizer uses the file as is,
/// which puts an extra "▁" (id 101) after `<image>`.
#[test]
fn legacy_llama_tokenizer_json_is_tokenized_as_transformers_does() {
    let want = u32s(&reference("tiny-llava-gqa")["input_ids"]);
    let dir = legacy_llama_copy("LlamaTokenizer");
    let p = PromptProcessor::from_dir(dir.path()).unwrap();
    let enc = p.encode("What is in the picture?", 16).unwrap();
    assert_eq!(enc.ids, want);
    assert_eq!(p.decode(&[200, 101, 61, 132, 106]), "USER: What is");

    let dir = legacy_llama_copy("PreTrainedTokenizerFast");
    let p = PromptProcessor::from_dir(dir.path()).unwrap();
    let enc = p.encode("What is in the picture?", 16).unwrap();
    assert_eq!(
        enc.ids[19], 101,
        "the file as is: an extra ▁ after the image"
    );
    assert_eq!(enc.ids.len(), want.len() + 1);
}
