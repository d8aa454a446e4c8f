//! The background daemon as the CLI sees it: found by `/healthz` on the configured port and
//! a pid file, started detached (`start_background`), run in the foreground
//! (`run_foreground`, holding the home lock), and stopped (`stop_background`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ccs_actors::{SharedClock, SystemClock};

use super::serve;
use crate::config::{Config, Paths};
use crate::endpoint::Endpoint;

/// `GET /healthz` over plain HTTP; the pid when a ccs daemon answers.
pub fn healthz(url: &str) -> Option<u32> {
    health(url, None)
}

fn health(url: &str, tls: Option<rustls::ClientConfig>) -> Option<u32> {
    crate::endpoint::healthz(url, tls).ok().map(|p| p.pid)
}

/// The local daemon's pid when it answers `/healthz`. Over TLS any certificate will do: the
/// probe carries nothing, and the daemon may serve a certificate replaced on disk since it
/// started (`ccs cliproxy restart` must still find it to stop it); management calls pin.
fn local_health(config: &Config) -> Option<u32> {
    let tls = match config.cliproxy.tls {
        Some(_) => Some(crate::tls::liveness_config().ok()?),
        None => None,
    };
    health(&configured_url(config), tls)
}

// ---- the background process ----------------------------------------------------------------

/// The URL the configured daemon answers on.
pub fn configured_url(config: &Config) -> String {
    let scheme = if config.cliproxy.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = config.cliproxy.host;
    match host {
        std::net::IpAddr::V6(_) => format!("{scheme}://[{host}]:{}", config.cliproxy.port),
        std::net::IpAddr::V4(_) => format!("{scheme}://{host}:{}", config.cliproxy.port),
    }
}

/// Whether a process `pid` exists (a signal-0 probe: portable, unlike reading `/proc`). A
/// process of another user counts as alive too.
pub fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Sends SIGTERM to `pid`, without shelling out.
fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

fn read_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Another daemon already serves this home (`ccs daemon run` exits with status 3 for it, on
/// which a service does not restart).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AlreadyRuns(String);

/// What is known about this home's daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum Running {
    /// A ccs daemon answers at the configured address.
    Yes { pid: u32 },
    /// This home's daemon answers at another address than config.yaml now names (its port or
    /// host was changed since it started): found by its pid and URL files.
    Elsewhere { pid: u32, url: String },
    /// Nothing answers; a pid file (if any) was stale.
    No,
}

pub fn running(paths: &Paths, config: &Config) -> Running {
    if let Some(pid) = local_health(config) {
        return Running::Yes { pid };
    }
    let Some(pid) = read_pid(paths) else {
        return Running::No;
    };
    if !pid_alive(pid) {
        let _ = std::fs::remove_file(paths.pid_file());
        let _ = std::fs::remove_file(paths.lock_file());
        let _ = std::fs::remove_file(paths.url_file());
        return Running::No;
    }
    let url = std::fs::read_to_string(paths.url_file()).unwrap_or_default();
    let url = url.trim();
    if url == configured_url(config) {
        // Where config.yaml says (the first look came while it was still starting, or a look
        // failed): this is the configured daemon.
        return match local_health(config) {
            Some(pid) => Running::Yes { pid },
            None => Running::No,
        };
    }
    let tls = match url.starts_with("https://") {
        true => crate::tls::liveness_config().ok(),
        false => None,
    };
    match health(url, tls) {
        Some(answered) if answered == pid => Running::Elsewhere {
            pid,
            url: url.to_string(),
        },
        _ => Running::No,
    }
}

/// What to say when this home's daemon runs on another address than config.yaml names.
fn elsewhere(paths: &Paths, config: &Config, pid: u32, url: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "this home's ccs daemon (pid {pid}) runs at {url}, not at {} as {} now says: `ccs cliproxy restart` moves it there",
        configured_url(config),
        paths.config_file().display()
    )
}

fn bind(config: &Config, paths: &Paths) -> Result<TcpListener> {
    let addr = (config.cliproxy.host, config.cliproxy.port);
    TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "port {} on {} is in use by another program: choose another with cliproxy.port in {}",
                config.cliproxy.port,
                config.cliproxy.host,
                paths.config_file().display()
            )
        } else {
            anyhow::anyhow!("cannot listen on {}:{}: {e}", config.cliproxy.host, config.cliproxy.port)
        }
    })
}

