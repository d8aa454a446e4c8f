//! The `ccs` binary: parse, dispatch, map errors to exit codes. Nothing else lives here.
#![forbid(unsafe_code)]

use clap::Parser;

use ccs::cli::{Cli, CliproxyCommand, Command, DaemonCommand, SimCommand};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config { json } => ccs::commands::config::run(json),
        Command::Cliproxy(c) => match c {
            CliproxyCommand::Start => ccs::commands::cliproxy::start(),
            CliproxyCommand::Stop => ccs::commands::cliproxy::stop(),
            CliproxyCommand::Restart => ccs::commands::cliproxy::restart(),
            CliproxyCommand::Status { json } => ccs::commands::cliproxy::status(json),
        },
        Command::Daemon(DaemonCommand::Run) => ccs::commands::cliproxy::run_foreground(),
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
