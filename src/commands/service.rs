//! `ccs cliproxy service install | uninstall | status`: what `daemon::service` makes, as
//! commands (see there for the design: one daemon per home, whichever started it).

use anyhow::{bail, Context, Result};

use crate::config::Paths;
use crate::daemon::service::{
    active, ask, home_of, launchd_domain, launchd_target, render, Manager, Report, Spec,
};

pub use crate::daemon::service::ALREADY_RUNS_EXIT;

/// A system service is root's to install; with another manager program named
/// (`CCS_SYSTEMCTL`: a packager's or a test's), that program is the judge.
fn check_root(manager: Manager) -> Result<()> {
    let system = matches!(manager, Manager::SystemdSystem | Manager::LaunchdDaemon);
    if system
        && !rustix::process::geteuid().is_root()
        && std::env::var_os("CCS_SYSTEMCTL").is_none()
    {
        bail!(
            "a system service needs root: run it with sudo (or drop --system for a user service)"
        );
    }
    Ok(())
}

/// `ccs cliproxy service install [--system] [--user NAME]`.
pub fn install(system: bool, user: Option<String>, json: bool) -> Result<()> {
    let manager = Manager::here(system);
    check_root(manager)?;
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    if system {
        let name = user.clone().unwrap_or_else(|| "ccs".into());
        if !user_exists(&name) {
            bail!(
                "there is no user '{name}' for the service to run as: make one with \
                 `useradd --system --home-dir {} --create-home --shell /usr/sbin/nologin {name}` \
                 (or pass --user NAME)",
                paths.home.display()
            );
        }
    } else if user.is_some() {
        bail!("--user is for a system service (--system); a user service runs as you");
    }
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find the ccs executable")?;
    let spec = Spec {
        exe,
        home: std::path::absolute(&paths.home)?,
        user,
    };
    let file = manager.file()?;
    let text = render(manager, &spec);
    if let Ok(old) = std::fs::read_to_string(&file) {
        match home_of(&old) {
            Some(h) if h != spec.home => bail!(
                "{} already runs the daemon of another home ({}): `ccs cliproxy service \
                 uninstall` with CCS_HOME={} first",
                file.display(),
                h.display(),
                h.display()
            ),
            _ => {}
        }
    }
    let before = std::fs::read(&file).ok();
    let changed = before.as_deref() != Some(text.as_bytes());
    // The folders made for the file, deepest first, so a rollback can take them back too.
    let made: Vec<std::path::PathBuf> = file
        .ancestors()
        .skip(1)
        .take_while(|d| !d.exists())
        .map(std::path::Path::to_path_buf)
        .collect();
    if changed {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
        }
        std::fs::write(&file, text.as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    // The manager takes the definition first; when it cannot, the file is put back as it was
    // (a unit no manager runs would make every on-demand start ask it in vain).
    let registered = if manager.systemd() {
        ask(manager, &["daemon-reload"]).and_then(|_| ask(manager, &["enable", manager.name()]))
    } else {
        Ok(String::new())
    };
    if let Err(e) = registered {
        let put_back = match &before {
            Some(old) => std::fs::write(&file, old),
            None => std::fs::remove_file(&file),
        };
        if let Err(undo) = put_back {
            crate::errln!("ccs: cannot put {} back: {undo}", file.display());
        }
        for dir in &made {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(e.context(format!(
            "{} is not installed ({} left as it was)",
            manager.name(),
            file.display()
        )));
    }
    // A daemon the CLI started gives way to the service (a clean stop: nothing is lost).
    let handed_over = match crate::daemon::running(&paths, &config) {
        crate::daemon::Running::No => false,
        _ if active(manager) => false,
        _ => crate::daemon::stop_background(&paths, &config)?,
    };
    let started = if manager.systemd() {
        ask(manager, &["start", manager.name()])
    } else if !active(manager) {
        ask(
            manager,
            &[
                "bootstrap",
                &launchd_domain(manager),
                &file.to_string_lossy(),
            ],
        )
    } else {
        Ok(String::new())
    };
    if let Err(e) = started {
        if handed_over {
            // Not left without a daemon: the CLI's own, as before.
            crate::daemon::start_background(&paths, &config)?;
        }
        return Err(e.context(format!(
            "{} is installed but did not start: `ccs cliproxy service status`, and the \
             manager's log (journalctl --user -u ccs)",
            manager.name()
        )));
    }
    let report = Report::now(manager, &paths)?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match changed {
        true => crate::outln!("installed {} ({})", manager.name(), file.display()),
        false => crate::outln!(
            "{} was already installed ({})",
            manager.name(),
            file.display()
        ),
    }
    if handed_over {
        crate::outln!(
            "the daemon the CLI had started was stopped cleanly; the service runs it now"
        );
    }
    crate::outln!("  runs     {} daemon run", spec.exe.display());
    crate::outln!("  home     {}", spec.home.display());
    crate::outln!(
        "  state    {}",
        report.active.as_deref().unwrap_or("unknown")
    );
    if manager == Manager::SystemdUser {
        crate::outln!(
            "  logs     journalctl --user -u ccs, and {}",
            paths.logs_dir().display()
        );
        crate::outln!(
            "A user service starts when you log in; to start it at boot without a login: \
             loginctl enable-linger {}",
            std::env::var("USER").unwrap_or_else(|_| "$USER".into())
        );
    }
    Ok(())
}

/// `ccs cliproxy service uninstall [--system]`: stops and removes the service; the home (its
/// accounts, settings and logs) stays.
pub fn uninstall(system: bool, json: bool) -> Result<()> {
    let manager = Manager::here(system);
    check_root(manager)?;
    let file = manager.file()?;
    let existed = file.exists();
    if existed {
        if manager.systemd() {
            ask(manager, &["disable", "--now", manager.name()])?;
        } else if active(manager) {
            ask(manager, &["bootout", &launchd_target(manager)])?;
        }
        std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
        if manager.systemd() {
            ask(manager, &["daemon-reload"])?;
        }
    }
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({"manager": manager, "file": file, "removed": existed})
        );
    } else if existed {
        crate::outln!(
            "removed {} ({}); accounts and settings stay in CCS_HOME",
            manager.name(),
            file.display()
        );
    } else {
        crate::outln!("{} is not installed ({})", manager.name(), file.display());
    }
    Ok(())
}

/// `ccs cliproxy service status [--system]`.
pub fn status(system: bool, json: bool) -> Result<()> {
    let paths = Paths::from_env()?;
    let r = Report::now(Manager::here(system), &paths)?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if !r.installed {
        crate::outln!(
            "{} is not installed ({}): `ccs cliproxy service install` makes it",
            r.name,
            r.file.display()
        );
        return Ok(());
    }
    crate::outln!("{} installed ({})", r.name, r.file.display());
    if let Some(h) = &r.home {
        let whose = if r.this_home {
            ""
        } else {
            " (not this CLI's CCS_HOME)"
        };
        crate::outln!("  home     {}{whose}", h.display());
    }
    if let Some(e) = &r.enabled {
        crate::outln!("  enabled  {e}");
    }
    crate::outln!("  state    {}", r.active.as_deref().unwrap_or("unknown"));
    Ok(())
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .is_ok_and(|p| p.lines().any(|l| l.split(':').next() == Some(name)))
        || std::process::Command::new("id")
            .arg(name)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}
