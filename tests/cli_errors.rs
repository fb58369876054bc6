//! Bad input on the command line: one clear sentence on stderr, a non-zero exit, never a panic.

mod cli_support;

use cli_support::{assert_clear_failure, fixtures, lvlmscope};

/// A copy of the gqa fixture model in a temporary folder, to break.
fn model_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny-llava-gqa")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn run_args<'a>(model: &'a str, image: &'a str, prompt: &'a str, save: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--model",
        model,
        "--image",
        image,
        "--prompt",
        prompt,
        "--save",
        save,
        "--max-new-tokens",
        "4",
    ]
}

fn image() -> String {
    fixtures().join("image.png").display().to_string()
}

fn out_path(dir: &tempfile::TempDir) -> String {
    dir.path().join("out.session").display().to_string()
}

#[test]
fn missing_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let r = lvlmscope(&run_args("/nonexistent/model", &image(), "Hi?", &out));
    assert_clear_failure(r, "/nonexistent/model");
}

#[test]
fn model_id_not_in_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let r = lvlmscope(&run_args("nobody/no-such-model", &image(), "Hi?", &out));
    assert_clear_failure(r, "nobody/no-such-model");
}

#[test]
fn missing_config() {
    let model = model_copy();
    std::fs::remove_file(model.path().join("config.json")).unwrap();
    let out = out_path(&model);
    let m = model.path().display().to_string();
    assert_clear_failure(
        lvlmscope(&run_args(&m, &image(), "Hi?", &out)),
        "config.json",
    );
}

#[test]
fn malformed_config() {
    let model = model_copy();
    std::fs::write(model.path().join("config.json"), "{\"text_config\": [").unwrap();
    let out = out_path(&model);
    let m = model.path().display().to_string();
    assert_clear_failure(
        lvlmscope(&run_args(&m, &image(), "Hi?", &out)),
        "config.json",
    );
}

#[test]
fn truncated_weights() {
    let model = model_copy();
    let weights = model.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let out = out_path(&model);
    let m = model.path().display().to_string();
    assert_clear_failure(
        lvlmscope(&run_args(&m, &image(), "Hi?", &out)),
        "model.safetensors",
    );
}

#[test]
fn missing_tensor() {
    let model = model_copy();
    let weights = model.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dropped = "language_model.model.norm.weight";
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != dropped)
        .collect();
    assert!(kept.len() + 1 == st.len(), "fixture holds {dropped}");
    let rewritten = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&weights, rewritten).unwrap();
    let out = out_path(&model);
    let m = model.path().display().to_string();
    assert_clear_failure(lvlmscope(&run_args(&m, &image(), "Hi?", &out)), "norm");
}

#[test]
fn tokenizer_larger_than_vocabulary() {
    let model = model_copy();
    let path = model.path().join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let added = tok["added_tokens"].as_array_mut().expect("added_tokens");
    added.push(serde_json::json!({
        "id": 900, "content": "<extra_far>", "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true
    }));
    std::fs::write(&path, tok.to_string()).unwrap();
    let out = out_path(&model);
    let m = model.path().display().to_string();
    assert_clear_failure(lvlmscope(&run_args(&m, &image(), "Hi?", &out)), "vocab");
}

#[test]
fn image_that_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let m = fixtures().join("tiny-llava-gqa").display().to_string();
    assert_clear_failure(
        lvlmscope(&run_args(&m, "/nonexistent/cat.jpg", "Hi?", &out)),
        "/nonexistent/cat.jpg",
    );
}

#[test]
fn file_that_is_not_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let m = fixtures().join("tiny-llava-gqa").display().to_string();
    let img = fixtures().join("not_an_image.png").display().to_string();
    assert_clear_failure(lvlmscope(&run_args(&m, &img, "Hi?", &out)), "image");
}

/// A PNG holding only a signature and an IHDR chunk claiming `width`×`height`.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(width.to_be_bytes());
    chunk.extend(height.to_be_bytes());
    chunk.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&chunk);
    png.extend(crc32(&chunk).to_be_bytes());
    png
}

/// Runs the gqa fixture on an image file holding `bytes`.
fn run_on_image_bytes(name: &str, bytes: &[u8]) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join(name);
    std::fs::write(&img, bytes).unwrap();
    let out = out_path(&tmp);
    let m = fixtures().join("tiny-llava-gqa").display().to_string();
    let img = img.display().to_string();
    lvlmscope(&run_args(&m, &img, "Hi?", &out))
}

#[test]
fn zero_sized_image() {
    assert_clear_failure(run_on_image_bytes("empty.png", &png_header(0, 0)), "image");
}

#[test]
fn huge_image() {
    let header = png_header(100_000, 100_000);
    assert_clear_failure(run_on_image_bytes("huge.png", &header), "image");
}

#[test]
fn empty_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let m = fixtures().join("tiny-llava-gqa").display().to_string();
    assert_clear_failure(lvlmscope(&run_args(&m, &image(), "   ", &out)), "prompt");
}

#[test]
fn prompt_longer_than_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let m = fixtures().join("tiny-llava-gqa").display().to_string();
    let long = "shape ".repeat(5000);
    assert_clear_failure(lvlmscope(&run_args(&m, &image(), &long, &out)), "context");
}

#[test]
fn unknown_dtype_and_device() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let m = fixtures().join("tiny-llava-gqa").display().to_string();
    let img = image();
    let mut args = run_args(&m, &img, "Hi?", &out);
    args.extend(["--dtype", "f8"]);
    assert_clear_failure(lvlmscope(&args), "dtype");
    let mut args = run_args(&m, &img, "Hi?", &out);
    args.extend(["--device", "tpu"]);
    assert_clear_failure(lvlmscope(&args), "device");
}

#[test]
fn tui_refuses_a_bad_dtype_or_device_as_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_path(&tmp);
    let m = fixtures().join("tiny-llava-gqa").display().to_string();
    let img = image();
    let mut bad = vec![("--dtype", "f8"), ("--device", "tpu")];
    if !cfg!(feature = "cuda") {
        bad.push(("--device", "cuda:1"));
    }
    for (flag, value) in bad {
        let mut args = run_args(&m, &img, "Hi?", &out);
        args.extend([flag, value]);
        let (_, run_err) = lvlmscope(&args);
        let tui = lvlmscope(&["tui", flag, value]);
        assert_eq!(tui.1, run_err, "{flag} {value}");
        assert_clear_failure(tui, value);
    }
}

#[test]
fn report_on_a_truncated_session() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("broken.session");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let p = path.display().to_string();
    assert_clear_failure(lvlmscope(&["report", &p]), "broken.session");
}

#[test]
fn report_on_a_missing_session() {
    assert_clear_failure(
        lvlmscope(&["report", "/nonexistent/s.session"]),
        "/nonexistent/s.session",
    );
}
