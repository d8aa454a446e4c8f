//! The command line, as clap definitions only. Behaviour lives in `commands/`.

use clap::{Args, Parser, Subcommand};

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
    #[command(flatten)]
    pub proxy: crate::endpoint::ProxyFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Claude accounts (log in, list, choose, rename, log out) and Claude Code on the pool.
    Claude(ClaudeArgs),
    /// Start Claude Code on a pool (default: claude), passing everything after `--` through.
    Run {
        /// The pool to draw from (see `ccs pool list`).
        target: Option<String>,
        /// No browser for a first login: paste the code instead.
        #[arg(long)]
        headless: bool,
        /// Start even when every account is limited.
        #[arg(long)]
        force: bool,
        /// Arguments for Claude Code.
        #[arg(last = true, value_name = "CLAUDE_ARGS")]
        args: Vec<String>,
    },
    /// Native profiles: named Claude Code instances with their own login and config folder.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Pools: which accounts a launch draws from, and in what order.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Everything on the embedded simulator, with nothing set up: three logins, a
    /// conversation that crosses account 1's limit and continues on account 2.
    Demo {
        /// Run the turns through the real Claude Code CLI (when installed).
        #[arg(long)]
        claude: bool,
        /// Leave the simulator and the daemon running afterwards (until Ctrl-C), with a
        /// dashboard login link, so the dashboard can be looked at and more hops driven.
        #[arg(long)]
        keep: bool,
    },
    /// The local proxy daemon Claude Code talks to: start, stop, restart, status.
    #[command(subcommand)]
    Cliproxy(CliproxyCommand),
    /// Run the daemon in the foreground (for systemd and debugging).
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// `ccs NAME [--share-context | --context-group G | --deeper-continuity] [ARGS…]`: start
    /// Claude Code as native profile NAME.
    #[command(external_subcommand)]
    Profile(Vec<String>),
    /// The simulated Anthropic (OAuth authority + Messages API with quotas and faults).
    #[command(subcommand)]
    Sim(SimCommand),
    /// Open the dashboard in the browser, already logged in (a one-time link), and print its
    /// address; over SSH or without a display it only prints. `ccs config show` prints the
    /// configuration.
    Config {
        #[command(subcommand)]
        show: Option<ConfigCommand>,
        /// Only print the address and the one-time login link; open nothing.
        #[arg(long)]
        print: bool,
        /// Print the addresses as JSON for scripts (opens nothing).
        #[arg(long)]
        json: bool,
    },
    /// Events worth your attention (an account that needs a new login, a pool running low or
    /// all limited, quota back early, refreshes failing, a restart after a crash): what holds
    /// now and the latest told. `ccs alerts test` sends one of each to every channel.
    #[command(
        long_about = "Events worth your attention, as the daemon tells them: an account that \
needs a new login, a pool whose runway drops under alerts.runway_below, a pool whose accounts are \
all limited, an account whose quota came back before its reset, a token refresh that keeps \
failing, a start after a run that did not stop cleanly. Each is told once per change of state \
(and at most every alerts.min_interval) to the webhook (alerts.webhook: a JSON POST with a \
Slack-compatible text field, signed in X-Ccs-Signature), the desktop (alerts.desktop), the \
dashboard's banner and Claude Code's status line. Alone, this command prints what holds now \
and the latest told."
    )]
    Alerts {
        #[command(subcommand)]
        command: Option<AlertsCommand>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Claude Code's status line: reads the status JSON Claude Code gives on stdin and prints
    /// the account serving this conversation with its 5-hour and weekly use. `ccs claude` and
    /// `ccs run` set it up (cliproxy.status_line); it prints nothing when the daemon is down.
    Statusline,
    /// Check everything a support request would ask (the daemon, each account, the clock,
    /// CCS_HOME's and config.yaml's permissions, Claude Code, a remote, Redis, disk space),
    /// each finding with the command that fixes it; exit status 1 when something needs action.
    Doctor {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Shell completions for bash, zsh, fish or PowerShell, printed to standard output.
    #[command(
        long_about = "Print the completion script for SHELL to standard output. Where it goes:\n\n\
  bash        ccs completions bash > ~/.local/share/bash-completion/completions/ccs\n\
  zsh         ccs completions zsh > ~/.zfunc/_ccs   (with fpath+=~/.zfunc before compinit in ~/.zshrc)\n\
  fish        ccs completions fish > ~/.config/fish/completions/ccs.fish\n\
  powershell  ccs completions powershell >> $PROFILE\n\n\
A new shell then completes ccs's commands and options."
    )]
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
    /// Write one manual page per command into DIR (`cargo xtask man` runs it).
    #[command(hide = true)]
    Manual {
        /// Where the pages go (made when missing).
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send one alert of each kind, marked as a test, to every channel, and say how each took
    /// them (exit 1 when a configured channel refused).
    Test {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a client key named NAME and print it once (only its SHA-256 is kept).
    Add {
        name: String,
        /// The key's own limit: requests started per minute (then a 429 that says it is this
        /// daemon's limit, not Anthropic's).
        #[arg(long, value_name = "N")]
        rpm: Option<u32>,
        /// The key's own limit: requests in flight at once (a stream counts until it ends).
        #[arg(long, value_name = "N")]
        concurrent: Option<u32>,
        /// The pools the key may draw from (repeat for several); without it, any. A request
        /// for another pool (`X-CCS-Pool`, `/pool/NAME/`) is refused with a 403.
        #[arg(long, value_name = "POOL")]
        pool: Vec<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The client keys: names, where each is set, when it was made (never the keys).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke the key named NAME: refused from the next request on, no restart.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the effective configuration (secrets redacted) and where each file lives.
    Show {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Simulate the whole system in-process (real actors, routing and quota code over the
    /// simulator's model, on a simulated clock) and report what happened, with the invariants
    /// of specs/failover-invariants.md checked after every simulated minute.
    Run {
        /// Accounts in the pool (random 5-hour budgets of 10..60 requests).
        #[arg(long, default_value_t = 4)]
        accounts: usize,
        /// Conversations, spread over the simulated time (1..30 turns, 1..10 minutes apart).
        #[arg(long, default_value_t = 50)]
        sessions: usize,
        /// Simulated hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        /// Same seed, same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Faults to inject at random times, comma-separated: refresh, fatal, slow, 429,
        /// 429_retry, 401, 529, reset, midstream, crash, jump, pause, external.
        #[arg(long, value_delimiter = ',')]
        faults: Vec<String>,
        /// Replay a world from a file instead of generating one: a regression file
        /// (tests/regressions/*.json, or what `ccs sim soak` prints) or a bare spec.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["accounts", "sessions", "hours", "seed", "faults"])]
        spec: Option<std::path::PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Explore many random worlds (the distribution the test suite samples on a fixed seed)
    /// and report every one that breaks an invariant, as a regression file to keep.
    #[command(
        long_about = "Run WORLDS random simulated worlds (1-8 accounts, 1-15 sessions over 1-4 \
hours, up to 8 faults of every kind) through the real actors and driver, on all cores, checking \
every invariant of specs/failover-invariants.md. World i of seed S is always the same world.\n\n\
A failing world is printed as JSON: save it as tests/regressions/NAME.json (fill in name and \
why) and the test suite runs it from then on. Exits non-zero when any world failed."
    )]
    Soak {
        /// How many worlds.
        #[arg(long, default_value_t = 10_000)]
        worlds: u64,
        /// Which exploration: another seed, other worlds.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
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
    /// Each account's 5-hour and weekly windows, state, cooldown, pool position, and which
    /// account new sessions go to next.
    Quota {
        /// The pool to show (default: claude).
        #[arg(long)]
        pool: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Named client keys, one per person or machine sharing this daemon: requests are
    /// attributed to the name in the dashboard, usage and metrics.
    #[command(subcommand)]
    Key(KeyCommand),
    /// This daemon's TLS certificate: with --self-signed, make a key and a certificate for
    /// the hosts the clients use; alone, show the configured certificate's fingerprint.
    #[command(
        long_about = "Serve HTTPS to the machines that share this daemon. With --self-signed \
HOST…, write a new private key and a self-signed certificate naming each HOST (a name or an IP \
address the clients use) under $CCS_HOME/tls/, print the cliproxy.tls lines for config.yaml and \
the SHA-256 fingerprint the clients pin (--proxy-fingerprint or \
cliproxy_server.remote.fingerprint). Restart the daemon to serve it.\n\n\
Without --self-signed, print the fingerprint of the certificate config.yaml names (a \
certificate from your own CA works too: set cliproxy.tls.cert and key to its PEM files)."
    )]
    Cert {
        /// Make a new key and self-signed certificate for these hosts.
        #[arg(long, value_name = "HOST", num_args = 1..)]
        self_signed: Vec<String>,
        /// Replace a certificate already there.
        #[arg(long)]
        force: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Hash a management secret for config.yaml (`management_secret_argon2`), so the file
    /// holds no secret: reads it from standard input (not echoed on a terminal) and prints the
    /// line to paste. The CLI then takes the secret from CCS_MANAGEMENT_KEY.
    HashSecret,
    /// Tokens used per account and per model over the last 24 hours or 7 days, read from
    /// the usage of every answer, and how much of each window is used.
    Usage {
        /// `24h` or `7d`.
        #[arg(long, default_value = "24h", value_parser = ["24h", "7d"])]
        span: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The daemon as a service of the system's manager (systemd, launchd): started at login
    /// or boot, back after a crash.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Whether the daemon runs, its URL, uptime, accounts by state, requests and hops in the
    /// last hour.
    Status {
        /// The provider to report on; `claude` is the only one.
        #[arg(value_parser = ["claude"])]
        provider: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Make the daemon a service: a systemd user unit on Linux (a launchd agent on macOS),
    /// enabled and started; a daemon the CLI had started gives way to it. Running it again
    /// changes nothing.
    #[command(
        long_about = "Make the daemon of this CCS_HOME a service of the system's manager, enabled \
and started: on Linux a systemd user unit (~/.config/systemd/user/ccs.service: restarts after a \
crash, logs to the journal and to $CCS_HOME/cliproxy/logs/), on macOS a launchd agent \
(~/Library/LaunchAgents/dev.ccs.daemon.plist). A daemon the CLI had started is stopped cleanly \
first; from then on the CLI's on-demand start asks the manager. Running it again changes \
nothing.\n\n\
With --system (as root): a system unit (/etc/systemd/system/ccs.service) running as a dedicated \
user (--user, default ccs) with systemd's hardening (ProtectSystem=strict, NoNewPrivileges, …), \
for a server. A user service starts at login; `loginctl enable-linger USER` starts it at boot."
    )]
    Install {
        /// A system service (root) instead of a user service.
        #[arg(long)]
        system: bool,
        /// The user a system service runs as (it must exist) [default: ccs].
        #[arg(long, value_name = "NAME", requires = "system")]
        user: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop and remove the service (accounts, settings and logs stay in CCS_HOME). Running it
    /// again changes nothing.
    Uninstall {
        /// The system service instead of the user service.
        #[arg(long)]
        system: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Whether the service is installed, for which home, enabled and running.
    Status {
        /// The system service instead of the user service.
        #[arg(long)]
        system: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Serve on cliproxy.host:cliproxy.port until SIGINT/SIGTERM. Logs go to
    /// $CCS_HOME/cliproxy/logs/ and stderr. Exits with status 3 when another daemon already
    /// serves this CCS_HOME.
    Run,
}

/// `ccs claude …`: with an account flag it manages accounts; otherwise it starts Claude Code on
/// the pool and passes every argument through (`ccs claude "explain this code"`, `-p`,
/// `--resume ID`, `--model M`).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ccs claude --auth                 log in (browser)\n  ccs claude --auth --headless      log in by pasting a code (SSH)\n  ccs claude --auth --add           add another account\n  ccs claude --accounts             list accounts, their state and quota\n  ccs claude --use work             make `work` the default account\n  ccs claude --nickname home --account bob@example.com\n  ccs claude --logout --all --yes\n  ccs claude \"explain this code\"    run Claude Code on the pool"
)]
pub struct ClaudeArgs {
    /// Log an account in (OAuth with PKCE). Opens the browser and listens on 127.0.0.1 for
    /// the callback (oauth.callback_port, default 54545).
    #[arg(long)]
    pub auth: bool,
    /// With --auth: add another account; the existing ones stay.
    #[arg(long)]
    pub add: bool,
    /// With --auth: no browser; print the address and take the pasted CODE#STATE (or the
    /// callback address) on stdin. Alone, before any login: same as --auth --headless.
    #[arg(long)]
    pub headless: bool,
    /// List the accounts: default (*), nickname, e-mail, plan, state, 5-hour and weekly use,
    /// cooldown, position in the pool.
    #[arg(long)]
    pub accounts: bool,
    /// With --accounts: print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Make this account (nickname or e-mail) the default.
    #[arg(long = "use", value_name = "ACCOUNT")]
    pub use_account: Option<String>,
    /// Rename the default account (or --account) to this nickname.
    #[arg(long, value_name = "NEW")]
    pub nickname: Option<String>,
    /// The account --nickname or --logout acts on (nickname or e-mail).
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,
    /// Log out (remove the token and its file): the default account, --account, or --all.
    #[arg(long)]
    pub logout: bool,
    /// With --logout: every account (asks first on a terminal).
    #[arg(long)]
    pub all: bool,
    /// With --logout --all: do not ask.
    #[arg(long)]
    pub yes: bool,
    /// Start Claude Code even when every account is limited (it will show the proxy's 429).
    #[arg(long)]
    pub force: bool,
    /// Arguments for Claude Code, passed through untouched.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CLAUDE_ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Every pool and its members in drain order.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One pool (default: claude) with its accounts' state.
    Show { name: Option<String> },
    /// A new pool with these accounts, in this order.
    Create { name: String, accounts: Vec<String> },
    /// Add an account at the end of a pool.
    Add { name: String, account: String },
    /// Take an account out of a pool (it stays logged in).
    Remove { name: String, account: String },
    /// Set the drain order: `ccs pool order claude bob,alice`.
    Order { name: String, order: String },
    /// Keep an account logged in and refreshed, but send it no traffic.
    Pause { account: String },
    /// Let a paused account take traffic again.
    Resume { account: String },
    /// Delete a pool (its accounts stay logged in).
    Delete { name: String },
    /// Move a native profile's grant into the pool: the daemon becomes its only refresher and
    /// the profile's credential file is retired.
    Import { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Create CCS_HOME/instances/NAME and log an account in there (Claude Code's own
    /// credential file; Claude Code refreshes it). Start it with `ccs NAME`.
    Create {
        name: String,
        /// Share Claude Code's history (projects/) with the profiles of this group.
        #[arg(long, value_name = "G")]
        context_group: Option<String>,
        /// Same as --context-group default.
        #[arg(long)]
        share_context: bool,
        /// Also share session-env, file-history, shell-snapshots and todos.
        #[arg(long)]
        deeper_continuity: bool,
        /// Re-create a profile that exists (a new login; shared groups keep their data).
        #[arg(long)]
        force: bool,
        /// No browser: paste the code.
        #[arg(long)]
        headless: bool,
    },
    /// Every profile: e-mail, token expiry, context group.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One profile in detail.
    Show { name: String },
    /// Delete one profile's folder (shared context groups keep their data).
    Remove { name: String },
    /// Mark a profile as the default one.
    Default { name: String },
    /// Take a profile out of its context group: its shared folders become private copies.
    LeaveGroup { name: String },
}
