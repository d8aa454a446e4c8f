//! `ccs cliproxy start|stop|restart|status` and `ccs daemon run`.

use anyhow::Result;

use crate::client::Client;
use crate::config::{Config, Paths};
use crate::daemon::{self, Running};

fn setup() -> Result<(Paths, Config)> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    Ok((paths, config))
}

/// Starts the daemon when it is not running; returns a management client for it. Every
/// command that needs the daemon goes through here.
pub fn ensure_running(paths: &Paths, config: &Config) -> Result<Client> {
    let (url, _) = daemon::start_background(paths, config)?;
    Ok(Client::new(&url, &crate::keys::cli_secret(config)?))
}

pub fn start() -> Result<()> {
    let (paths, config) = setup()?;
    if let daemon::Running::Yes { pid } = daemon::running(&paths, &config) {
        println!(
            "the ccs daemon already runs at {} (pid {pid})",
            daemon::configured_url(&config)
        );
        return Ok(());
    }
    eprint!("starting the ccs daemon… ");
    let started = daemon::start_background(&paths, &config);
    eprintln!("{}", if started.is_ok() { "done" } else { "failed" });
    let (url, _) = started?;
    println!(
        "the ccs daemon runs at {url} (logs: {})",
        paths.logs_dir().display()
    );
    Ok(())
}

pub fn stop() -> Result<()> {
    let (paths, config) = setup()?;
    if daemon::stop_background(&paths, &config)? {
        println!("the ccs daemon stopped");
    } else {
        println!("the ccs daemon was not running");
    }
    Ok(())
}

pub fn restart() -> Result<()> {
    let (paths, config) = setup()?;
    daemon::stop_background(&paths, &config)?;
    let (url, _) = daemon::start_background(&paths, &config)?;
    println!("the ccs daemon runs again at {url}");
    Ok(())
}

fn secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn status(json_out: bool) -> Result<()> {
    let (paths, config) = setup()?;
    let url = daemon::configured_url(&config);
    if let Running::No = daemon::running(&paths, &config) {
        if json_out {
            println!("{}", serde_json::json!({"state": "stopped", "url": url}));
        } else {
            println!("the ccs daemon is not running (start it with `ccs cliproxy start`)");
        }
        return Ok(());
    }
    let s = Client::new(&url, &crate::keys::cli_secret(&config)?).status()?;
    if json_out {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!(
        "ccs daemon    running at {} (pid {}, version {})",
        s.url, s.pid, s.version
    );
    println!("uptime        {}", secs(s.uptime_secs));
    let by_state = s
        .by_state
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "accounts      {}{}{}",
        s.accounts,
        if by_state.is_empty() {
            String::new()
        } else {
            format!(" ({by_state})")
        },
        match s.paused {
            p if p > 0 => format!(", {p} paused"),
            _ => String::new(),
        }
    );
    println!(
        "last hour     {} requests, {} hops",
        s.requests_last_hour, s.hops_last_hour
    );
    for note in &s.store_notes {
        println!("at start     {note}");
    }
    if s.by_state.get("dead").copied().unwrap_or(0) > 0 {
        println!("\nsome accounts are dead: see `ccs claude --accounts` and log them in again");
    }
    Ok(())
}

pub fn run_foreground() -> Result<()> {
    let (paths, config) = setup()?;
    daemon::run_foreground(&paths, config)
}
