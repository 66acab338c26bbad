//! `iaasctl`: the command-line client of the iaas-rs platform. See `iaasctl --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    iaasctl::execute(iaasctl::Cli::parse())
}
