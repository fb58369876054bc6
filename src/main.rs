//! Temporary command line of the `tui` branch (`tui` and `report` only); the integrator's full
//! CLI replaces it, keeping these flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lvlmscope",
    about = "Look inside vision-language models from a terminal"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The terminal app.
    Tui {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        image: Option<PathBuf>,
        #[arg(long)]
        prompt: Option<String>,
        #[arg(long)]
        session: Option<PathBuf>,
        #[arg(long)]
        theme: Option<String>,
    },
    /// Print the answer and the map of one token without the app.
    Report {
        file: PathBuf,
        #[arg(long)]
        token: Option<usize>,
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        layer: Option<usize>,
        #[arg(long)]
        head: Option<usize>,
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        theme: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        None => lvlmscope::tui::run(lvlmscope::tui::TuiOptions::default()),
        Some(Command::Tui {
            model,
            image,
            prompt,
            session,
            theme,
        }) => lvlmscope::tui::run(lvlmscope::tui::TuiOptions {
            session,
            model,
            image,
            prompt,
            theme,
        }),
        Some(Command::Report {
            file,
            token,
            method,
            layer,
            head,
            png,
            json,
            theme,
        }) => lvlmscope::report::run(lvlmscope::report::ReportOptions {
            file,
            token,
            method,
            layer,
            head,
            png,
            json,
            theme,
        }),
    };
    if let Err(e) = result {
        eprintln!("lvlmscope: {e}");
        std::process::exit(1);
    }
}
