//! `Paths`: every place ccs keeps something, derived from `CCS_HOME`.

use std::path::PathBuf;

use super::ConfigError;

/// Every place ccs keeps something, derived from `CCS_HOME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    /// `CCS_HOME` if set, else `~/.ccs`.
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Some(h) = std::env::var_os("CCS_HOME").filter(|h| !h.is_empty()) {
            return Ok(Paths { home: h.into() });
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(ConfigError::NoHome)?;
        Ok(Paths {
            home: PathBuf::from(home).join(".ccs"),
        })
    }

    pub fn at(home: impl Into<PathBuf>) -> Self {
        Paths { home: home.into() }
    }

    pub fn config_file(&self) -> PathBuf {
        self.home.join("config.yaml")
    }
    /// Everything of the proxy: the store, the JSON mirror, pid, logs.
    pub fn cliproxy(&self) -> PathBuf {
        self.home.join("cliproxy")
    }
    pub fn accounts_json(&self) -> PathBuf {
        self.cliproxy().join("accounts.json")
    }
    pub fn auth_dir(&self) -> PathBuf {
        self.cliproxy().join("auth")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.cliproxy().join("state.sled")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.cliproxy().join("logs")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.cliproxy().join("daemon.pid")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.cliproxy().join("daemon.lock")
    }
    /// The URL the running daemon listens on, written by it (the configured port may have
    /// changed since it started).
    pub fn url_file(&self) -> PathBuf {
        self.cliproxy().join("daemon.url")
    }
    /// Written as the daemon starts serving, removed when it has stopped cleanly: found at a
    /// start, the run before ended otherwise (an alert).
    pub fn running_file(&self) -> PathBuf {
        self.cliproxy().join("daemon.running")
    }
    /// Where a refresh's answer is written first (`store/landing.rs`).
    pub fn landing_dir(&self) -> PathBuf {
        self.cliproxy().join("landing")
    }
    /// Held by a CLI while it starts the daemon, so concurrent starts queue instead of racing.
    pub fn start_lock_file(&self) -> PathBuf {
        self.cliproxy().join("start.lock")
    }
    /// The generated client key and management secret (`keys.rs`).
    pub fn keys_file(&self) -> PathBuf {
        self.cliproxy().join("keys.json")
    }
    pub fn instances_dir(&self) -> PathBuf {
        self.home.join("instances")
    }
}
