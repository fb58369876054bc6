//! `lvlmscope eval` (faithfulness and pointing), `eval --heads` and `eval --sanity`, and the
//! `--heads FILE` of `report`: parse the flags, load the model (of any pipeline), hand over to
//! [`lvlmscope::eval`] and print what it returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::EvalArgs;
use lvlmscope::eval::EvalOptions;
use lvlmscope::explain::catalogue::heads::{self, read_scores, HeadSel};
use lvlmscope::explain::catalogue::MapId;
use lvlmscope::generate::parse_dtype;
use lvlmscope::job::{ModelSpec, SessionModel};
use lvlmscope::model::DeviceName;

/// `method` with `attention.heads.best` replaced by the best heads of the score file `heads`,
/// when one is given.
pub fn resolve_best_heads(method: &str, heads: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = heads else {
        return Ok(method.to_string());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the head score file {}", path.display()))?;
    let scores = read_scores(&text).with_context(|| format!("{}", path.display()))?;
    Ok(match method.parse::<MapId>() {
        Ok(MapId::Heads(sel)) => MapId::Heads(sel.resolve_with(Some(&scores))).to_string(),
        _ if method == "attention.heads" => {
            MapId::Heads(HeadSel::Best.resolve_with(Some(&scores))).to_string()
        }
        _ => method.to_string(),
    })
}

/// The JSON file named by --json, created before the run so that an unwritable path fails
/// first.
fn json_file(args: &EvalArgs) -> anyhow::Result<Option<(std::fs::File, PathBuf)>> {
    args.json
        .as_ref()
        .map(|path| {
            std::fs::File::create(path)
                .with_context(|| format!("could not write {}", path.display()))
                .map(|f| (f, path.clone()))
        })
        .transpose()
}

/// Loads the model --model names (default: the embedded demo), of whichever pipeline its
/// config names, and the run's options.
fn load(args: &EvalArgs) -> anyhow::Result<(SessionModel, EvalOptions)> {
    // The --map ids first, so that a typo fails before the model loads.
    let maps = args
        .maps
        .iter()
        .map(|id| id.parse::<MapId>())
        .collect::<Result<Vec<_>, _>>()?;
    let (name, label) = match &args.model {
        Some(m) => (m.clone(), m.clone()),
        None => {
            let dir =
                lvlmscope::demo::demo_model_dir().context("could not unpack the demo model")?;
            (dir.display().to_string(), "embedded demo model".to_string())
        }
    };
    let device_name = args.device.parse::<DeviceName>()?;
    let spec = ModelSpec {
        path: name.clone(),
        dtype: parse_dtype(&args.dtype)?,
        device: device_name,
    };
    let model = SessionModel::load(&spec, &device_name.open()?)?;
    let options = EvalOptions {
        model_label: label,
        scenes: args.scenes,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
        steps: args.steps,
        extra: demo_extra(&name).into_iter().chain(maps).collect(),
        region: args.region,
        ..EvalOptions::default()
    };
    Ok((model, options))
}

/// `attention.heads.best` when the model is the embedded demo, whose head scores are known.
fn demo_extra(model: &str) -> Vec<MapId> {
    if heads::is_demo_model(model) {
        vec![MapId::Heads(HeadSel::Best)]
    } else {
        Vec::new()
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(len as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {what} {{elapsed:>4}} (eta {{eta}})"
        ))
        .expect("static template is valid"),
    );
    bar
}

fn write_json(
    file: Option<(std::fs::File, PathBuf)>,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if let Some((mut file, path)) = file {
        let json = serde_json::to_string_pretty(value)?;
        writeln!(file, "{json}").with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}

/// Loads the model, runs one eval mode with a progress bar over `total(layers)` scenes, prints
/// its table and `summary` on stderr, and writes its JSON when --json asks for it.
fn run_mode<R: serde::Serialize>(
    args: EvalArgs,
    total: impl FnOnce(&SessionModel) -> usize,
    run: impl FnOnce(
        &SessionModel,
        &EvalOptions,
        &AtomicBool,
        &mut dyn FnMut(usize, usize),
    ) -> Result<R, lvlmscope::eval::EvalError>,
    table: impl FnOnce(&R) -> String,
    summary: impl FnOnce(&R, f64) -> String,
) -> anyhow::Result<()> {
    let file = json_file(&args)?;
    let (model, options) = load(&args)?;
    let bar = bar(total(&model), "scenes");
    let cancel = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let report = run(&model, &options, &cancel, &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let report = report?;
    print!("{}", table(&report));
    eprintln!("{}", summary(&report, started.elapsed().as_secs_f64()));
    write_json(file, &report)
}

/// Runs `lvlmscope eval`: the faithfulness and pointing benchmark.
pub fn faithfulness(args: EvalArgs) -> anyhow::Result<()> {
    let scenes = args.scenes;
    run_mode(
        args,
        |_| scenes,
        lvlmscope::eval::evaluate,
        |r| r.table(),
        |r, _| r.timing_line(),
    )
}

/// Runs `lvlmscope eval --heads`.
pub fn heads(args: EvalArgs) -> anyhow::Result<()> {
    let scenes = args.scenes;
    run_mode(
        args,
        |_| scenes,
        lvlmscope::eval::heads::evaluate_heads,
        |r| r.table(),
        |r, seconds| {
            format!(
                "{} heads scored on {} scenes in {seconds:.1}s",
                r.heads.len(),
                r.parameters.scored
            )
        },
    )
}

/// Runs `lvlmscope eval --sanity`.
pub fn sanity(args: EvalArgs) -> anyhow::Result<()> {
    let scenes = args.scenes;
    run_mode(
        args,
        |model| scenes * (model.decoder_shape().0 + 1),
        lvlmscope::eval::sanity::sanity,
        |r| r.table(),
        |r, seconds| {
            format!(
                "sanity check on {} scenes in {seconds:.1}s",
                r.parameters.scored
            )
        },
    )
}
