//! Relevancy benchmarks.
//!
//! `cargo bench --bench relevancy`: criterion, relevancy of every output token of the tiny
//! fixtures (the whole gradient pass: forward, batched backward, rows).
//!
//! Whole-process mode, used by `tools/bench_relevancy.py` to time against PyTorch: with
//! `LVLMSCOPE_RELEVANCY_MODEL=<model folder>` and `LVLMSCOPE_RELEVANCY_INPUTS=<safetensors with
//! input_ids, output_ids, pixel_values>` the binary loads the model, computes the relevancy of
//! every output token once, writes the rows to `LVLMSCOPE_RELEVANCY_OUT` (if set) and prints
//! one JSON line of timings (and the peak resident memory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use criterion::Criterion;
use lvlmscope::explain::relevancy::{self, RelevancyOptions};
use lvlmscope::model::{Llava, ModelDir};
use lvlmscope::session::{
    Array, GenerationInfo, ImageInfo, Manifest, ModelInfo, Session, TokenStrings, SCHEMA,
};

fn session_from(inputs: &Path, model: &Llava) -> anyhow::Result<Session> {
    let t = candle_core::safetensors::load(inputs, &Device::Cpu)?;
    let get = |k: &str| {
        t.get(k)
            .ok_or_else(|| anyhow::anyhow!("{} has no tensor {k}", inputs.display()))
    };
    let input_ids = get("input_ids")?.to_vec1::<i64>()?;
    let output_ids = get("output_ids")?.to_vec1::<i64>()?;
    let px = get("pixel_values")?;
    let px = if px.rank() == 4 {
        px.squeeze(0)?
    } else {
        px.clone()
    };
    let image_id = model.config().image_token_index as i64;
    let start = input_ids.iter().position(|&i| i == image_id).unwrap_or(0);
    let len = input_ids.iter().filter(|&&i| i == image_id).count();
    let cfg = model.config();
    Ok(Session {
        manifest: Manifest {
            schema: SCHEMA.to_string(),
            model: ModelInfo {
                path: String::new(),
                architecture: "LlavaForConditionalGeneration".to_string(),
                text_layers: cfg.text_config.num_hidden_layers,
                text_heads: cfg.text_config.num_attention_heads,
                vision_layers: model.vision_layers_run(),
                vision_heads: cfg.vision_config.num_attention_heads,
                image_grid: model.image_grid(),
                family: None,
            },
            prompt: String::new(),
            image: ImageInfo {
                path: String::new(),
                mode: "default".to_string(),
                original_size: [0, 0],
            },
            generation: GenerationInfo {
                max_new_tokens: output_ids.len(),
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                dtype: None,
                device: None,
            },
            tokens: TokenStrings {
                input: vec![String::new(); input_ids.len()],
                output: vec![String::new(); output_ids.len()],
            },
            image_span: [start, len],
            regions: Vec::new(),
            relevancy_tokens: Vec::new(),
            causal: None,
            timings: BTreeMap::new(),
            lens: Vec::new(),
            turns: Vec::new(),
            vision_attention: None,
        },
        pixel_values: Array::new(
            px.dims().to_vec(),
            px.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        )
        .ok_or_else(|| anyhow::anyhow!("bad pixel values"))?,
        input_ids,
        output_ids,
        attn_gen: None,
        attn_full: BTreeMap::new(),
        attn_vit: None,
        relevancy_llm: None,
        relevancy_vit: None,
        relevancy_combined: None,
        turns: Vec::new(),
    })
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn whole_process(model_dir: &str, inputs: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dir = ModelDir::resolve(model_dir)?;
    let model = Llava::load(&dir, DType::F32, &Device::Cpu)?;
    let t_load = t0.elapsed().as_secs_f64();
    let session = session_from(Path::new(inputs), &model)?;
    let tokens: Vec<usize> = (0..session.num_output()).collect();
    let max_chunk = std::env::var("LVLMSCOPE_RELEVANCY_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RelevancyOptions::default().max_chunk);
    let opts = RelevancyOptions {
        max_chunk,
        memory_budget: None,
    };
    let t1 = Instant::now();
    let maps = relevancy::relevancy_with(&model, &session, &tokens, &opts, &mut |_| {})?;
    let t_rel = t1.elapsed().as_secs_f64();
    let plan = relevancy::memory::plan(model.config(), session.num_positions(), DType::F32);
    if let Ok(out) = std::env::var("LVLMSCOPE_RELEVANCY_OUT") {
        let rows = |v: &[Vec<f32>]| -> candle_core::Result<Tensor> {
            let flat: Vec<f32> = v.iter().flatten().copied().collect();
            Tensor::from_vec(flat, (v.len(), v[0].len()), &Device::Cpu)
        };
        let map = std::collections::HashMap::from([
            ("relevancy_llm".to_string(), rows(&maps.llm)?),
            ("relevancy_vit".to_string(), rows(&maps.vit)?),
            ("relevancy_combined".to_string(), rows(&maps.combined)?),
        ]);
        candle_core::safetensors::save(&map, PathBuf::from(out))?;
    }
    println!(
        "{{\"tokens\": {}, \"positions\": {}, \"load_s\": {t_load:.3}, \"relevancy_s\": {t_rel:.3}, \"total_s\": {:.3}, \"peak_rss\": {}, \"estimate_chunk1\": {}, \"estimate_per_token\": {}}}",
        tokens.len(),
        session.num_positions(),
        t0.elapsed().as_secs_f64(),
        peak_rss_bytes(),
        plan.peak(1),
        plan.per_token
    );
    Ok(())
}

fn tiny_fixture(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["tiny-llava-gqa", "tiny-llava-full"] {
        let dir = match ModelDir::resolve(root.join(name).to_str().unwrap_or_default()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        let model = Llava::load(&dir, DType::F32, &Device::Cpu).expect("fixture model");
        let inputs = root.join("reference").join(format!("{name}.safetensors"));
        let session = session_from(&inputs, &model).expect("fixture session");
        let tokens: Vec<usize> = (0..session.num_output()).collect();
        c.bench_function(&format!("relevancy_all_tokens/{name}"), |b| {
            b.iter(|| {
                relevancy::relevancy(&model, &session, &tokens, &mut |_| {}).expect("relevancy")
            })
        });
    }
}

fn main() {
    if let (Ok(model), Ok(inputs)) = (
        std::env::var("LVLMSCOPE_RELEVANCY_MODEL"),
        std::env::var("LVLMSCOPE_RELEVANCY_INPUTS"),
    ) {
        if let Err(e) = whole_process(&model, &inputs) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    tiny_fixture(&mut c);
    c.final_summary();
}
