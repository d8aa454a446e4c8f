//! The daemon as a service of the system's
//! manager, so it starts at login (or boot) and comes back after a crash: a systemd user unit
//! on Linux (`--system`: a hardened system unit running as a dedicated user), a launchd agent
//! on macOS (`--system`: a launch daemon).
//!
//! One daemon per home whichever started it: the home lock refuses a second one with exit
//! status 3, which the unit does not restart on (`RestartPreventExitStatus`); with a service
//! installed, the CLI's on-demand start asks the manager to start it instead of starting a
//! daemon of its own (`start_if_installed`); and install stops a daemon the CLI started
//! before the service takes over.
//!
//! The managers' programs are `systemctl` and `launchctl`, or what `CCS_SYSTEMCTL` and
//! `CCS_LAUNCHCTL` name (packaging and the tests' stand-ins).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::Paths;

/// Exit status of `ccs daemon run` when another daemon already serves its home.
pub const ALREADY_RUNS_EXIT: i32 = 3;

/// Which manager, and for whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    SystemdUser,
    SystemdSystem,
    LaunchdAgent,
    LaunchdDaemon,
}

impl Manager {
    /// This platform's manager, for the user or (`system`) for the machine.
    pub fn here(system: bool) -> Manager {
        match (cfg!(target_os = "macos"), system) {
            (false, false) => Manager::SystemdUser,
            (false, true) => Manager::SystemdSystem,
            (true, false) => Manager::LaunchdAgent,
            (true, true) => Manager::LaunchdDaemon,
        }
    }

    pub fn systemd(self) -> bool {
        matches!(self, Manager::SystemdUser | Manager::SystemdSystem)
    }

    /// The service's name in its manager.
    pub fn name(self) -> &'static str {
        if self.systemd() {
            "ccs.service"
        } else {
            "dev.ccs.daemon"
        }
    }

    /// Where its definition goes.
    pub fn file(self) -> Result<PathBuf> {
        let home = || {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .context("HOME is not set: set it, or CCS_HOME and HOME both")
        };
        Ok(match self {
            Manager::SystemdUser => std::env::var_os("XDG_CONFIG_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .map_or_else(|| home().map(|h| h.join(".config")), Ok)?
                .join("systemd/user/ccs.service"),
            Manager::SystemdSystem => PathBuf::from("/etc/systemd/system/ccs.service"),
            Manager::LaunchdAgent => home()?.join("Library/LaunchAgents/dev.ccs.daemon.plist"),
            Manager::LaunchdDaemon => PathBuf::from("/Library/LaunchDaemons/dev.ccs.daemon.plist"),
        })
    }
}

/// What the service runs: this binary, on this home, as this user (system services).
#[derive(Clone, Debug)]
pub struct Spec {
    pub exe: PathBuf,
    pub home: PathBuf,
    pub user: Option<String>,
}