/// Set by `ccs cliproxy start` for the daemon it starts in the background: log to the file
/// only (its stderr is `daemon.out`, which is not rotated).
const DETACHED_ENV: &str = "CCS_DAEMON_DETACHED";

/// The one daemon of a `CCS_HOME`: an exclusive lock on `daemon.lock`, held for the whole
/// run. Only its holder writes or removes the pid and lock files, so a second daemon (started
/// on another port, say) leaves the running one's alone.
struct HomeLock {
    _file: std::fs::File,
    paths: Paths,
}

impl HomeLock {
    fn take(paths: &Paths) -> Result<HomeLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(paths.lock_file())
            .with_context(|| format!("cannot open {}", paths.lock_file().display()))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let pid = read_pid(paths)
                .map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "pid unknown".into());
            return Err(AlreadyRuns(format!(
                "a ccs daemon ({pid}) already runs on {}; one daemon per CCS_HOME. Stop it first \
                 (`ccs cliproxy stop`, or `kill` that pid if its port was changed since)",
                paths.home.display()
            ))
            .into());
        }
        let pid = std::process::id().to_string();
        crate::fsutil::write_private(&paths.pid_file(), pid.as_bytes())?;
        // Written in place: replacing the file would drop the lock held on it.
        std::fs::write(paths.lock_file(), pid.as_bytes())?;
        Ok(HomeLock {
            _file: file,
            paths: paths.clone(),
        })
    }

    /// Says where this daemon listens (only the lock's holder writes it).
    fn listening(&self, url: &str) -> Result<()> {
        crate::fsutil::write_private(&self.paths.url_file(), url.as_bytes())
            .with_context(|| format!("cannot write {}", self.paths.url_file().display()))
    }
}

impl Drop for HomeLock {
    fn drop(&mut self) {
        // Removed while still locked, so no other daemon is between its lock and these files.
        let _ = std::fs::remove_file(self.paths.pid_file());
        let _ = std::fs::remove_file(self.paths.url_file());
        let _ = std::fs::remove_file(self.paths.lock_file());
    }
}

/// A CLI starting this home's daemon: the others wait their turn (an exclusive lock on
/// `start.lock`), then find the daemon the first one started.
struct StartLock {
    _file: std::fs::File,
}

impl StartLock {
    fn take(paths: &Paths) -> Result<StartLock> {
        use std::os::unix::fs::OpenOptionsExt;
        crate::fsutil::private_dir(&paths.cliproxy())?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(paths.start_lock_file())
            .with_context(|| format!("cannot open {}", paths.start_lock_file().display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("cannot lock {}", paths.start_lock_file().display()))?;
        Ok(StartLock { _file: file })
    }
}

/// `ccs daemon run`: the daemon in the foreground until SIGINT/SIGTERM or a stop request.
pub fn run_foreground(paths: &Paths, config: Config) -> Result<()> {
    if let Running::Yes { pid } = running(paths, &config) {
        return Err(AlreadyRuns(format!(
            "a ccs daemon (pid {pid}) already runs at {}",
            configured_url(&config)
        ))
        .into());
    }
    // Everything the daemon creates from here on (sled's files, logs) is private from its
    // first byte: sled creates its files with the process umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    crate::fsutil::private_dir(&paths.cliproxy())?;
    let lock = HomeLock::take(paths)?;
    let listener = bind(&config, paths)?;
    let scheme = if config.cliproxy.tls.is_some() {
        "https"
    } else {
        "http"
    };
    lock.listening(&format!("{scheme}://{}", listener.local_addr()?))?;
    let detached = std::env::var_os(DETACHED_ENV).is_some();
    let _guard = crate::logging::init(paths, !detached)?;
    // A test-only build may be asked to run with a planted bug (tests/crash.rs shows its crash
    // checks fire); the actors run on this thread, where the switch lives.
    #[cfg(feature = "planted")]
    let _planted = std::env::var("CCS_PLANTED_BUG")
        .ok()
        .and_then(|b| ccs_actors::planted::by_name(&b))
        .map(ccs_actors::planted::plant);
    let result = actix_web::rt::System::new().block_on(async {
        let clock: SharedClock = Arc::new(SystemClock);
        serve(config, paths.clone(), listener, clock, async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        })
        .await
    });
    result
}

