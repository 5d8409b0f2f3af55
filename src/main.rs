//! `prom-mtls-webhook`: parse the command line, run the subcommand.

use std::process::ExitCode;

use clap::Parser as _;
use prom_mtls_webhook::cli::Cli;

fn main() -> ExitCode {
    prom_mtls_webhook::commands::run(Cli::parse())
}
