//! `ccs doctor`: everything a support thread would ask, checked at once, each finding with the
//! command that fixes it. Gathering (files, the daemon, Anthropic's clock, Claude Code, Redis)
//! is kept apart from judging: every `judge_*` is a pure function of what was gathered, and
//! the tests give each a healthy and a broken case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::api;
use crate::config::{Config, Paths};

/// How far the local clock may be from Anthropic's before expiry checks go wrong.
pub const CLOCK_SKEW_LIMIT: Duration = Duration::from_secs(30);
/// Free space under which the store may fail to write a token.
pub const DISK_LOW: u64 = 200 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Works, but something should be done.
    Warn,
    /// Broken: something must be done.
    Error,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `home`, `config`, `daemon`, `account`, `certificate`, `clock`, `claude_code`, `remote`,
    /// `redis`, `disk`.
    pub check: &'static str,
    pub level: Level,
    pub text: String,
    /// The command (or step) that fixes it.
    pub fix: Option<String>,
}

fn ok(check: &'static str, text: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Ok,
        text: text.into(),
        fix: None,
    }
}

fn bad(
    check: &'static str,
    level: Level,
    text: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        level,
        text: text.into(),
        fix: Some(fix.into()),
    }
}

/// `CCS_HOME`: there, and private (`mode` `None` when it does not exist yet).
pub fn judge_home(home: &Path, mode: Option<u32>) -> Finding {
    match mode {
        None => bad(
            "home",
            Level::Warn,
            format!("{} does not exist yet", home.display()),
            "ccs claude --auth (logs the first account in and makes it)",
        ),
        Some(m) if m & 0o077 != 0 => bad(
            "home",
            Level::Warn,
            format!(
                "{} is mode {m:03o}: other users can list it (the tokens are in 0700 folders \
                 below it, but the names of the files say whose they are)",
                home.display()
            ),
            format!("chmod 700 {}", home.display()),
        ),
        Some(_) => ok("home", format!("{} (private)", home.display())),
    }
}

/// config.yaml (it may hold the management secret and client keys), and every token file.
pub fn judge_files(files: &[(PathBuf, u32)]) -> Vec<Finding> {
    let open: Vec<&(PathBuf, u32)> = files.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    if open.is_empty() {
        return vec![ok("config", "config.yaml and the token files are private")];
    }
    open.iter()
        .map(|(p, m)| {
            bad(
                "config",
                Level::Error,
                format!(
                    "{} is mode {m:03o}: others can read the secrets in it",
                    p.display()
                ),
                format!("chmod 600 {}", p.display()),
            )
        })
        .collect()
}

/// What the daemon said of itself.
pub enum DaemonSeen {
    /// It answers where config.yaml says.
    Up { status: Box<api::Status> },
    /// It answers elsewhere (config.yaml's port changed since it started).
    Elsewhere { pid: u32, url: String },
    /// It could not be started or reached.
    Down { why: String },
}

pub fn judge_daemon(seen: &DaemonSeen, cli_version: &str, configured: &str) -> Finding {
    match seen {
        DaemonSeen::Down { why } => bad(
            "daemon",
            Level::Error,
            format!("the daemon does not run and cannot be started: {why}"),
            "ccs cliproxy start (its error says what is wrong), then its log in \
             $CCS_HOME/cliproxy/logs/",
        ),
        DaemonSeen::Elsewhere { pid, url } => bad(
            "daemon",
            Level::Warn,
            format!(
                "the daemon (pid {pid}) answers at {url}, but config.yaml now says {configured}"
            ),
            "ccs cliproxy restart",
        ),
        DaemonSeen::Up { status } if status.version != cli_version => bad(
            "daemon",
            Level::Warn,
            format!(
                "the daemon (pid {}) is version {}, this ccs is {cli_version}",
                status.pid, status.version
            ),
            "ccs cliproxy restart (the daemon then runs this version)",
        ),
        DaemonSeen::Up { status } => ok(
            "daemon",
            format!(
                "the daemon runs at {} (pid {}, version {}, up {} s)",
                status.url, status.pid, status.version, status.uptime_secs
            ),
        ),
    }
}

