//! `facegate`: the gate service and its command line. This file is the table of contents:
//! parse arguments, install the log subscriber, run one command, map errors to exit codes.

mod cli;
mod cmd;
mod config;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::init_tracing(cli.verbose, cli.log_json);
    let result = match &cli.command {
        Command::Demo(a) => cmd::demo::run(&cli, a),
        Command::Detect(a) => cmd::detect::run(&cli, a),
        Command::Compare(a) => cmd::compare::run(&cli, a),
        Command::Eval(a) => cmd::eval::run(&cli, a),
        Command::Bench(a) => cmd::bench::run(&cli, a),
        Command::Validate => cmd::validate::run(&cli),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("facegate: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
