//! A simulator on a manual clock and an in-process daemon sharing it, with accounts logged in.

use std::sync::Arc;
use std::time::Duration;

use ccs::daemon::DaemonHandle;
use ccs_actors::SharedClock;
use reqwest::Method;
use serde_json::Value;

use super::*;

pub struct Rig {
    pub sim: ccs::sim::SimHandle,
    pub daemon: DaemonHandle,
    pub _home: tempfile::TempDir,
    pub paths: ccs::config::Paths,
}

/// A simulator on a manual clock and a daemon sharing it, with `accounts` logged in.
pub async fn rig(accounts: &[(&str, u64)]) -> Rig {
    rig_with(accounts, |_| {}).await
}

/// `rig`, with the daemon's config changed by `tweak` first.
pub async fn rig_with(
    accounts: &[(&str, u64)],
    tweak: impl FnOnce(&mut ccs::config::Config),
) -> Rig {
    rig_on(scenario(accounts), tweak).await
}

/// `rig_with` over a scenario of the test's own (its users are logged in).
pub async fn rig_on(s: Scenario, tweak: impl FnOnce(&mut ccs::config::Config)) -> Rig {
    let emails: Vec<String> = s.users.iter().map(|u| u.email.clone()).collect();
    let sim = sim(&s, true);
    let clock: SharedClock = Arc::new(sim.clock.clone().expect("manual clock"));
    let (home, paths, mut config) = home_for(&sim.url());
    tweak(&mut config);
    let daemon = tokio::task::block_in_place(|| DaemonHandle::start(paths.clone(), config, clock))
        .expect("daemon");
    for email in &emails {
        add_account(&sim.url(), &daemon.url, email).await;
    }
    wait_fresh(&daemon.url, emails.len()).await;
    Rig {
        sim,
        daemon,
        _home: home,
        paths,
    }
}

impl Rig {
    /// Stops the daemon (its store flushed and closed), runs `between` on the stopped home,
    /// and starts a daemon again on the same home, config and clock (on a new port).
    pub fn restarted(self, between: impl FnOnce(&ccs::config::Paths)) -> Rig {
        let Rig {
            sim,
            daemon,
            _home,
            paths,
        } = self;
        tokio::task::block_in_place(|| daemon.stop()).expect("the daemon stops cleanly");
        between(&paths);
        let clock: SharedClock = Arc::new(sim.clock.clone().expect("manual clock"));
        let config = ccs::config::Config::load(&paths).expect("config");
        let daemon =
            tokio::task::block_in_place(|| DaemonHandle::start(paths.clone(), config, clock))
                .expect("the daemon starts again");
        Rig {
            sim,
            daemon,
            _home,
            paths,
        }
    }
}

/// Judges a flood of wrong secrets or keys: every one refused (401) or slowed (429), and the
/// throttle did slow some.
pub async fn assert_throttled(guesses: Vec<tokio::task::JoinHandle<u16>>, what: &str) {
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{what}: {statuses:?}");
}

pub async fn accounts(url: &str) -> Vec<Value> {
    let (s, v) = manage(url, Method::GET, "/accounts", None).await;
    assert_eq!(s, 200, "{v}");
    v["accounts"].as_array().cloned().unwrap_or_default()
}

pub async fn wait_fresh(url: &str, n: usize) {
    for _ in 0..400 {
        let a = accounts(url).await;
        if a.len() == n && a.iter().all(|a| a["state"] == "fresh") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("accounts never all fresh: {:?}", accounts(url).await);
}

pub fn advance(rig: &Rig, secs: u64) {
    rig.sim
        .clock
        .as_ref()
        .unwrap()
        .advance(Duration::from_secs(secs));
}

/// Points the home's config.yaml at the rig's daemon (the in-process daemon listens on a port
/// of its own), so the real `ccs` binary finds it.
pub fn point_cli_at_daemon(rig: &Rig) {
    let port = rig.daemon.url.rsplit(':').next().unwrap();
    let yaml = std::fs::read_to_string(rig.paths.config_file()).unwrap();
    std::fs::write(
        rig.paths.config_file(),
        yaml.replace("port: 8317", &format!("port: {port}")),
    )
    .unwrap();
}

/// What the simulator received last (`/sim/last-request`).
pub async fn last_request(sim: &str) -> Value {
    sim_get(sim, "/sim/last-request").await
}
