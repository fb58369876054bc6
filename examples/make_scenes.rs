//! Writes a synthetic-scene dataset: PNG images plus `questions.jsonl`, one row per question:
//! `{"image", "scene", "question", "answer", "object", "type"}` (and `"mask"`, the target
//! object's row-major RLE mask, with `--masks`).
//!
//! With `--objects`, also `objects.jsonl`, one row per scene:
//! `{"image", "scene", "objects": [{"shape", "color", "mask"}]}` (every object's RLE mask).
//!
//! `cargo run --release --example make_scenes -- --out DIR --n N --seed S [--masks] [--objects]`
//! N is the number of scenes; each gets one question of every kind that has an answer.

use anyhow::Context;
use clap::Parser;
use lvlmscope::demo::{generate, scene_seed, SceneConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of scenes.
    #[arg(long)]
    n: u64,
    /// Dataset seed; scene i uses `scene_seed(seed, i)`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write each question's target mask (RLE) into its row.
    #[arg(long)]
    masks: bool,
    /// Also write `objects.jsonl` with every object's shape, colour and mask.
    #[arg(long)]
    objects: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = SceneConfig::default();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let jsonl = args.out.join("questions.jsonl");
    let mut rows = std::io::BufWriter::new(
        std::fs::File::create(&jsonl)
            .with_context(|| format!("cannot create {}", jsonl.display()))?,
    );
    let mut objects = if args.objects {
        let path = args.out.join("objects.jsonl");
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Some(std::io::BufWriter::new(file))
    } else {
        None
    };
    let digits = args.n.max(1).to_string().len().max(5);
    for i in 0..args.n {
        let seed = scene_seed(args.seed, i);
        let scene = generate(seed, &config);
        let name = format!("{i:0digits$}.png");
        scene
            .image
            .save(args.out.join(&name))
            .with_context(|| format!("cannot write {name}"))?;
        if let Some(out) = objects.as_mut() {
            let list: Vec<serde_json::Value> = scene
                .objects
                .iter()
                .map(|o| {
                    serde_json::json!({"shape": o.shape, "color": o.color, "mask": o.mask.to_rle()})
                })
                .collect();
            let row = serde_json::json!({"image": name, "scene": i, "objects": list});
            writeln!(out, "{row}")?;
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5155_4553_5449_4f4e);
        for q in scene.sample_questions(&mut rng, &config) {
            let mut row = serde_json::json!({
                "image": name,
                "scene": i,
                "question": q.question,
                "answer": q.answer,
                "object": q.object,
                "type": q.kind,
            });
            if args.masks {
                let mask = q
                    .object
                    .and_then(|o| scene.objects.get(o))
                    .map(|o| o.mask.to_rle());
                row["mask"] = serde_json::to_value(mask)?;
            }
            writeln!(rows, "{row}")?;
        }
    }
    rows.flush()?;
    if let Some(out) = objects.as_mut() {
        out.flush()?;
    }
    eprintln!("wrote {} scenes to {}", args.n, args.out.display());
    Ok(())
}
