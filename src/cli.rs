//! The command line (DESIGN.md, "Command line"): argument types shared by the binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Look inside a vision-language model from a terminal.
#[derive(Debug, Parser)]
#[command(name = "lvlmscope", version, about)]
pub struct Cli {
    /// What to do; without a subcommand the TUI opens on the embedded demo.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the terminal app.
    Tui(TuiArgs),
    /// Run the model on an image and a prompt and save the session.
    Run(RunArgs),
    /// Print a session's answer and the map of one token without the TUI.
    Report(ReportArgs),
    /// Measure the explanation methods on synthetic scenes with known object masks.
    Eval(EvalArgs),
    /// Run every line of a JSONL file of questions with one model load; a session per line
    /// and a summary.
    Batch(crate::batch_cli::BatchArgs),
    /// Re-run one answer token with attention from queries to keys blocked in some layers.
    Knockout(KnockoutArgs),
    /// Two sessions side by side: answers, image reliance per token, maps and their difference.
    Compare(crate::compare_cli::CompareArgs),
}

/// Flags of `lvlmscope knockout`.
#[derive(Debug, Args)]
pub struct KnockoutArgs {
    /// The session file.
    pub file: PathBuf,
    /// Output token to re-run.
    #[arg(long, default_value_t = 0)]
    pub token: usize,
    /// Keys blocked: image, question (the current turn's), earlier (a conversation's earlier
    /// turns), answers (its earlier answers), map:NAME:PCT (top PCT % patches of a catalogue
    /// map) or patches:LIST (grid indices, e.g. 0,1,5-7).
    #[arg(long)]
    pub block: String,
    /// Decoder layers where the block holds: A-B (inclusive) or A.
    #[arg(long)]
    pub layers: String,
    /// Queries blocked: answer (the token's position) or last-question.
    #[arg(long, default_value = "answer")]
    pub query: String,
    /// The image region whose cells patches:LIST and map:NAME:PCT count: base, highres
    /// (LLaVA-NeXT, OneVision), image (one region), or all (every region's cells in input
    /// order).
    #[arg(long, default_value = "all")]
    pub region: lvlmscope::report::RegionChoice,
    /// Print the numbers as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Model folder or model id (default: the session's model).
    #[arg(long)]
    pub model: Option<String>,
    /// Weights and activations dtype of the model: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Where the model runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Flags of `lvlmscope tui`.
#[derive(Debug, Args, Default)]
pub struct TuiArgs {
    /// Model folder or model id in the local Hugging Face cache.
    #[arg(long)]
    pub model: Option<String>,
    /// Image file.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Question about the image.
    #[arg(long)]
    pub prompt: Option<String>,
    /// A saved session to open (no model needed).
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Theme name (dark, light, high-contrast, jet) or a TOML file.
    #[arg(long)]
    pub theme: Option<String>,
    /// Head score file (`eval --heads --json`): `G` colours the heads × layers grid by it.
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// A second session to show beside `--session` (split view, same keys).
    #[arg(long, requires = "session")]
    pub compare: Option<PathBuf>,
    /// Where live runs, follow-ups and model jobs run: cpu, cuda or cuda:N. Given, it wins
    /// over the device a saved session records; else a session's own, and cpu for new runs.
    #[arg(long)]
    pub device: Option<String>,
    /// Weights and activations dtype of those runs: f32, f16 or bf16. Given, it wins over the
    /// dtype a saved session records; else a session's own, and f32 for new runs.
    #[arg(long)]
    pub dtype: Option<String>,
}

/// Flags of `lvlmscope run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model folder or model id in the local Hugging Face cache.
    #[arg(long)]
    pub model: String,
    /// Image file.
    #[arg(long)]
    pub image: PathBuf,
    /// Question about the image; repeat the flag for a conversation (each later one a
    /// follow-up on the same image, all turns in one session).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Where to write the session file.
    #[arg(long)]
    pub save: PathBuf,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights and activations dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How the image is fitted: default, crop, resize or pad.
    #[arg(long, default_value = "default")]
    pub image_mode: String,
    /// Attention recorded: off, rows (generated rows, default) or full (rows + last layer).
    #[arg(long, default_value = "rows")]
    pub capture: String,
    /// Store attention as f32 instead of f16.
    #[arg(long)]
    pub f32_attention: bool,
    /// Compute relevancy maps for every output token.
    #[arg(long)]
    pub relevancy: bool,
    /// Compute causal (CLEANN) explanations for every output token.
    #[arg(long)]
    pub causal: bool,
    /// Qwen VL: most pixels the image is resized to (bounds the number of image tokens;
    /// default: the model's preprocessor_config.json).
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Qwen VL: fewest pixels the image is resized to (default: the model's).
    #[arg(long)]
    pub min_pixels: Option<usize>,
}

/// Flags of `lvlmscope report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The session file.
    pub file: PathBuf,
    /// Output token to explain (default 0).
    #[arg(long)]
    pub token: Option<usize>,
    /// attention, relevancy, causal, lens (logit lens, with the session's model) or a map id.
    #[arg(long, default_value = "attention")]
    pub method: String,
    /// Model folder or model id for `--method lens` (default: the session's model).
    #[arg(long)]
    pub model: Option<String>,
    /// Decoder layer (default: the last).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Attention head (default: mean over heads).
    #[arg(long)]
    pub head: Option<usize>,
    /// Write the image with the map blended over it to this PNG file.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Print the numbers as one JSON object instead of drawing.
    #[arg(long)]
    pub json: bool,
    /// Relevancy: LVLM-Interpret's residual normalisation of the text bars.
    #[arg(long)]
    pub residual: bool,
    /// The conversation turn to report, 1-based (default: the last).
    #[arg(long)]
    pub turn: Option<usize>,
    /// Theme name or TOML file.
    #[arg(long)]
    pub theme: Option<String>,
    /// A head score file of `eval --heads --json` for `--method attention.heads.best`.
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// `--method lens`: store the reading in the session file (then `lens.l{L}` maps and
    /// later reports read it without the model).
    #[arg(long)]
    pub cache: bool,
    /// Weights and activations dtype of the model: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Where the model runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Image regions to draw and print: base, highres (LLaVA-NeXT, OneVision), image (one
    /// region), or all.
    #[arg(long, default_value = "all")]
    pub region: lvlmscope::report::RegionChoice,
}

