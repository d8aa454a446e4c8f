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
    /// The local proxy daemon Claude Code talks to: start, stop, restart, status.
    #[command(subcommand)]
    Cliproxy(CliproxyCommand),
    /// Run the daemon in the foreground (for systemd and debugging).
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// The simulated Anthropic (OAuth authority + Messages API with quotas and faults).
    #[command(subcommand)]
    Sim(SimCommand),
    /// Show the effective configuration (secrets redacted) and where each file lives.
    Config {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the simulator on 127.0.0.1 until Ctrl-C.
    #[command(
        long_about = "Serve a local stand-in for Anthropic on 127.0.0.1: the OAuth authority \
(/oauth/authorize auto-approves test users, /v1/oauth/token with PKCE and rotating refresh \
tokens), the Messages API (/v1/messages JSON and SSE, /v1/messages/count_tokens, /v1/models) with \
per-account 5-hour and 7-day budgets and the unified rate-limit headers, /api/oauth/profile and \
/api/oauth/usage, and injectable faults.\n\n\
Control API on the same port: GET /sim/state, GET /sim/counters, POST /sim/users, \
POST /sim/users/EMAIL/budget, POST /sim/users/EMAIL/revoke, POST /sim/faults, DELETE /sim/faults, \
POST /sim/next-login, POST /sim/clock/advance (with --manual-clock).\n\n\
Point ccs at it with config.yaml: upstream.api_base and the oauth.*_url keys set to the printed URL.",
        after_long_help = concat!("SCENARIO FILE (YAML; this is specs/sim-scenario.yaml):\n\n", include_str!("../specs/sim-scenario.yaml"))
    )]
    Serve {
        /// Users, budgets, token lifetime and faults (see below). Without it: three users
        /// (alice, bob, carol @example.com) with generous budgets.
        #[arg(long, value_name = "FILE")]
        scenario: Option<std::path::PathBuf>,
        /// Port on 127.0.0.1; 0 picks a free one and prints it.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Run on a clock that moves only through POST /sim/clock/advance.
        #[arg(long)]
        manual_clock: bool,
        /// Seed for the tokens it issues (same seed, same tokens).
        #[arg(long)]
        seed: Option<u64>,
        /// Print the listening address as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CliproxyCommand {
    /// Start the daemon in the background (no-op when it already runs) and print its URL.
    Start,
    /// Stop the daemon; in-flight responses finish first (up to 10 s).
    Stop,
    /// Stop, then start again. Accounts, quota windows, cooldowns and sessions carry over.
    Restart,
    /// Whether the daemon runs, its URL, uptime, accounts by state, requests and hops in the
    /// last hour.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Serve on cliproxy.host:cliproxy.port until SIGINT/SIGTERM. Logs go to
    /// $CCS_HOME/cliproxy/logs/ and stderr.
    Run,
}
