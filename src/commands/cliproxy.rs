//! `ccs cliproxy start|stop|restart|status` and `ccs daemon run`.

use anyhow::Result;

use crate::client::Client;
use crate::config::{Config, Paths};
use crate::daemon;
use crate::endpoint::Endpoint;

fn setup() -> Result<(Paths, Config)> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    Ok((paths, config))
}

/// `setup` for the commands that run this machine's own daemon: refused while a remote one is
/// in use, which only its server starts and stops.
fn setup_local(verb: &str) -> Result<(Paths, Config)> {
    let (paths, config) = setup()?;
    let endpoint = Endpoint::resolve(&paths, &config)?;
    if endpoint.remote {
        anyhow::bail!(
            "this machine uses {} (cliproxy_server.remote, --proxy-host or CCS_PROXY_HOST), \
             which only its server can {verb}. For a daemon of this machine's own, drop \
             --proxy-host and CCS_PROXY_HOST, or set cliproxy_server.remote.enabled: false",
            endpoint.describe()
        );
    }
    Ok((paths, config))
}

/// `ensure_running` for the home and config of this run.
pub fn client() -> Result<Client> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    ensure_running(&paths, &config)
}

/// A management client for the daemon this run uses: the remote one (which must answer; it is
/// never started from here), or the local one, started when it is not running. Every command
/// that needs the daemon goes through here.
pub fn ensure_running(paths: &Paths, config: &Config) -> Result<Client> {
    connect(&Endpoint::resolve(paths, config)?, paths, config)
}

/// `ensure_running` for an endpoint already resolved.
pub fn connect(endpoint: &Endpoint, paths: &Paths, config: &Config) -> Result<Client> {
    if endpoint.remote {
        endpoint.probe()?;
    } else {
        daemon::start_background(paths, config)?;
    }
    endpoint.management(config)
}

pub fn start() -> Result<()> {
    let (paths, config) = setup_local("start")?;
    if let daemon::Running::Yes { pid } = daemon::running(&paths, &config) {
        outln!(
            "the ccs daemon already runs at {} (pid {pid})",
            daemon::configured_url(&config)
        );
        return Ok(());
    }
    err!("starting the ccs daemon… ");
    let started = daemon::start_background(&paths, &config);
    errln!("{}", if started.is_ok() { "done" } else { "failed" });
    let (url, _) = started?;
    outln!(
        "the ccs daemon runs at {url} (logs: {})",
        paths.logs_dir().display()
    );
    Ok(())
}

pub fn stop() -> Result<()> {
    let (paths, config) = setup_local("stop")?;
    if daemon::stop_background(&paths, &config)? {
        outln!("the ccs daemon stopped");
    } else {
        outln!("the ccs daemon was not running");
    }
    Ok(())
}

