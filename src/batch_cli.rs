//! `lvlmscope batch`: its flags and the glue between them, the progress bar and
//! [`lvlmscope::batch::run`].

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use lvlmscope::batch::{BatchOptions, BatchProgress, Shard};
use lvlmscope::generate::{parse_dtype, Capture, RunRequest};
use lvlmscope::job::{ModelSpec, SessionModel};
use lvlmscope::model::DeviceName;
use lvlmscope::session::AttentionDtype;

/// Flags of `lvlmscope batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// JSONL file, one {"image": PATH, "prompt": TEXT[, "id": ID]} per line; image paths are
    /// relative to the file's folder; the id (default: the line number) names the session.
    pub questions: PathBuf,
    /// Model folder or model id in the local Hugging Face cache.
    #[arg(long)]
    pub model: String,
    /// Output folder: ID.session per line, summary.jsonl and summary.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Compute relevancy maps for every output token.
    #[arg(long)]
    pub relevancy: bool,
    /// Compute causal (CLEANN) explanations for every output token.
    #[arg(long)]
    pub causal: bool,
    /// Measure each map's faithfulness: the first answer token's probability drop (Δp) when
    /// the map's top 20% of patches are painted out, in the summary as dp:MAP columns.
    #[arg(long)]
    pub faithfulness: bool,
    /// Take every N-th line starting at line I, counted from 0 (e.g.
    /// $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); the summary is then
    /// summary.I-of-N.{jsonl,csv}.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Skip lines whose session already exists in the output folder, keeping their rows.
    #[arg(long)]
    pub resume: bool,
    /// Most tokens to generate per line.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Weights and activations dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Store attention as f32 instead of f16.
    #[arg(long)]
    pub f32_attention: bool,
}

/// Runs the batch; fails (non-zero exit) when the batch could not run or some line failed.
pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    let shard = match &args.shard {
        Some(s) => s.parse::<Shard>().map_err(anyhow::Error::msg)?,
        None => Shard::ALL,
    };
    let dtype = parse_dtype(&args.dtype)?;
    let device_name: DeviceName = args.device.parse()?;
    let request = RunRequest {
        model: args.model.clone(),
        max_new_tokens: args.max_new_tokens,
        dtype,
        device: device_name,
        capture: Capture::Rows,
        relevancy: args.relevancy,
        causal: args.causal,
        ..RunRequest::default()
    };
    lvlmscope::generate::validate(&request)?;
    if !args.questions.is_file() {
        anyhow::bail!(
            "the questions file {} does not exist",
            args.questions.display()
        );
    }
    let device = request.device.open()?;
    let spec = ModelSpec {
        path: args.model.clone(),
        dtype,
        device: device_name,
    };
    let loaded = SessionModel::load(&spec, &device)
        .with_context(|| format!("could not load the model {}", args.model))?;
    let options = BatchOptions {
        questions: args.questions,
        out: args.out,
        shard,
        resume: args.resume,
        request,
        attention: if args.f32_attention {
            AttentionDtype::F32
        } else {
            AttentionDtype::F16
        },
        faithfulness: args.faithfulness,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} lines {elapsed:>4} (eta {eta}) {msg}")
            .expect("static template is valid"),
    );
    let mut current = String::new();
    let cancel = AtomicBool::new(false);
    let outcome = lvlmscope::batch::run(&loaded, &options, &cancel, &mut |p| match p {
        BatchProgress::Lines { total } => bar.set_length(total as u64),
        BatchProgress::Line { id } => {
            bar.set_message(id.clone());
            current = id;
        }
        BatchProgress::Stage(stage) => bar.set_message(format!("{current}: {stage}")),
        BatchProgress::Done { done } => bar.set_position(done as u64),
    });
    bar.finish_and_clear();
    let outcome = outcome?;
    let total = outcome.rows.len();
    let failed = outcome.failed();
    eprintln!(
        "{total} lines: {} run, {} resumed, {failed} failed; summary in {} and {}",
        outcome.ran,
        outcome.resumed,
        outcome.summary_jsonl.display(),
        outcome.summary_csv.display()
    );
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {total} lines failed; their errors are in {}",
            outcome.summary_csv.display()
        );
    }
    Ok(())
}