/// Each account: its state, token expiry, last refresh and its outcome, last error.
pub fn judge_accounts(accounts: &[api::AccountView], status: &api::Status) -> Vec<Finding> {
    if accounts.is_empty() {
        return vec![bad(
            "account",
            Level::Warn,
            "no account is logged in",
            "ccs claude --auth",
        )];
    }
    accounts
        .iter()
        .map(|a| {
            let last_refresh = status
                .refreshes
                .iter()
                .rev()
                .find(|r| r.account.eq_ignore_ascii_case(&a.email));
            let last_error = status
                .errors
                .iter()
                .rev()
                .find(|e| e.message.contains(a.email.as_str()));
            let mut text = format!("{}: {}", a.email, a.state);
            if let Some(e) = &a.expires_at {
                text.push_str(&format!(", token valid until {e}"));
            }
            match last_refresh {
                Some(r) => text.push_str(&format!(", last refresh {} ({})", r.at, r.outcome)),
                None => text.push_str(", not refreshed since the daemon started"),
            }
            if let Some(e) = last_error {
                text.push_str(&format!("; last error {}: {}", e.at, e.message));
            }
            match a.state.as_str() {
                "dead" => bad(
                    "account",
                    Level::Error,
                    text,
                    a.fix.clone().unwrap_or_else(|| {
                        format!("ccs claude --auth --add   (log {} in again)", a.email)
                    }),
                ),
                _ if last_refresh.is_some_and(|r| r.outcome != "ok") => bad(
                    "account",
                    Level::Warn,
                    text,
                    format!(
                        "ccs cliproxy status (the refresh errors); if it keeps failing, log {} \
                         in again: ccs claude --auth --add",
                        a.email
                    ),
                ),
                _ => ok("account", text),
            }
        })
        .collect()
}

/// The local clock against the `Date` of Anthropic's answer (`skew_ms` = local − theirs).
pub fn judge_clock(api_base: &str, seen: Result<i64, impl std::fmt::Display>) -> Finding {
    match seen {
        Err(why) => bad(
            "clock",
            Level::Warn,
            format!("cannot compare the clock with {api_base}: {why}"),
            "check the network (or upstream.api_base in config.yaml)",
        ),
        Ok(skew) if skew.unsigned_abs() > CLOCK_SKEW_LIMIT.as_millis() as u64 => bad(
            "clock",
            Level::Error,
            format!(
                "this machine's clock is {} s {} {api_base}'s: tokens look fresh when they have \
                 expired (or the reverse)",
                skew.unsigned_abs() / 1000,
                if skew > 0 { "ahead of" } else { "behind" }
            ),
            "sudo timedatectl set-ntp true   (or your system's time sync)",
        ),
        Ok(skew) => ok(
            "clock",
            format!(
                "the clock agrees with {api_base} (within {} ms)",
                skew.unsigned_abs()
            ),
        ),
    }
}

/// What was found of Claude Code.
pub enum ClaudeSeen {
    Missing {
        why: String,
    },
    Found {
        path: PathBuf,
        version: Option<String>,
        status_line: crate::commands::statusline::Installed,
    },
}

pub fn judge_claude(seen: &ClaudeSeen) -> Vec<Finding> {
    use crate::commands::statusline::Installed;
    match seen {
        ClaudeSeen::Missing { why } => vec![bad(
            "claude_code",
            Level::Warn,
            why.clone(),
            "npm install -g @anthropic-ai/claude-code   (or claude_path in config.yaml)",
        )],
        ClaudeSeen::Found {
            path,
            version,
            status_line,
        } => {
            let mut out = vec![match version {
                Some(v) => ok(
                    "claude_code",
                    format!("Claude Code {v} at {}", path.display()),
                ),
                None => bad(
                    "claude_code",
                    Level::Warn,
                    format!("{} does not say its version", path.display()),
                    "npm install -g @anthropic-ai/claude-code   (a working install)",
                ),
            }];
            out.push(match status_line {
                Installed::Ours => ok("claude_code", "the status line shows ccs's account and use"),
                Installed::Off => ok(
                    "claude_code",
                    "ccs's status line is turned off (cliproxy.status_line: false)",
                ),
                Installed::Theirs(file) => bad(
                    "claude_code",
                    Level::Warn,
                    format!(
                        "{} sets a status line of its own: ccs's (account, 5-hour and weekly use) \
                         is not shown",
                        file.display()
                    ),
                    "set its statusLine command to `ccs statusline` (or keep yours)",
                ),
            });
            out
        }
    }
}

