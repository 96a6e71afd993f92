//! `facegate`: the gate service and its command line. This file is the table of contents:
//! parse arguments, install the log subscriber, run one command, map errors to exit codes.

mod adminproto;
mod adminsock;
mod cli;
mod cmd;
mod config;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as in every Unix tool, instead of panicking.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // ONNX Runtime writes telemetry files under ~/.cache unless this is set before it loads;
    // set here, while the process has one thread.
    // SAFETY: no other thread exists yet, so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var(facegate_vision::DISABLE_TELEMETRY_VAR, "1");
    }
    // Before anything else opens a descriptor: refuse an inherited network socket (the seccomp
    // filter only stops new ones) and close every other inherited descriptor above stderr, so
    // neither this process nor a gate command it starts can use one (Art. 8).
    if let Err(e) = facegate_policy::egress::close_inherited() {
        eprintln!("facegate: error: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    // The site relay is another program that must reach a broker: hand over to it before the
    // guard, which an exec would carry over. Nothing of this process runs after the exec.
    if let Command::Relay { args } = &cli.command {
        eprintln!("facegate: error: {:#}", cmd::relay::exec(args));
        return ExitCode::from(2);
    }
    output::init_tracing(cli.verbose, cli.log_json);
    // No facegate command needs the network: every process closes it on itself before any
    // thread pool starts (Art. 8). `doctor` reports when the kernel refuses the filter.
    if let Err(e) = facegate_policy::egress::install() {
        tracing::warn!(error = %e, "egress guard not installed");
    }
    let result = match &cli.command {
        Command::Run(a) => cmd::run::run(&cli, a),
        Command::Demo(a) => cmd::demo::run(&cli, a),
        Command::Detect(a) => cmd::detect::run(&cli, a),
        Command::Compare(a) => cmd::compare::run(&cli, a),
        Command::Eval(a) => cmd::eval::run(&cli, a),
        Command::Bench(a) => cmd::bench::run(&cli, a),
        Command::Validate { service } => cmd::validate::run(&cli, *service),
        Command::Cameras(a) => cmd::cameras::cameras(a),
        Command::Keygen(a) => cmd::keys::keygen(&cli, a),
        Command::RotateKey {
            new_key_file,
            operator,
        } => cmd::keys::rotate_key(&cli, new_key_file, operator),
        Command::Sweep => cmd::store::sweep(&cli),
        Command::Enroll(a) => cmd::enroll::enroll(&cli, a),
        Command::Consent(c) => cmd::consent::consent(&cli, c),
        Command::Subjects(c) => cmd::subjects::subjects(&cli, c),
        Command::Enrollment(c) => cmd::transfer::enrollment(&cli, c),
        Command::Credential(c) => cmd::credential::run(&cli, c),
        Command::Gate(c) => cmd::gate::run(&cli, c),
        Command::Notice { lang, json } => cmd::records::notice(&cli, lang.as_deref(), *json),
        Command::Verify(a) => cmd::verify::verify(&cli, a),
        Command::Identify(a) => cmd::verify::identify(&cli, a),
        Command::Audit(c) => cmd::records::audit(&cli, c),
        Command::Report(c) => cmd::records::report(&cli, c),
        Command::Doctor(a) => cmd::doctor::run(&cli, a),
        Command::Relay { .. } => unreachable_relay(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("facegate: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `relay` was handed over before the guard; this arm only completes the match.
fn unreachable_relay() -> anyhow::Result<ExitCode> {
    anyhow::bail!("facegate relay is handed over to facegate-relay before any command runs")
}