/// Flags of `lvlmscope eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model folder or model id (default: the embedded demo model).
    #[arg(long)]
    pub model: Option<String>,
    /// Number of synthetic scenes.
    #[arg(long, default_value_t = 50)]
    pub scenes: usize,
    /// Dataset seed (2: the demo model's held-out scenes).
    #[arg(long, default_value_t = lvlmscope::eval::HELD_OUT_SEED)]
    pub seed: u64,
    /// Write the per-method and per-scene numbers to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 8)]
    pub max_new_tokens: usize,
    /// Steps of the deletion curves (fraction removed 0, 1/steps, ..., 1).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Weights and activations dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Score every decoder head by pointing game and mass in mask (localization heads); the
    /// --json file is then a head score file.
    #[arg(long, conflicts_with = "sanity")]
    pub heads: bool,
    /// Model-randomisation sanity check: randomise the decoder from the top layer down and
    /// report how much each method's maps change (Spearman ρ).
    #[arg(long)]
    pub sanity: bool,
    /// The image region scored: base or highres (LLaVA-NeXT / OneVision; default highres), or
    /// image (the one region of other models, the default there).
    #[arg(long, value_parser = parse_eval_region)]
    pub region: Option<lvlmscope::session::RegionKind>,
    /// Also score this catalogue map, after the standard ones (repeatable): e.g.
    /// attention.vision.last.mean (the vision tower's own attention) or attention.heads.l2h1.
    #[arg(long = "map", value_name = "ID")]
    pub maps: Vec<String>,
}

/// An `eval --region` value: base, highres or image.
fn parse_eval_region(s: &str) -> Result<lvlmscope::session::RegionKind, String> {
    use lvlmscope::report::RegionChoice;
    match s.parse::<RegionChoice>() {
        Ok(RegionChoice::Only(kind)) => Ok(kind),
        _ => Err(format!(
            "unknown region {s:?} (choose base, highres or image)"
        )),
    }
}
