//! `ccs cliproxy service`: the real binary installing, checking and removing a systemd user
//! unit in a temporary XDG_CONFIG_HOME. No systemd runs here, so `systemctl` is a stand-in
//! (`CCS_SYSTEMCTL`) that records each call and, like systemd, runs the unit's ExecStart with
//! its Environment when asked to start it and stops that process when asked to disable it.
//! The unit file itself goes through the real `systemd-analyze verify`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

const STAND_IN: &str = r#"#!/bin/sh
# systemctl's stand-in: records every call; start/stop/disable act on the unit's process.
dir="$(dirname "$0")"
echo "$*" >> "$dir/calls"
[ "$1" = "--user" ] && shift
unit="$XDG_CONFIG_HOME/systemd/user/ccs.service"
case "$1" in
  start)
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then exit 0; fi
    exe=$(sed -n 's/^ExecStart=//p' "$unit")
    home=$(sed -n 's/^Environment=CCS_HOME=//p' "$unit")
    CCS_HOME="$home" setsid $exe >/dev/null 2>&1 < /dev/null &
    echo $! > "$dir/pid" ;;
  disable)
    if [ "$2" = "--now" ] && [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid"); kill "$pid" 2>/dev/null
      while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
      rm -f "$dir/pid"
    fi
    rm -f "$dir/enabled" ;;
  enable) touch "$dir/enabled" ;;
  is-enabled) if [ -f "$dir/enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  is-active)
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then echo active
    else echo inactive; exit 3; fi ;;
esac
exit 0
"#;

struct Rig {
    sim: ccs::sim::SimHandle,
    paths: ccs::config::Paths,
    xdg: PathBuf,
    manager: PathBuf,
    _stop: StopOnDrop,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let sim = sim(&scenario(&[("a@example.com", 10)]), false);
        let (dir, paths, _) = home_with_port(&sim.url(), free_port());
        let manager = dir.path().join("manager");
        std::fs::create_dir_all(&manager).unwrap();
        let systemctl = manager.join("systemctl");
        std::fs::write(&systemctl, STAND_IN).unwrap();
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        Rig {
            _stop: StopOnDrop(paths.home.clone()),
            xdg: dir.path().join("xdg"),
            sim,
            paths,
            manager,
            dir,
        }
    }

    fn ccs(&self, args: &[&str]) -> (i32, String, String) {
        let systemctl = self.manager.join("systemctl");
        ccs_with(
            &self.paths.home,
            args,
            &[
                ("XDG_CONFIG_HOME", self.xdg.as_os_str()),
                ("CCS_SYSTEMCTL", systemctl.as_os_str()),
            ],
        )
    }

    fn unit(&self) -> PathBuf {
        self.xdg.join("systemd/user/ccs.service")
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.manager.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pid of the daemon the stand-in started, while it runs.
    fn service_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.manager.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        ccs::daemon::pid_alive(pid).then_some(pid)
    }

    fn daemon_pid(&self) -> Option<u32> {
        let config = ccs::config::Config::load(&self.paths).unwrap();
        match ccs::daemon::running(&self.paths, &config) {
            ccs::daemon::Running::Yes { pid } => Some(pid),
            _ => None,
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The stand-in's daemon, whatever the test did.
        if let Some(pid) = self.service_pid() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = &self.sim;
    }
}

/// Every file under `dir`, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_takes_over_the_clis_daemon_is_idempotent_and_uninstall_leaves_the_home() {
    let rig = Rig::new();
    // A daemon the CLI started on demand.
    let (code, out, err) = rig.ccs(&["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let cli_pid = rig.daemon_pid().expect("the CLI's daemon runs");

    let (code, out, err) = rig.ccs(&["cliproxy", "service", "install"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("installed ccs.service"), "{out}");
    assert!(out.contains("the service runs it now"), "{out}");
    assert!(
        !ccs::daemon::pid_alive(cli_pid),
        "the CLI's daemon gave way"
    );
    let service = rig.service_pid().expect("the service's daemon runs");
    assert!(
        wait_until(|| rig.daemon_pid() == Some(service)),
        "one daemon, the service's"
    );
    let acts: Vec<String> = rig
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("--user is-"))
        .collect();
    assert_eq!(
        acts,
        [
            "--user daemon-reload",
            "--user enable ccs.service",
            "--user start ccs.service"
        ]
    );
    let unit = std::fs::read_to_string(rig.unit()).unwrap();
    assert!(
        unit.contains(&format!(
            "Environment=CCS_HOME={}",
            rig.paths.home.display()
        )),
        "{unit}"
    );

    // Again: nothing changes but the manager being told again.
    let before = tree(&rig.xdg);
    let (code, out, _) = rig.ccs(&["cliproxy", "service", "install"]);
    assert_eq!(code, 0);
    assert!(out.contains("was already installed"), "{out}");
    assert_eq!(tree(&rig.xdg), before, "a second install writes nothing");
    assert_eq!(
        rig.service_pid(),
        Some(service),
        "the service's daemon kept running"
    );

    let (code, out, _) = rig.ccs(&["cliproxy", "service", "status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["installed"], true);
    assert_eq!(v["this_home"], true);
    assert_eq!(v["active"], "active");
    assert_eq!(v["enabled"], "enabled");

    // A clean stop stays stopped; the CLI's next on-demand start goes through the manager.
    let (code, _, _) = rig.ccs(&["cliproxy", "stop"]);
    assert_eq!(code, 0);
    assert!(rig.service_pid().is_none());
    let starts = |r: &Rig| r.calls().iter().filter(|c| c.contains("start ccs")).count();
    let (code, out, err) = rig.ccs(&["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(starts(&rig), 3, "{:?}", rig.calls());
    let again = rig.service_pid().expect("started by the manager");
    assert_eq!(rig.daemon_pid(), Some(again));

    // Uninstall: the service stops and its unit goes; the home stays; again changes nothing.
    let (code, out, _) = rig.ccs(&["cliproxy", "service", "uninstall"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed ccs.service"), "{out}");
    assert!(!rig.unit().exists());
    assert!(rig.service_pid().is_none() && rig.daemon_pid().is_none());
    assert!(rig.paths.config_file().exists(), "the home stays");
    let calls = rig.calls().len();
    let (code, out, _) = rig.ccs(&["cliproxy", "service", "uninstall"]);
    assert_eq!(code, 0);
    assert!(out.contains("is not installed"), "{out}");
    assert_eq!(rig.calls().len(), calls, "nothing asked of the manager");
    let _ = rig.dir.path();
}

#[test]
fn a_second_daemon_on_a_home_exits_3_which_the_unit_does_not_restart() {
    let rig = Rig::new();
    let (code, out, err) = rig.ccs(&["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = rig.ccs(&["daemon", "run"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("already runs"), "{err}");
    let (code, out, err) = rig.ccs(&["cliproxy", "service", "install"]);
    assert_eq!(code, 0, "{out}{err}");
    let unit = std::fs::read_to_string(rig.unit()).unwrap();
    assert!(
        unit.lines().any(|l| l == "RestartPreventExitStatus=3"),
        "{unit}"
    );
    assert!(unit.lines().any(|l| l == "Restart=on-failure"), "{unit}");
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// `systemd-analyze verify` on a unit: its complaints about the unit (none when it is right).
fn verify(unit: &Path, user: bool, runtime: &Path) -> String {
    let mut cmd = std::process::Command::new("systemd-analyze");
    if user {
        cmd.arg("--user");
    }
    let out = cmd
        .arg("verify")
        .arg(unit)
        .env("XDG_RUNTIME_DIR", runtime)
        .output()
        .expect("systemd-analyze runs (cargo xtask test installs Debian's systemd)");
    assert!(out.status.success(), "{out:?}");
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(&name))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn systemd_analyze_accepts_the_user_and_the_system_unit() {
    use ccs::daemon::service::{render, Manager, Spec};
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let spec = Spec {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_ccs")),
        home: dir.path().join("home"),
        user: Some("root".into()),
    };
    for (manager, user) in [
        (Manager::SystemdUser, true),
        (Manager::SystemdSystem, false),
    ] {
        let unit = dir.path().join(format!("{manager:?}")).join("ccs.service");
        std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
        std::fs::write(&unit, render(manager, &spec)).unwrap();
        let said = verify(&unit, user, &runtime);
        assert!(said.is_empty(), "{manager:?}: {said}");
    }
    // And the check can fail: a unit with a bad line is complained of.
    let bad = dir.path().join("bad/ccs.service");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(
        &bad,
        render(Manager::SystemdUser, &spec).replace("Restart=on-failure", "Restart=sometimes"),
    )
    .unwrap();
    assert!(!verify(&bad, true, &runtime).is_empty());
}

/// Where no systemd user manager answers (a container, a login without one): install takes
/// its unit file back and leaves the CLI's daemon running; a unit left by hand does not stop
/// the CLI from starting its own daemon.
#[test]
fn without_a_manager_install_undoes_itself_and_the_cli_still_starts_the_daemon() {
    let rig = Rig::new();
    std::fs::write(
        rig.manager.join("systemctl"),
        "#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/calls\"\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n",
    )
    .unwrap();
    let (code, out, err) = rig.ccs(&["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let pid = rig.daemon_pid().expect("the CLI's daemon");
    let (code, _, err) = rig.ccs(&["cliproxy", "service", "install"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not installed") && err.contains("no systemd user manager answers"),
        "{err}"
    );
    assert!(!rig.unit().exists(), "the unit file was taken back");
    assert!(
        !rig.xdg.join("systemd").exists(),
        "and the folders made for it"
    );
    assert_eq!(rig.daemon_pid(), Some(pid), "the CLI's daemon still runs");

    // A unit file no manager runs (left by hand): the on-demand start goes on without it.
    let (code, _, _) = rig.ccs(&["cliproxy", "stop"]);
    assert_eq!(code, 0);
    let spec = ccs::daemon::service::Spec {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_ccs")),
        home: std::path::absolute(&rig.paths.home).unwrap(),
        user: None,
    };
    std::fs::create_dir_all(rig.unit().parent().unwrap()).unwrap();
    std::fs::write(
        rig.unit(),
        ccs::daemon::service::render(ccs::daemon::service::Manager::SystemdUser, &spec),
    )
    .unwrap();
    let (code, out, err) = rig.ccs(&["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("starting the daemon without it"), "{err}");
    assert!(rig.daemon_pid().is_some());
}
