//! The real `ccs` binary as a background daemon (`ccs daemon run`), killed with SIGKILL when
//! dropped, so a failing test leaves none behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    std::env::var_os("CCS_CRASH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ccs")))
}

pub struct DaemonProcess(Child);

impl DaemonProcess {
    /// `ccs daemon run` for `home` (with a planted bug when asked); `CCS_CRASH_BIN` picks
    /// another binary (the release build).
    pub fn start(home: &Path, planted: Option<&str>) -> DaemonProcess {
        let mut cmd = Command::new(bin());
        if let Some(bug) = planted {
            cmd.env("CCS_PLANTED_BUG", bug);
        }
        let child = cmd
            .args(["daemon", "run"])
            .env("CCS_HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon");
        DaemonProcess(child)
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (up to 20 s) for `/healthz` to answer at `url`.
pub fn wait_ready(url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ccs::daemon::healthz(url).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
