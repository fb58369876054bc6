//! `lvlmscope compare A.session B.session [--token N ...] [--method M] [--json]`: two runs side
//! by side (answers, per-token image reliance, the chosen tokens' maps and their difference),
//! as text or one JSON object. The numbers come from [`lvlmscope::explain::compare`].

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use lvlmscope::explain::attention::HeadAgg;
use lvlmscope::explain::catalogue::{self, CausalHeads, MapId, Need, RelevancySource};
use lvlmscope::explain::compare::{compare, Comparison, Side};
use lvlmscope::explain::relevancy::views::Normalization;
use lvlmscope::job::ModelService;
use lvlmscope::session::Session;

/// Flags of `lvlmscope compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Session A.
    pub a: PathBuf,
    /// Session B.
    pub b: PathBuf,
    /// Answer tokens whose maps are compared (repeatable; default 0).
    #[arg(long = "token")]
    pub tokens: Vec<usize>,
    /// attention (last layer, mean of heads), relevancy, causal or a catalogue map id.
    #[arg(long, default_value = "attention")]
    pub method: String,
    /// A head score file of `eval --heads --json` for `--method attention.heads.best`.
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// Print the numbers as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The map a method name means for the pair.
fn method_id(method: &str, a: &Session, b: &Session) -> anyhow::Result<MapId> {
    Ok(match method {
        "attention" => {
            let layers = a.manifest.model.text_layers;
            MapId::attention(layers.saturating_sub(1), layers, HeadAgg::Mean)
        }
        "relevancy" => {
            let combined = a.relevancy_combined.is_some() && b.relevancy_combined.is_some();
            let decoder_only =
                |s: &Session| s.relevancy_combined.is_none() && s.relevancy_llm.is_some();
            let source = if combined || !(decoder_only(a) || decoder_only(b)) {
                RelevancySource::Combined
            } else {
                RelevancySource::Llm
            };
            MapId::relevancy(source, Normalization::SelfRemoved)
        }
        "causal" => MapId::Causal(CausalHeads::Sum),
        other => other.parse()?,
    })
}

/// Runs `lvlmscope compare`.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let load = |p: &PathBuf| {
        lvlmscope::session::load(p).with_context(|| format!("could not open {}", p.display()))
    };
    let (mut a, mut b) = (load(&args.a)?, load(&args.b)?);
    let tokens = if args.tokens.is_empty() {
        vec![0]
    } else {
        args.tokens.clone()
    };
    let method = crate::eval_cli::resolve_best_heads(&args.method, args.heads.as_deref())?;
    let id = method_id(&method, &a, &b)?;
    let mut service = ModelService::new();
    for s in [&mut a, &mut b] {
        let ours: Vec<usize> = tokens
            .iter()
            .copied()
            .filter(|&t| t < s.num_output())
            .collect();
        if let Need::Relevancy(todo) = catalogue::need(s, &ours, &id) {
            eprintln!(
                "lvlmscope: computing the relevancy of tokens {todo:?} with the model {} (not saved)",
                s.manifest.model.path
            );
            service
                .add_relevancy(s, &todo, &mut |_| {})
                .map_err(|e| anyhow::anyhow!("relevancy is not available: {e}"))?;
        }
    }
    let c = compare(&a, &b, &tokens, &id)?;
    if args.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        print!("{}", text(&c));
    }
    Ok(())
}

fn clean(t: &str) -> String {
    lvlmscope::session::piece_text(t)
}

fn percent(v: Option<f32>) -> String {
    v.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))
}

fn side_text(out: &mut String, name: &str, s: &Side) {
    let _ = writeln!(out, "{name}  prompt  {}", s.prompt);
    let _ = writeln!(out, "   image   {}", s.image);
    let _ = writeln!(out, "   answer  {}", clean(&s.answer).trim());
    let _ = writeln!(out, "   image reliance per token (attention · relevancy):");
    for t in &s.tokens {
        let _ = writeln!(
            out,
            "   {:>4} {:<14} {:>5} · {:>5}",
            t.token,
            format!("{:?}", clean(&t.text)),
            percent(t.attention),
            percent(t.relevancy)
        );
    }
}

const RAMP: [char; 10] = [' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];

/// One cell of a map drawn with [`RAMP`] over `[lo, hi]`.
fn shade(v: f32, lo: f32, hi: f32) -> char {
    let x = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
    RAMP[((x.clamp(0.0, 1.0) * 9.0).round() as usize).min(9)]
}

/// One cell of a difference: `+`/`#` where A is larger, `-`/`=` where B is, blank under a
/// tenth of the largest difference.
fn signed(d: f32, scale: f32) -> char {
    let x = if scale > 0.0 { d / scale } else { 0.0 };
    match x {
        x if x >= 0.5 => '#',
        x if x >= 0.1 => '+',
        x if x <= -0.5 => '=',
        x if x <= -0.1 => '-',
        _ => ' ',
    }
}

/// The comparison as text.
pub fn text(c: &Comparison) -> String {
    let mut out = String::new();
    side_text(&mut out, "A", &c.a);
    side_text(&mut out, "B", &c.b);
    let _ = writeln!(
        out,
        "\n{} · {}",
        c.method,
        if c.same_image {
            "same image: A, B and A − B (# + A larger, = - B larger)"
        } else {
            "different images: A and B side by side"
        }
    );
    for m in &c.maps {
        let all = m.a.iter().chain(&m.b).copied().filter(|x| x.is_finite());
        let (lo, hi) = all.fold((f32::MAX, f32::MIN), |(l, h), x| (l.min(x), h.max(x)));
        let _ = writeln!(
            out,
            "\ntoken {}: A {:?} · B {:?} · shared scale {lo:.4}..{hi:.4}{}",
            m.token,
            clean(&m.text[0]),
            clean(&m.text[1]),
            m.rank_correlation
                .map_or(String::new(), |r| format!(" · Spearman ρ {r:.3}"))
        );
        let [[ra, ca], [rb, cb]] = m.grids;
        let scale = m
            .difference
            .as_ref()
            .map_or(0.0, |d| d.iter().fold(0f32, |s, x| s.max(x.abs())));
        for r in 0..ra.max(rb) {
            let row = |v: &[f32], rows: usize, cols: usize| -> String {
                (0..cols)
                    .map(|c| {
                        if r < rows {
                            shade(v[r * cols + c], lo, hi)
                        } else {
                            ' '
                        }
                    })
                    .collect()
            };
            let mut line = format!("  {}  |  {}", row(&m.a, ra, ca), row(&m.b, rb, cb));
            if let Some(d) = &m.difference {
                let diff: String = (0..ca).map(|c| signed(d[r * ca + c], scale)).collect();
                line.push_str(&format!("  |  {diff}"));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}