pub fn restart() -> Result<()> {
    let (paths, config) = setup_local("restart")?;
    daemon::stop_background(&paths, &config)?;
    let (url, _) = daemon::start_background(&paths, &config)?;
    outln!("the ccs daemon runs again at {url}");
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
    let endpoint = Endpoint::resolve(&paths, &config)?;
    let which = if endpoint.remote { "remote" } else { "local" };
    let probe = match endpoint.probe() {
        Ok(p) => p,
        Err(why) if endpoint.remote => return Err(why.into()),
        Err(_) => {
            // A stale pid file goes with this look; a daemon moved since config.yaml changed
            // is named.
            if let daemon::Running::Elsewhere { pid, url } = daemon::running(&paths, &config) {
                if json_out {
                    outln!(
                        "{}",
                        serde_json::json!({"state": "elsewhere", "daemon": which, "pid": pid,
                            "url": url, "configured_url": endpoint.url})
                    );
                } else {
                    outln!(
                        "the ccs daemon runs at {url} (pid {pid}), not at {} as {} now says: \
                         `ccs cliproxy restart` moves it there",
                        endpoint.url,
                        paths.config_file().display()
                    );
                }
                return Ok(());
            }
            if json_out {
                outln!(
                    "{}",
                    serde_json::json!({"state": "stopped", "daemon": which, "url": endpoint.url})
                );
            } else {
                outln!("the ccs daemon is not running (start it with `ccs cliproxy start`)");
            }
            return Ok(());
        }
    };
    let rtt_ms = probe.rtt.as_secs_f64() * 1000.0;
    let s = match endpoint.management(&config).and_then(|c| c.status()) {
        Ok(s) => s,
        Err(e) if endpoint.remote => {
            // The client key alone reaches the proxy; the rest needs the management secret.
            if json_out {
                outln!(
                    "{}",
                    serde_json::json!({"state": "running", "daemon": which, "url": endpoint.url,
                        "pid": probe.pid, "version": probe.version, "rtt_ms": rtt_ms})
                );
            } else {
                outln!(
                    "ccs daemon    {which} at {} (pid {}, version {})",
                    endpoint.url,
                    probe.pid,
                    probe.version
                );
                outln!("round trip    {rtt_ms:.1} ms (GET /healthz, new connection)");
                outln!("details       not shown: {e:#}");
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if json_out {
        let mut v = serde_json::to_value(&s)?;
        v["daemon"] = which.into();
        v["rtt_ms"] = rtt_ms.into();
        v["reached_at"] = endpoint.url.clone().into();
        outln!("{v}");
        return Ok(());
    }
    outln!(
        "ccs daemon    {which}, running at {} (pid {}, version {})",
        endpoint.url,
        s.pid,
        s.version
    );
    outln!("round trip    {rtt_ms:.1} ms (GET /healthz, new connection)");
    outln!("uptime        {}", secs(s.uptime_secs));
    let by_state = s
        .by_state
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    outln!(
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
    outln!(
        "last hour     {}, {}",
        crate::term::count(s.requests_last_hour, "request"),
        crate::term::count(s.hops_last_hour as u64, "hop")
    );
    for r in &s.runway {
        outln!("runway        {}: {}", r.pool, r.text);
    }
    for a in &s.alerts {
        outln!("alert         {}", a.text);
    }
    for note in &s.store_notes {
        outln!("at start     {note}");
    }
    if let Some(ends) = &s.certificate_expires {
        match crate::tls::days_left(ends) {
            Some(d) if d < crate::tls::RENEW_WITHIN_DAYS as i64 => outln!(
                "certificate   ends {ends} ({}): renew it with `ccs cliproxy cert \
                 --self-signed HOST… --force` (clients pin the new fingerprint), then \
                 `ccs cliproxy restart`",
                if d < 0 {
                    "ended".to_string()
                } else {
                    crate::term::count(d as u64, "day") + " left"
                }
            ),
            _ => outln!("certificate   valid until {ends}"),
        }
    }
    print_store(&s.store);
    let c = &s.continuity;
    outln!(
        "thinking      {}{}",
        if c.fit {
            format!(
                "moves fitted where a model refuses another account's blocks ({}, {} after a 400)",
                crate::term::count(c.fitted, "request"),
                c.fitted_after_400
            )
        } else {
            "fitting off (continuity.fit: false): bodies always pass as sent".into()
        },
        if c.learned_reject.is_empty() {
            String::new()
        } else {
            format!("; learned to refuse: {}", c.learned_reject.join(", "))
        }
    );
    if s.by_state.get("dead").copied().unwrap_or(0) > 0 {
        outln!("\nsome accounts are dead: see `ccs claude --accounts` and log them in again");
    }
    Ok(())
}

/// The shared store's lines: the backend, the peers and who holds each refresh lease.
fn print_store(store: &crate::api::StoreStatus) {
    let Some(url) = &store.redis_url else {
        outln!("store         sled (this daemon alone)");
        return;
    };
    let reach = match store.reachable {
        Some(false) => "UNREACHABLE: serving from this daemon's snapshot, no refreshes",
        _ => "reachable",
    };
    outln!("store         redis at {url} ({reach})");
    for p in &store.peers {
        let me = if p.me { " (this daemon)" } else { "" };
        outln!(
            "peer          {} at {} (version {}){me}",
            p.id,
            p.url,
            p.version
        );
    }
    for l in &store.leases {
        outln!(
            "lease         {} refreshed by {} (fence {}, {} s left)",
            l.account,
            l.daemon,
            l.fence,
            l.expires_in_ms / 1000
        );
    }
}

pub fn run_foreground() -> Result<()> {
    let (paths, config) = setup()?;
    daemon::run_foreground(&paths, config)
}
