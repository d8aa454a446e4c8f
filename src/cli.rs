//! The command line, as clap definitions only. Behaviour lives in `commands/`.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ccs",
    version,
    about = "Use several Claude subscriptions as one",
    long_about = "ccs logs each Claude account in once, keeps every token fresh, and runs a local \
daemon on 127.0.0.1:8317 that Claude Code talks to. When the account in use reaches its 5-hour \
or weekly limit, the conversation continues on the next account of the pool.\n\n\
State lives in $CCS_HOME (default ~/.ccs); settings in $CCS_HOME/config.yaml."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the effective configuration (secrets redacted) and where each file lives.
    Config {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}
