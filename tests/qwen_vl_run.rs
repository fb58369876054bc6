//! `lvlmscope run` on the Qwen VL fixtures end to end: greedy answer equal to transformers',
//! recorded attention rows equal to the reference attentions, a session `report` opens, and
//! an image whose tokens overflow the context refused with one sentence naming --max-pixels.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use lvlmscope::session;

const BIN: &str = env!("CARGO_BIN_EXE_lvlmscope");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn run(model: &str, image: &str, save: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args([
            "run",
            "--model",
            &fixtures().join(model).display().to_string(),
            "--image",
            &fixtures().join(image).display().to_string(),
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "8",
            "--f32-attention",
            "--save",
            &save.display().to_string(),
        ])
        .args(extra)
        .output()
        .expect("binary runs")
}

#[test]
fn run_records_rows_equal_to_transformers_and_report_opens() {
    for model in ["tiny-qwen2-vl", "tiny-qwen2_5-vl"] {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("q.session");
        let out = run(model, "image.png", &save, &[]);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = session::load(&save).unwrap();
        let r = candle_core::safetensors::load(
            fixtures()
                .join("reference")
                .join(format!("{model}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let want: Vec<i64> = r["output_ids"].to_vec1().unwrap();
        assert_eq!(s.output_ids, want, "{model}");
        let ids: Vec<i64> = r["input_ids"].to_vec1().unwrap();
        assert_eq!(s.input_ids, ids, "{model}");
        let words: Vec<String> = lvlmscope::explain::attention::prompt_words(&s)
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert!(
            words.join(" ").contains("What is in the picture?"),
            "{model}: byte-level pieces read as words {words:?}"
        );
        for t in &s.manifest.tokens.input {
            let shown = lvlmscope::style::display_token(t);
            assert!(!shown.contains('Ġ'), "{model}: {t:?} shown as {shown:?}");
        }
        assert_eq!(s.manifest.model.image_grid, [3, 4], "{model}");
        assert_eq!(s.manifest.image_span, [15, 12], "{model}");
        let [region] = &s.manifest.regions[..] else {
            panic!("{model}: regions {:?}", s.manifest.regions)
        };
        assert_eq!((region.span, region.grid), ([15, 12], [3, 4]), "{model}");
        assert_eq!(region.kind, session::RegionKind::Image);
        assert_eq!(
            region.rect,
            [0.0, 0.0, 48.0, 36.0],
            "{model}: the whole image"
        );
        // attn.gen row t = reference attention row N - 1 + t, over the first N + t positions.
        let gen = s.attn_gen.as_ref().expect("attn.gen recorded");
        let att = &r["attentions"];
        let [t_len, layers, heads, positions] = gen.shape[..] else {
            panic!("attn.gen shape {:?}", gen.shape)
        };
        let n = s.input_ids.len();
        let mut worst = 0f32;
        for t in 0..t_len {
            for l in 0..layers {
                for h in 0..heads {
                    let row: Vec<f32> = att
                        .get(l)
                        .and_then(|a| a.get(h))
                        .and_then(|a| a.get(n - 1 + t))
                        .and_then(|a| a.to_vec1())
                        .unwrap();
                    let base = ((t * layers + l) * heads + h) * positions;
                    let got = &gen.data[base..base + positions];
                    for (j, g) in got.iter().enumerate() {
                        let want = if j < n + t { row[j] } else { 0.0 };
                        worst = worst.max((g - want).abs());
                    }
                }
            }
        }
        assert!(worst < 1e-5, "{model}: attn.gen differs by {worst}");
        let report = Command::new(BIN)
            .args(["report", &save.display().to_string(), "--json"])
            .output()
            .unwrap();
        assert!(
            report.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&report.stderr)
        );
    }
}

#[test]
fn too_many_image_tokens_name_max_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("q.session");
    // 48x36 scaled up to at least 2,000,000 pixels: thousands of tokens, context 512.
    let out = run(
        "tiny-qwen2-vl",
        "image.png",
        &save,
        &["--min-pixels", "2000000", "--max-pixels", "4000000"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("--max-pixels"), "{}", lines[0]);
    assert!(!save.exists());
}

#[test]
fn max_pixels_bounds_the_image_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("q.session");
    // The tall image at most 56*56 pixels: grid 4x2 patches, 2x1 merged tokens.
    let out = run(
        "tiny-qwen2_5-vl",
        "image_tall.png",
        &save,
        &["--min-pixels", "784", "--max-pixels", "3136"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = session::load(&save).unwrap();
    let [rows, cols] = s.manifest.model.image_grid;
    assert!(rows * cols <= 4 && rows > cols, "grid {rows}x{cols}");
    assert_eq!(s.manifest.image_span[1], rows * cols);
    let r = &s.manifest.regions[0];
    assert_eq!(r.rect, [0.0, 0.0, 30.0, 64.0]);
    assert!(r.aspect() < 0.5, "a tall image is tall: {}", r.aspect());
}

#[test]
fn run_with_relevancy_stores_rows_equal_to_autograd() {
    let model = "tiny-qwen2_5-vl";
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("q.session");
    let out = run(model, "image.png", &save, &["--relevancy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = session::load(&save).unwrap();
    let rel = candle_core::safetensors::load(
        fixtures()
            .join("reference")
            .join(format!("{model}.relevancy.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let llm = rel["relevancy_llm"].to_vec2::<f32>().unwrap();
    let combined = rel["relevancy_combined"].to_vec2::<f32>().unwrap();
    let got_llm = s.relevancy_llm.as_ref().expect("relevancy.llm");
    let got_comb = s.relevancy_combined.as_ref().expect("relevancy.combined");
    assert_eq!(got_comb.shape, vec![8, 12], "one value per merged token");
    let (sl, sc) = (got_llm.shape[1], got_comb.shape[1]);
    let mut worst = 0f32;
    for t in 0..8 {
        let row = &got_llm.data[t * sl..(t + 1) * sl];
        for (g, w) in row.iter().zip(&llm[t]) {
            worst = worst.max((g - w).abs());
        }
        for k in 0..sc {
            let want = combined[t][4 * k..4 * k + 4].iter().sum::<f32>() / 4.0;
            worst = worst.max((got_comb.data[t * sc + k] - want).abs());
        }
    }
    assert!(worst < 1e-4, "stored relevancy differs by {worst}");
    let report = Command::new(BIN)
        .args([
            "report",
            &save.display().to_string(),
            "--method",
            "relevancy",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
}

#[test]
fn the_llava_path_names_a_qwen_model_in_one_sentence() {
    let name = fixtures().join("tiny-qwen2-vl").display().to_string();
    let err = lvlmscope::generate::LoadedModel::load(&name, candle_core::DType::F32, &Device::Cpu)
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("Qwen2-VL") && !msg.contains('\n'), "{msg}");
    assert!(!msg.contains("image token"), "{msg}");
}