/// `ccs cliproxy start`: starts the daemon in the background unless one runs; returns its URL
/// and whether it was already running.
pub fn start_background(paths: &Paths, config: &Config) -> Result<(String, bool)> {
    let url = configured_url(config);
    let check = |paths: &Paths| match running(paths, config) {
        Running::Yes { .. } => Ok(Some((url.clone(), true))),
        Running::Elsewhere { pid, url } => Err(elsewhere(paths, config, pid, &url)),
        Running::No => Ok(None),
    };
    if let Some(found) = check(paths)? {
        return Ok(found);
    }
    // One start at a time: a CLI that waited here finds the daemon the one before it started.
    let _turn = StartLock::take(paths)?;
    if let Some(found) = check(paths)? {
        return Ok(found);
    }
    // With a service installed for this home, its manager starts the daemon (one daemon per
    // home, whichever started it).
    if super::service::start_if_installed(paths)? {
        return answered(paths, config, url, None);
    }
    // Fail early, with the config key, when the port is taken by something else.
    drop(bind(config, paths)?);
    crate::fsutil::private_dir(&paths.logs_dir())?;
    // Fresh at each start: it only ever holds what one run said before its log was up (or a
    // panic), so it cannot grow across runs.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(paths.logs_dir().join("daemon.out"))?;
    let exe = std::env::current_exe().context("cannot find the ccs executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["daemon", "run"])
        .env("CCS_HOME", &paths.home)
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    answered(paths, config, url, Some(&mut child))
}

/// Waits (20 s at most) for the daemon just started, by this CLI (`child`) or by the
/// service's manager, to answer at `url`.
fn answered(
    paths: &Paths,
    config: &Config,
    url: String,
    mut child: Option<&mut std::process::Child>,
) -> Result<(String, bool)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if local_health(config).is_some() {
            return Ok((url, false));
        }
        if let Some(status) = child.as_mut().map(|c| c.try_wait()).transpose()?.flatten() {
            // Its last words (a second daemon on this home, a bad config) are the error.
            let said =
                std::fs::read_to_string(paths.logs_dir().join("daemon.out")).unwrap_or_default();
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!(
                "the daemon exited while starting ({status}): {}",
                last.strip_prefix("ccs: ").unwrap_or(last)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match child {
        Some(_) => bail!(
            "the daemon did not answer within 20 s; see {}",
            paths.logs_dir().join("daemon.out").display()
        ),
        None => bail!(
            "the service was started but the daemon did not answer within 20 s: see \
             `ccs cliproxy service status` and {}",
            paths.logs_dir().display()
        ),
    }
}

/// `ccs cliproxy stop`: asks the daemon to stop and waits for it; false when none ran.
pub fn stop_background(paths: &Paths, config: &Config) -> Result<bool> {
    let pid = match running(paths, config) {
        Running::Yes { pid } => {
            // The client (and its keep-alive connection) is gone before we wait: an open
            // connection would hold the daemon's graceful stop until it times out.
            let asked = Endpoint::local(paths, config)?
                .management(config)?
                .shutdown();
            if asked.is_err() {
                // The API refused (wrong secret?): fall back to the signal.
                terminate(pid);
            }
            pid
        }
        // Not where config.yaml says: its pid file names it, and SIGTERM stops it as
        // gracefully as the API would.
        Running::Elsewhere { pid, .. } => {
            terminate(pid);
            pid
        }
        Running::No => return Ok(false),
    };
    let bound = config.cliproxy.stop_grace.0 + Duration::from_secs(5);
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if !pid_alive(pid) && local_health(config).is_none() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the daemon (pid {pid}) did not stop within {} s",
        bound.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_alive_until_it_is_reaped_whatever_the_os() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid), "a reaped child is gone");
        assert!(!pid_alive(0), "pid 0 is no process of ours");
        assert!(!pid_alive(u32::MAX), "an impossible pid");
    }
}
