//! The `ccs` binary: parse, dispatch, map errors to exit codes. Nothing else lives here.
#![forbid(unsafe_code)]

use clap::Parser;

use ccs::cli::{Cli, Command, SimCommand};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config { json } => ccs::commands::config::run(json),
        Command::Sim(SimCommand::Serve {
            scenario,
            port,
            manual_clock,
            seed,
            json,
        }) => ccs::commands::sim::serve(scenario.as_deref(), port, manual_clock, seed, json),
    };
    if let Err(e) = result {
        eprintln!("ccs: {e:#}");
        std::process::exit(1);
    }
}
