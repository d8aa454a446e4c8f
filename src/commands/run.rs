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
use super::cliproxy::ensure_running;
use crate::claude_code::find_claude;
use crate::client::Client;
use crate::config::{Config, Paths};
use crate::daemon::configured_url;

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
) -> Result<()> {
    let mut list = client.accounts()?;
    if list.is_empty() {
        if pool != "claude" {
            bail!("no account is logged in: run `ccs claude --auth` first");
        }
        println!("No Claude account is logged in yet: let's log one in.");
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
        eprintln!(
            "Account {} ({email}) needs a new login: its grant is gone.",
            a.nickname
        );
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            eprint!("Log it in again now? [Y/n] ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            if matches!(line.trim(), "" | "y" | "Y" | "yes") {
                accounts::login(paths, config, true, headless)?;
            }
        } else {
            eprintln!("  run: ccs claude --auth --add   (and sign in as {email})");
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
            eprintln!("warning: before the launch, {e}");
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
        eprintln!("warning: {msg}; starting anyway (--force)");
    }
    Ok(())
}

/// Becomes Claude Code on `pool`, with `args` untouched. Returns only on error.
pub fn launch_pool(
    paths: &Paths,
    config: &Config,
    pool: &str,
    args: &[String],
    headless: bool,
    force: bool,
) -> Result<()> {
    let client = ensure_running(paths, config)?;
    prepare(paths, config, &client, pool, headless, force)?;
    let claude = find_claude(config)?;
    let base = if pool == "claude" {
        configured_url(config)
    } else {
        format!("{}/pool/{pool}", configured_url(config))
    };
    let mut cmd = std::process::Command::new(&claude);
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(settings) = super::statusline::settings_for(config, args, &cwd) {
        cmd.arg("--settings").arg(settings);
    }
    let err = cmd
        .args(args)
        .env("ANTHROPIC_BASE_URL", base)
        .env("ANTHROPIC_AUTH_TOKEN", config.client_key())
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