/// A remote daemon (team mode): reachable, its certificate pinned.
pub fn judge_remote(url: &str, probe: Result<String, impl std::fmt::Display>) -> Finding {
    match probe {
        Ok(version) => ok(
            "remote",
            format!("the remote daemon at {url} answers (version {version})"),
        ),
        Err(why) => bad(
            "remote",
            Level::Error,
            format!("the remote daemon at {url} cannot be used: {why}"),
            "check --proxy-host/--proxy-port, and the fingerprint with `ccs cliproxy cert` on the \
             server",
        ),
    }
}

/// Redis, when the pool is shared: reachable, and keeping its writes (AOF).
pub fn judge_redis(url: &str, seen: Result<bool, impl std::fmt::Display>) -> Finding {
    match seen {
        Err(why) => bad(
            "redis",
            Level::Error,
            format!("Redis at {url} does not answer: {why}"),
            "start Redis, or fix store.redis.url in config.yaml",
        ),
        Ok(false) => bad(
            "redis",
            Level::Warn,
            format!(
                "Redis at {url} runs without its append-only file: a restart of Redis loses \
                 the writes since its last snapshot (rotated refresh tokens among them)"
            ),
            "redis-cli CONFIG SET appendonly yes   (and appendonly yes in redis.conf)",
        ),
        Ok(true) => ok(
            "redis",
            format!("Redis at {url} answers, append-only file on"),
        ),
    }
}

/// The certificate the daemon serves: its last month is warned of, its end an error.
pub fn judge_cert(ends: &str, days_left: Option<i64>) -> Finding {
    let fix = "ccs cliproxy cert --self-signed HOST… --force, then ccs cliproxy restart (the \
               clients pin the new fingerprint)";
    match days_left {
        Some(d) if d < 0 => bad(
            "certificate",
            Level::Error,
            format!("the daemon's certificate ended {ends}: clients refuse it"),
            fix,
        ),
        Some(d) if d < crate::tls::RENEW_WITHIN_DAYS as i64 => bad(
            "certificate",
            Level::Warn,
            format!("the daemon's certificate ends {ends} ({d} days left)"),
            fix,
        ),
        _ => ok(
            "certificate",
            format!("the daemon's certificate is valid until {ends}"),
        ),
    }
}

/// Free space where the store lives.
pub fn judge_disk(home: &Path, free: Option<u64>) -> Finding {
    match free {
        None => ok("disk", "free space not known"),
        Some(f) if f < DISK_LOW => bad(
            "disk",
            Level::Error,
            format!(
                "only {} MiB free where {} is: a token that cannot be written is an account lost",
                f / (1024 * 1024),
                home.display()
            ),
            "free some space on that disk",
        ),
        Some(f) => ok("disk", format!("{} MiB free", f / (1024 * 1024))),
    }
}

// ---- gathering ------------------------------------------------------------------------------

fn mode_of(p: &Path) -> Option<u32> {
    crate::fsutil::mode(p).ok()
}

fn private_files(paths: &Paths) -> Vec<(PathBuf, u32)> {
    let mut files = vec![paths.home.join("config.yaml")];
    if let Ok(dir) = std::fs::read_dir(paths.home.join("auth")) {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    files
        .into_iter()
        .filter_map(|f| mode_of(&f).map(|m| (f, m)))
        .collect()
}

/// Why the clock could not be compared.
#[derive(Debug, thiserror::Error)]
enum ClockError {
    #[error("{0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("its answer has no Date header")]
    NoDate,
    #[error("its Date header {date:?} does not read: {source}")]
    BadDate {
        date: String,
        source: chrono::ParseError,
    },
}

/// local − Anthropic's, from the `Date` of an answer of `api_base`.
fn clock_skew(api_base: &str) -> Result<i64, ClockError> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let asked = crate::commands::now_ms() as i64;
    let answer = client
        .get(format!("{}/v1/models", api_base.trim_end_matches('/')))
        .send()?;
    let back = crate::commands::now_ms() as i64;
    let date = answer
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .ok_or(ClockError::NoDate)?;
    let theirs = chrono::DateTime::parse_from_rfc2822(date)
        .map_err(|source| ClockError::BadDate {
            date: date.to_string(),
            source,
        })?
        .timestamp_millis();
    // The header has whole seconds: compare with the middle of the call, a second's slack.
    let skew = (asked + back) / 2 - theirs;
    Ok(if skew.abs() <= 1000 { 0 } else { skew })
}