/// The unit file (systemd) or property list (launchd) for `spec`.
pub fn render(manager: Manager, spec: &Spec) -> String {
    let exe = spec.exe.display();
    let home = spec.home.display();
    match manager {
        Manager::SystemdUser | Manager::SystemdSystem => {
            let mut s = format!(
                "# Written by `ccs cliproxy service install`; `ccs cliproxy service uninstall` \
                 removes it.\n\
                 [Unit]\n\
                 Description=ccs: several Claude subscriptions as one (the local proxy daemon)\n\
                 After=network-online.target\n\
                 Wants=network-online.target\n\
                 \n\
                 [Service]\n\
                 Type=simple\n\
                 ExecStart={exe} daemon run\n\
                 Environment=CCS_HOME={home}\n\
                 # A clean stop (`ccs cliproxy stop`) exits 0 and stays stopped; a crash comes \
                 back. Status {ALREADY_RUNS_EXIT}: another daemon already serves this home.\n\
                 Restart=on-failure\n\
                 RestartSec=5\n\
                 RestartPreventExitStatus={ALREADY_RUNS_EXIT}\n\
                 # The daemon's graceful stop lets in-flight answers finish.\n\
                 TimeoutStopSec=30\n\
                 # Logs: the journal (standard error) and $CCS_HOME/cliproxy/logs/.\n\
                 StandardError=journal\n"
            );
            if manager == Manager::SystemdSystem {
                let user = spec.user.as_deref().unwrap_or("ccs");
                s.push_str(&format!(
                    "User={user}\n\
                     Group={user}\n\
                     UMask=0077\n\
                     ReadWritePaths={home}\n\
                     NoNewPrivileges=yes\n\
                     ProtectSystem=strict\n\
                     ProtectHome=read-only\n\
                     PrivateTmp=yes\n\
                     PrivateDevices=yes\n\
                     ProtectKernelTunables=yes\n\
                     ProtectKernelModules=yes\n\
                     ProtectKernelLogs=yes\n\
                     ProtectControlGroups=yes\n\
                     ProtectClock=yes\n\
                     ProtectHostname=yes\n\
                     RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
                     RestrictNamespaces=yes\n\
                     RestrictRealtime=yes\n\
                     RestrictSUIDSGID=yes\n\
                     LockPersonality=yes\n\
                     MemoryDenyWriteExecute=yes\n\
                     SystemCallArchitectures=native\n\
                     CapabilityBoundingSet=\n"
                ));
            }
            let target = match manager {
                Manager::SystemdSystem => "multi-user.target",
                _ => "default.target",
            };
            s.push_str(&format!("\n[Install]\nWantedBy={target}\n"));
            s
        }
        Manager::LaunchdAgent | Manager::LaunchdDaemon => {
            let esc = |s: &str| {
                s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            let user = match (manager, &spec.user) {
                (Manager::LaunchdDaemon, u) => format!(
                    "  <key>UserName</key><string>{}</string>\n",
                    esc(u.as_deref().unwrap_or("ccs"))
                ),
                _ => String::new(),
            };
            let log = spec.home.join("cliproxy/logs/daemon.out");
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
                 \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
                 <!-- Written by `ccs cliproxy service install`; `ccs cliproxy service uninstall` \
                 removes it. -->\n\
                 <plist version=\"1.0\">\n<dict>\n\
                 \x20 <key>Label</key><string>dev.ccs.daemon</string>\n\
                 \x20 <key>ProgramArguments</key>\n  <array><string>{}</string><string>daemon</string><string>run</string></array>\n\
                 \x20 <key>EnvironmentVariables</key>\n  <dict><key>CCS_HOME</key><string>{}</string></dict>\n\
                 {user}\
                 \x20 <key>RunAtLoad</key><true/>\n\
                 \x20 <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
                 \x20 <key>ThrottleInterval</key><integer>5</integer>\n\
                 \x20 <key>StandardErrorPath</key><string>{}</string>\n\
                 </dict>\n</plist>\n",
                esc(&exe.to_string()),
                esc(&home.to_string()),
                esc(&log.display().to_string()),
            )
        }
    }
}

/// The manager's program.
fn program(manager: Manager) -> std::ffi::OsString {
    let (var, default) = if manager.systemd() {
        ("CCS_SYSTEMCTL", "systemctl")
    } else {
        ("CCS_LAUNCHCTL", "launchctl")
    };
    std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| default.into())
}

/// The manager's program with `args` (`--user` first for a user unit), and how it reads.
fn command(manager: Manager, args: &[&str]) -> (std::process::Command, String) {
    let program = program(manager);
    let mut cmd = std::process::Command::new(&program);
    let mut shown = vec![program.to_string_lossy().into_owned()];
    if manager == Manager::SystemdUser {
        cmd.arg("--user");
        shown.push("--user".into());
    }
    cmd.args(args);
    shown.extend(args.iter().map(|a| a.to_string()));
    (cmd, shown.join(" "))
}

