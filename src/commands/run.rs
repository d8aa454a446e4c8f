//! `ccs run [TARGET] [-- ARGS]` and `ccs claude [ARGS]`: make sure the daemon runs and an
//! account of the pool can take a request, then become Claude Code pointed at the proxy.
//!
//! Must not: alter Claude Code's arguments (in front of them, an interactive session gets
//! `--settings` with ccs's status line unless the user has one: `statusline.rs`), or hand it
//! anything but the client key.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;

use crate::api::AccountView;
use anyhow::{bail, Context, Result};

use super::accounts;
use crate::claude_code::find_claude;
use crate::client::Client;
use crate::config::{Config, Paths};
use crate::endpoint::Endpoint;

fn within_lead(a: &AccountView, lead_secs: u64) -> bool {
    let Some(exp) = a
        .expires_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return false;
    };
    exp.timestamp_millis() - super::now_ms() as i64 <= lead_secs as i64 * 1000
}

/// Why a first `ccs claude` with no terminal to answer on stops before it starts anything.
const NOBODY_TO_LOG_IN: &str = "no account is logged in, and logging one in needs you at a \
     terminal (standard input is closed here): run `ccs claude --auth` in a \
     terminal first (`ccs claude --auth --headless` over SSH), then this command again";

/// Whether standard input can never carry a pasted code: closed, or `/dev/null`. A pipe can
/// (a script that pastes the code), so only these two refuse.
fn stdin_is_closed() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(stdin) = std::fs::metadata("/dev/stdin") else {
        return true;
    };
    let null = std::fs::metadata("/dev/null");
    stdin.file_type().is_char_device() && null.is_ok_and(|n| n.rdev() == stdin.rdev())
}

/// Whether this home holds any account's token (its files under `auth/`), read without
/// starting a daemon.
fn has_local_account(paths: &Paths) -> bool {
    std::fs::read_dir(paths.auth_dir())
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("claude-") && name.ends_with(".json")
        })
}

/// Makes sure the pool can serve: logs the first account in when there is none, offers to
/// log dead accounts in again, refreshes tokens inside the lead, and reports when every
/// account is limited. Returns the accounts of the pool as the daemon sees them.
fn prepare(
    paths: &Paths,
    config: &Config,
    client: &Client,
    pool: &str,
    headless: bool,
    force: bool,
    remote: bool,
) -> Result<()> {
    let mut list = client.accounts()?;
    if list.is_empty() {
        if remote {
            bail!(
                "the remote daemon has no account logged in yet: its owner logs one in (on the \
                 server, or from here with `ccs claude --auth` and its management secret)"
            );
        }
        if pool != "claude" {
            bail!("no account is logged in: run `ccs claude --auth` first");
        }
        if stdin_is_closed() {
            bail!(NOBODY_TO_LOG_IN);
        }
        outln!("No Claude account is logged in yet: let's log one in.");
        let no_display =
            std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none();
        accounts::login(
            paths,
            config,
            false,
            headless || (no_display && !cfg!(target_os = "macos")),
        )?;
        list = client.accounts()?;
    }
    let members = client
        .pools()?
        .pools
        .remove(pool)
        .with_context(|| format!("there is no pool named {pool:?}: see `ccs pool list`"))?;
    let in_pool: Vec<&AccountView> = list
        .iter()
        .filter(|a| super::member_of(&a.email, &members))
        .collect();
    if in_pool.is_empty() {
        bail!("pool {pool:?} has no accounts: add one with `ccs pool add {pool} ACCOUNT`");
    }
    for a in in_pool.iter().filter(|a| a.state == "dead") {
        let email = &a.email;
        errln!(
            "Account {} ({email}) needs a new login: its grant is gone.",
            a.nickname
        );
        if !remote && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            err!("Log it in again now? [Y/n] ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            if matches!(line.trim(), "" | "y" | "Y" | "yes") {
                accounts::login(paths, config, true, headless)?;
            }
        } else {
            errln!("  run: ccs claude --auth --add   (and sign in as {email})");
        }
    }
    let lead = config.cliproxy.refresh_lead.0.as_secs();
    for a in in_pool
        .iter()
        .filter(|a| a.state != "dead" && !a.paused && within_lead(a, lead))
    {
        if let Err(e) = client.refresh(&a.email) {
            // The daemon's message names the account and says which case it is (the grant is
            // gone: log in again; or a passing failure: retried by itself).
            errln!("warning: before the launch, {e}");
        }
    }
    let q = client.quota(pool, None)?;
    if q.next_for_new_sessions.is_none() {
        let first = q
            .accounts
            .iter()
            .filter_map(|a| a.cooldown_until.clone().map(|t| (t, a.email.clone())))
            .min();
        let msg = match first {
            Some((t, who)) => format!("every account in pool {pool:?} is limited; {who} resets first, {} ({t})", accounts::until(Some(&t))),
            None => format!("no account in pool {pool:?} can take requests (dead or paused): see `ccs claude --accounts`"),
        };
        if !force {
            bail!(
                "{msg}. Start anyway with `ccs claude --force …` (--force goes before Claude's \
                 own arguments, which pass through untouched; Claude Code will show the proxy's 429)"
            );
        }
        errln!("warning: {msg}; starting anyway (--force)");
    }
    Ok(())
}