fn redis_aof(url: &str) -> Result<bool, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(3))?;
    let answer: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut con)?;
    Ok(answer.get(1).is_some_and(|v| v == "yes"))
}

fn claude_seen(config: &Config) -> ClaudeSeen {
    let path = match crate::claude_code::find_claude(config) {
        Ok(p) => p,
        Err(e) => {
            return ClaudeSeen::Missing {
                why: format!("{e:#}"),
            }
        }
    };
    let version = std::process::Command::new(&path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty());
    let cwd = std::env::current_dir().unwrap_or_default();
    ClaudeSeen::Found {
        path,
        version,
        status_line: crate::commands::statusline::installed(config, &cwd),
    }
}

fn free_space(home: &Path) -> Option<u64> {
    let at = home.ancestors().find(|p| p.exists())?;
    let s = rustix::fs::statvfs(at).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Everything, gathered and judged.
pub fn findings(paths: &Paths, config: &Config) -> Vec<Finding> {
    let mut out = vec![judge_home(&paths.home, mode_of(&paths.home))];
    out.extend(judge_files(&private_files(paths)));
    let endpoint = crate::endpoint::Endpoint::resolve(paths, config);
    match &endpoint {
        Ok(e) if e.remote => out.push(judge_remote(&e.url, e.probe().map(|p| p.version))),
        Ok(_) => {
            let configured = crate::daemon::configured_url(config);
            // One client for the status and the accounts (started as any command starts it).
            let (seen, client) = match crate::daemon::running(paths, config) {
                crate::daemon::Running::Elsewhere { pid, url } => {
                    (DaemonSeen::Elsewhere { pid, url }, None)
                }
                _ => match crate::commands::cliproxy::ensure_running(paths, config)
                    .and_then(|c| Ok((c.status()?, c)))
                {
                    Ok((status, c)) => (
                        DaemonSeen::Up {
                            status: Box::new(status),
                        },
                        Some(c),
                    ),
                    Err(e) => (
                        DaemonSeen::Down {
                            why: format!("{e:#}"),
                        },
                        None,
                    ),
                },
            };
            out.push(judge_daemon(&seen, env!("CARGO_PKG_VERSION"), &configured));
            if let DaemonSeen::Up { status } = &seen {
                if let Some(ends) = &status.certificate_expires {
                    out.push(judge_cert(ends, crate::tls::days_left(ends)));
                }
                if let Some(Ok(accounts)) = client.as_ref().map(|c| c.accounts()) {
                    out.extend(judge_accounts(&accounts, status));
                }
            }
        }
        Err(e) => out.push(bad(
            "remote",
            Level::Error,
            format!("{e:#}"),
            "check the --proxy-* flags and CCS_PROXY_* variables",
        )),
    }
    if !matches!(&endpoint, Ok(e) if e.remote) {
        let base = &config.upstream.api_base;
        out.push(judge_clock(base, clock_skew(base)));
    }
    out.extend(judge_claude(&claude_seen(config)));
    if config.store.backend == crate::config::Backend::Redis {
        if let Some(url) = &config.store.redis.url {
            out.push(judge_redis(&crate::config::redact_url(url), redis_aof(url)));
        }
    }
    out.push(judge_disk(&paths.home, free_space(&paths.home)));
    out
}

/// `ccs doctor [--json]`: exit status 1 when something needs action.
pub fn doctor(json: bool) -> Result<bool> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    let found = findings(&paths, &config);
    let healthy = found.iter().all(|f| f.level == Level::Ok);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"healthy": healthy, "findings": found})
            )?
        );
        return Ok(healthy);
    }
    for f in &found {
        let mark = match f.level {
            Level::Ok => "ok   ",
            Level::Warn => "warn ",
            Level::Error => "ERROR",
        };
        outln!("{mark} {:<11} {}", f.check, f.text);
        if let Some(fix) = &f.fix {
            outln!("      {:<11} fix: {fix}", "");
        }
    }
    if healthy {
        outln!("everything looks right");
    } else {
        let n = found.iter().filter(|f| f.level != Level::Ok).count();
        errln!(
            "{} need{} action (the fix under each)",
            crate::term::count(n as u64, "finding"),
            if n == 1 { "s" } else { "" }
        );
    }
    Ok(healthy)
}

#[cfg(test)]
mod tests;