/// Runs the manager's program with `args`; its output when it succeeded.
pub fn ask(manager: Manager, args: &[&str]) -> Result<String> {
    let (mut cmd, shown) = command(manager, args);
    let out = cmd.output().with_context(|| {
        format!("cannot run `{shown}`: is this machine's service manager installed?")
    })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let hint = if said.contains("Failed to connect to bus") {
            match manager {
                Manager::SystemdUser => {
                    "\nno systemd user manager answers here (a container, or a login without \
                     one): `loginctl enable-linger $USER` and a new login give you one; until \
                     then `ccs cliproxy start` runs the daemon without a service"
                }
                _ => "\nsystemd does not run on this machine: `ccs cliproxy start` runs the daemon without a service",
            }
        } else {
            ""
        };
        bail!("`{shown}` failed ({}): {said}{hint}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The manager's answer to `args`, whatever its exit status (`is-active` answers `inactive`
/// with status 3).
pub fn answer(manager: Manager, args: &[&str]) -> Option<String> {
    let out = command(manager, args).0.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn launchd_domain(manager: Manager) -> String {
    match manager {
        Manager::LaunchdAgent => format!("gui/{}", rustix::process::getuid().as_raw()),
        _ => "system".to_string(),
    }
}

/// The launchd service itself: `DOMAIN/LABEL`.
pub fn launchd_target(manager: Manager) -> String {
    format!("{}/{}", launchd_domain(manager), manager.name())
}

/// The home a service definition runs on, read back from its text.
pub fn home_of(text: &str) -> Option<PathBuf> {
    if let Some(line) = text
        .lines()
        .find_map(|l| l.strip_prefix("Environment=CCS_HOME="))
    {
        return Some(PathBuf::from(line));
    }
    let after = text.split("<key>CCS_HOME</key><string>").nth(1)?;
    let value = after.split("</string>").next()?;
    Some(PathBuf::from(
        value
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    ))
}

/// Whether the manager says the service is running.
pub fn active(manager: Manager) -> bool {
    if manager.systemd() {
        answer(manager, &["is-active", manager.name()]).as_deref() == Some("active")
    } else {
        answer(manager, &["print", &launchd_target(manager)])
            .is_some_and(|o| o.contains("state = running"))
    }
}

/// What `service status` says.
#[derive(Debug, Serialize)]
pub struct Report {
    pub manager: Manager,
    pub name: &'static str,
    pub file: PathBuf,
    pub installed: bool,
    /// The home the installed service runs on.
    pub home: Option<PathBuf>,
    /// Whether that is this CLI's home.
    pub this_home: bool,
    /// `enabled`, `disabled`, … as the manager says (systemd).
    pub enabled: Option<String>,
    /// `active`, `inactive`, `failed`, … as the manager says (launchd: `running` or not).
    pub active: Option<String>,
}

impl Report {
    pub fn now(manager: Manager, paths: &Paths) -> Result<Report> {
        let file = manager.file()?;
        let text = std::fs::read_to_string(&file).ok();
        let home = text.as_deref().and_then(home_of);
        let here = std::path::absolute(&paths.home)?;
        let (enabled, active) = match (&text, manager.systemd()) {
            (None, _) => (None, None),
            (Some(_), true) => (
                answer(manager, &["is-enabled", manager.name()]),
                answer(manager, &["is-active", manager.name()]),
            ),
            (Some(_), false) => (
                None,
                Some(
                    if active(manager) {
                        "running"
                    } else {
                        "not running"
                    }
                    .into(),
                ),
            ),
        };
        Ok(Report {
            manager,
            name: manager.name(),
            installed: text.is_some(),
            this_home: home.as_deref() == Some(here.as_path()),
            home,
            file,
            enabled,
            active,
        })
    }
}

/// With a service installed for `paths`' home, asks its manager to start it (the CLI's
/// on-demand start then waits for it like for its own); false when none is installed, or when
/// the manager could not be asked (said on stderr: the CLI then starts the daemon itself).
pub fn start_if_installed(paths: &Paths) -> Result<bool> {
    for manager in [Manager::here(false), Manager::here(true)] {
        let Ok(file) = manager.file() else { continue };
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if home_of(&text).as_deref() != Some(std::path::absolute(&paths.home)?.as_path()) {
            continue;
        }
        let asked = if manager.systemd() {
            ask(manager, &["start", manager.name()])
        } else {
            ask(manager, &["kickstart", &launchd_target(manager)])
        };
        // A manager that cannot be asked must not leave the CLI without a daemon: it starts
        // its own (still one per home: the home lock sees to that).
        if let Err(e) = asked {
            crate::errln!("ccs: the service did not start ({e:#}); starting the daemon without it");
            return Ok(false);
        }
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            exe: "/usr/local/bin/ccs".into(),
            home: "/home/ann/.ccs".into(),
            user: None,
        }
    }

    #[test]
    fn a_definition_names_its_home_and_reads_back() {
        for m in [
            Manager::SystemdUser,
            Manager::SystemdSystem,
            Manager::LaunchdAgent,
            Manager::LaunchdDaemon,
        ] {
            let text = render(m, &spec());
            assert_eq!(
                home_of(&text),
                Some(PathBuf::from("/home/ann/.ccs")),
                "{m:?}"
            );
            assert!(text.contains("/usr/local/bin/ccs"), "{m:?}");
        }
        let odd = Spec {
            home: "/tmp/a&b<c>".into(),
            ..spec()
        };
        let plist = render(Manager::LaunchdAgent, &odd);
        assert!(!plist.contains("a&b"), "escaped: {plist}");
        assert_eq!(home_of(&plist), Some(PathBuf::from("/tmp/a&b<c>")));
    }

    #[test]
    fn the_system_unit_is_hardened_and_runs_as_its_user() {
        let text = render(
            Manager::SystemdSystem,
            &Spec {
                user: Some("svc".into()),
                ..spec()
            },
        );
        for line in [
            "User=svc",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/home/ann/.ccs",
            "WantedBy=multi-user.target",
            "RestartPreventExitStatus=3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let user = render(Manager::SystemdUser, &spec());
        assert!(!user.contains("User="), "a user unit runs as its user");
        assert!(user.contains("WantedBy=default.target"));
    }
}
