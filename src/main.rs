//! The `lvlmscope` binary: parses the command line and hands over to the library.
//! Errors end here as one sentence on stderr and a non-zero exit code.

mod batch_cli;
mod cli;
mod compare_cli;
mod eval_cli;
mod logging;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use cli::{Cli, Command, RunArgs};
use lvlmscope::generate::{parse_dtype, Progress, RunRequest};
use lvlmscope::job;
use lvlmscope::model::DeviceName;
use lvlmscope::processing::ImageMode;
use lvlmscope::report::interventions;
use lvlmscope::session::{self, AttentionDtype};

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        eprintln!("lvlmscope: internal error: {message}");
    }));
    let cli = Cli::parse();
    let mut logging = logging::Logging::init();
    // The TUI owns the terminal while it runs: where the log goes is told after it.
    let full_screen = matches!(cli.command, Some(Command::Tui(_)) | None);
    if !full_screen {
        logging.tell();
    }
    let result = match cli.command {
        Some(Command::Run(args)) => run(args),
        Some(Command::Report(args)) => report(args),
        Some(Command::Tui(args)) => tui(args),
        Some(Command::Eval(args)) => eval(args),
        Some(Command::Batch(args)) => batch_cli::run(args),
        Some(Command::Knockout(args)) => knockout(args),
        Some(Command::Compare(args)) => compare_cli::run(args),
        None => tui(cli::TuiArgs::default()),
    };
    logging.tell();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lvlmscope: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one line. A candle error's backtrace (present whenever
/// `RUST_BACKTRACE` is set) is dropped, and any cause that still spans lines keeps its first.
fn sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<candle_core::Error>() {
            Some(c) => lvlmscope::model::error_message(c),
            None => cause.to_string(),
        };
        let text = text.lines().next().unwrap_or_default().trim().to_string();
        if text.is_empty() {
            continue;
        }
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // Every setting is parsed here, once; the library takes types.
    let capture = args.capture.parse().map_err(anyhow::Error::msg)?;
    let image_mode: ImageMode = args.image_mode.parse()?;
    let dtype = parse_dtype(&args.dtype)?;
    let device: DeviceName = args.device.parse()?;
    let mut prompts = args.prompt.into_iter();
    let request = RunRequest {
        model: args.model,
        image: args.image,
        prompt: prompts.next().unwrap_or_default(),
        image_mode,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        dtype,
        device,
        capture,
        relevancy: args.relevancy,
        causal: args.causal,
        max_pixels: args.max_pixels,
        min_pixels: args.min_pixels,
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .expect("static template is valid"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = Instant::now();
    let mut decode_started = None;
    let mut produced = 0usize;
    let mut stdout = std::io::stdout();
    let cancel = AtomicBool::new(false);
    let follow_ups: Vec<String> = prompts.collect();
    let session =
        job::run_conversation(
            &request,
            &follow_ups,
            &cancel,
            &mut |progress| match progress {
                Progress::Stage(stage) => {
                    if stage == "decoding" {
                        decode_started = Some(Instant::now());
                    }
                    bar.set_message(stage);
                }
                Progress::Token { text, index, .. } => {
                    let turn_break = index == 0 && produced > 0;
                    produced += 1;
                    bar.suspend(|| {
                        if turn_break {
                            let _ = writeln!(stdout);
                        }
                        let _ = write!(stdout, "{text}");
                        let _ = stdout.flush();
                    });
                    if let Some(t0) = decode_started {
                        let rate = produced as f64 / t0.elapsed().as_secs_f64().max(1e-6);
                        bar.set_message(format!("decoding: {produced} tokens, {rate:.1} tokens/s"));
                    }
                }
                Progress::Fraction(_) => {}
            },
        );
    bar.finish_and_clear();
    let session = session?;
    println!();
    let dtype = if args.f32_attention {
        AttentionDtype::F32
    } else {
        AttentionDtype::F16
    };
    session::save(&session, &args.save, dtype)
        .with_context(|| format!("could not save the session to {}", args.save.display()))?;
    eprintln!(
        "{} tokens in {:.2}s; session saved to {}",
        session.num_output(),
        started.elapsed().as_secs_f64(),
        args.save.display()
    );
    Ok(())
}

fn report(args: cli::ReportArgs) -> anyhow::Result<()> {
    if args.method == "lens" {
        return Ok(interventions::lens(&interventions::LensOptions {
            file: args.file,
            model: args.model,
            token: args.token.unwrap_or(0),
            layer: args.layer,
            region: args.region,
            json: args.json,
            cache: args.cache,
            turn: args.turn,
            dtype: parse_dtype(&args.dtype)?,
            device: args.device.parse::<DeviceName>()?.open()?,
        })?);
    }
    let method = eval_cli::resolve_best_heads(&args.method, args.heads.as_deref())?;
    lvlmscope::report::run(lvlmscope::report::ReportOptions {
        file: args.file,
        token: args.token,
        method: Some(method),
        layer: args.layer,
        head: args.head,
        png: args.png,
        json: args.json,
        theme: args.theme,
        residual: args.residual,
        region: args.region,
        turn: args.turn,
    })
}

fn knockout(args: cli::KnockoutArgs) -> anyhow::Result<()> {
    let request = interventions::request(
        args.token,
        &args.block,
        &args.layers,
        &args.query,
        args.region,
    )?;
    Ok(interventions::knockout(&interventions::KnockoutOptions {
        file: args.file,
        model: args.model,
        request,
        json: args.json,
        dtype: parse_dtype(&args.dtype)?,
        device: args.device.parse::<DeviceName>()?.open()?,
    })?)
}

fn tui(args: cli::TuiArgs) -> anyhow::Result<()> {
    let args = if args.session.is_none()
        && args.model.is_none()
        && args.image.is_none()
        && args.prompt.is_none()
    {
        with_demo(args)?
    } else {
        args
    };
    let settings = lvlmscope::job::RunSettings {
        dtype: args.dtype.as_deref().map(parse_dtype).transpose()?,
        device: args
            .device
            .as_deref()
            .map(str::parse::<DeviceName>)
            .transpose()?,
    };
    if let Some(device) = settings.device {
        device.open()?;
    }
    lvlmscope::tui::run(lvlmscope::tui::TuiOptions {
        session: args.session,
        model: args.model,
        image: args.image,
        prompt: args.prompt,
        theme: args.theme,
        heads: args.heads,
        compare: args.compare,
        settings,
    })
}

/// Fills in the embedded demo: its model, its first scene and that scene's question.
fn with_demo(args: cli::TuiArgs) -> anyhow::Result<cli::TuiArgs> {
    let model = lvlmscope::demo::demo_model_dir().context("could not unpack the demo model")?;
    let scenes = lvlmscope::demo::demo_scenes_dir().context("could not unpack the demo scenes")?;
    let scene = lvlmscope::demo::demo_scenes()
        .into_iter()
        .next()
        .context("the demo scenes are missing from this build")?;
    Ok(cli::TuiArgs {
        model: Some(model.display().to_string()),
        image: Some(scenes.join(format!("{}.png", scene.name))),
        prompt: Some(scene.question),
        ..args
    })
}

fn eval(args: cli::EvalArgs) -> anyhow::Result<()> {
    lvlmscope::eval::check_scenes(args.scenes)?;
    if args.heads {
        return eval_cli::heads(args);
    }
    if args.sanity {
        return eval_cli::sanity(args);
    }
    eval_cli::faithfulness(args)
}