/// Becomes Claude Code on `pool`, with `args` untouched. Returns only on error. With a remote
/// daemon, the pool is checked only when its management secret is known (the client key alone
/// is enough to work), and Claude Code trusts the server's certificate through
/// `NODE_EXTRA_CA_CERTS`.
pub fn launch_pool(
    paths: &Paths,
    config: &Config,
    pool: &str,
    args: &[String],
    headless: bool,
    force: bool,
) -> Result<()> {
    let endpoint = Endpoint::resolve(paths, config)?;
    if endpoint.remote {
        endpoint.probe()?;
        if endpoint.client_key.is_empty() {
            bail!(
                "{} needs your client key: pass --proxy-auth-token, set CCS_PROXY_AUTH_TOKEN, or \
                 set cliproxy_server.remote.auth_token (the server's owner makes one with `ccs \
                 cliproxy key add NAME`)",
                endpoint.describe()
            );
        }
        if let Ok(client) = endpoint.management(config) {
            prepare(paths, config, &client, pool, headless, force, true)?;
        }
    } else {
        if stdin_is_closed() && !has_local_account(paths) {
            // Nothing is started for a login nobody can finish.
            bail!(NOBODY_TO_LOG_IN);
        }
        let client = super::cliproxy::connect(&endpoint, paths, config)?;
        prepare(paths, config, &client, pool, headless, force, false)?;
    }
    let claude = find_claude(config)?;
    let base = if pool == "claude" {
        endpoint.url.clone()
    } else {
        format!("{}/pool/{pool}", endpoint.url)
    };
    let mut cmd = std::process::Command::new(&claude);
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(settings) = super::statusline::settings_for(config, args, &cwd) {
        cmd.arg("--settings").arg(settings);
    }
    if let Some(ca) = endpoint.node_ca(paths)? {
        cmd.env("NODE_EXTRA_CA_CERTS", ca);
    }
    let err = cmd
        .args(args)
        .envs(endpoint.env_for_children())
        .env("ANTHROPIC_BASE_URL", base)
        .env("ANTHROPIC_AUTH_TOKEN", &endpoint.client_key)
        .env_remove("ANTHROPIC_API_KEY")
        .exec();
    Err(err).with_context(|| format!("cannot start {}", claude.display()))
}

/// `ccs run [TARGET] [-- ARGS]`.
pub fn run(target: Option<&str>, args: &[String], headless: bool, force: bool) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    let target = target.unwrap_or("claude");
    if target != "claude" && crate::profiles::exists(&paths, target) {
        return super::auth::launch(target, args);
    }
    launch_pool(&paths, &config, target, args, headless, force)
}
