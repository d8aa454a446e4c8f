//! Crash safety: the daemon process is killed with SIGKILL at random moments under load, again
//! and again, against the simulator with 2-second tokens that rotate on every refresh (the
//! daemon refreshes each account every second), and restarted each time.
//!
//! Every loss is classified with the authority's own record (`SimModel::replays`): a daemon
//! that finds its stored refresh token rotated away replays it, and the authority knows which
//! generation it held, how many it had issued, and the newest it ever saw used upstream. A
//! token is used only after it is durable, so a used generation newer than the stored one is
//! a token that was *written, then lost*: that must never happen. Otherwise the newer token
//! was *answered but never durable*: the kill landed between the authority's answer and the
//! write, which the refresh intent makes visible at the next start (the account shows dead
//! with its fix at once, never `fresh` until its next refresh).
//!
//! `CCS_CRASH_CYCLES` (default 12) sets the cycles, `CCS_CRASH_ACCOUNTS` (4), `CCS_CRASH_TOKEN_MS`
//! (2000) and `CCS_CRASH_BURN` (0 threads spinning) the world, `CCS_CRASH_BIN` the binary (the release
//! build: `cargo xtask crash --cycles 200`). Dead accounts are logged in again, so every
//! cycle is a fresh chance to lose one.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{wait_ready, DaemonProcess};
use common::*;
use rand::{Rng, SeedableRng};
use reqwest::Method;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `CCS_CRASH_ACCOUNTS` accounts (default 4).
fn emails() -> Vec<String> {
    (0..env_or("CCS_CRASH_ACCOUNTS", 4))
        .map(|i| format!("{}@example.com", (b'a' + i as u8) as char))
        .collect()
}

/// Every `FIELD=` the daemon's logs name (`answer_to_written_us`: from a refresh's answer read
/// to it written, safe from a kill; `answer_to_durable_us`: to it synced, safe from a power
/// loss), in microseconds, sorted.
fn logged_windows(paths: &ccs::config::Paths, field: &str) -> Vec<u64> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(paths.logs_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.split(field).nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(us) = digits.parse() {
                    all.push(us);
                }
            }
        }
    }
    all.sort_unstable();
    all
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// What a run found.
struct Outcome {
    written_then_lost: usize,
    hidden: Vec<String>,
    replays: usize,
    relogins: usize,
    ok: u64,
}

#[test]
fn kill_9_under_load_never_loses_a_written_token_and_never_hides_a_loss() {
    let cycles: u64 = std::env::var("CCS_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(12);
    let o = run(cycles, None);
    assert_eq!(
        o.written_then_lost, 0,
        "tokens written down, used, then lost"
    );
    assert!(
        o.hidden.is_empty(),
        "losses hidden from the user: {:?}",
        o.hidden
    );
    assert_eq!(
        o.relogins, o.replays,
        "every loss showed as a dead account at the next start"
    );
    assert!(o.ok > 0, "the load never got through");
}

/// The teeth: a daemon that uses refreshed tokens without writing them down loses them at a
/// kill, and the same run must say so.
#[cfg(feature = "planted")]
#[test]
fn the_crash_checks_fire_when_tokens_are_used_before_they_are_written() {
    let o = run(4, Some("TokenSavedLate"));
    assert!(
        o.written_then_lost > 0 || !o.hidden.is_empty(),
        "a daemon that never writes refreshed tokens lost nothing?"
    );
}

fn run(cycles: u64, planted: Option<&str>) -> Outcome {
    let emails = emails();
    let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    let scenario = ccs::sim::Scenario::roomy(
        &emails,
        Duration::from_millis(env_or("CCS_CRASH_TOKEN_MS", 2000)),
    );
    let sim = sim(&scenario, false);
    let port = free_port();
    let (_dir, paths, _config) = home_with_port(&sim.url(), port);
    let url = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let mut daemon = DaemonProcess::start(&paths.home, planted);
    assert!(wait_ready(&url), "the daemon did not start");
    let stop_burning = Arc::new(AtomicBool::new(false));
    for e in &emails {
        rt.block_on(add_account(&sim.url(), &url, e));
    }
    // `CCS_CRASH_BURN` threads spinning beside the load: a loaded machine.
    let burners: Vec<_> = (0..env_or("CCS_CRASH_BURN", 0))
        .map(|_| {
            let stop = stop_burning.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();

    // What the disk costs, beside the daemon on the same filesystem and under the same load:
    // a page written in place and data-synced every 100 ms, the way a refresh's answer lands.
    let disk = {
        let (stop, file) = (stop_burning.clone(), paths.home.join("disk-baseline"));
        std::thread::spawn(move || {
            let f = std::fs::File::create(&file).expect("the baseline file");
            let page = [b' '; 4096];
            let mut costs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::os::unix::fs::FileExt::write_all_at(&f, &page, 0).expect("write");
                f.sync_data().expect("sync");
                costs.push(t.elapsed().as_micros() as u64);
                std::thread::sleep(Duration::from_millis(100));
            }
            costs.sort_unstable();
            costs
        })
    };

    // Load: four conversations, one request after another, for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let session = format!("s{}", n % 4);
                let r = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        try_ask(&url, Some(&session), false),
                    )
                    .await
                });
                match r {
                    Ok(Ok(resp)) if resp.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4a5_4013);
    let mut relogins = 0;
    let mut hidden = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
        daemon.kill();
        daemon = DaemonProcess::start(&paths.home, planted);
        assert!(
            wait_ready(&url),
            "cycle {cycle}: the daemon did not come back"
        );
        // A loss must show at once: within two seconds of the start, every account whose
        // stored token the authority rotated away is dead (the refresh intent checks it).
        std::thread::sleep(Duration::from_secs(2));
        let (s, v) = rt.block_on(manage(&url, Method::GET, "/accounts", None));
        assert_eq!(s, 200, "{v}");
        for a in v["accounts"].as_array().cloned().unwrap_or_default() {
            let email = a["email"].as_str().unwrap_or_default().to_string();
            if a["state"] == "dead" {
                relogins += 1;
                rt.block_on(add_account(&sim.url(), &url, &email));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    stop_burning.store(true, Ordering::Relaxed);
    for b in burners {
        let _ = b.join();
    }
    let disk = disk.join().expect("the baseline thread");
    // Let the last start's checks finish, then stop the daemon and read what it stored.
    std::thread::sleep(Duration::from_secs(2));
    daemon.kill();
    let store = ccs::store::SledStore::open(
        &paths,
        Arc::new(ccs_actors::SystemClock) as ccs_actors::SharedClock,
    )
    .expect("the store opens after the daemon is gone");
    for &e in &emails {
        let stored = store.token(e).expect("a readable store");
        let dead = store
            .accounts()
            .expect("accounts")
            .iter()
            .any(|a| a.email == e && a.dead);
        let generation = stored
            .as_ref()
            .and_then(|t| sim.model.generation_of(t.refresh.expose()));
        let live = sim.model.lineage(e).map(|l| l.issued);
        if !dead && generation != live && !store.in_doubt(e, stored.as_ref().unwrap()).unwrap() {
            hidden.push(format!(
                "{e}: stored generation {generation:?}, live {live:?}, shown alive with no intent"
            ));
        }
    }

    let replays = sim.model.replays();
    let written_then_lost: Vec<_> = replays
        .iter()
        .filter(|r| r.lineage.used > r.generation)
        .collect();
    let never_durable = replays.len() - written_then_lost.len();
    let written = logged_windows(&paths, "answer_to_written_us=");
    let windows = logged_windows(&paths, "answer_to_durable_us=");
    println!(
        "crash test{}: {cycles} SIGKILLs in {:.0} s; requests {} ok, {} failed; accounts lost {} \
         (answered but never durable {never_durable}, written then lost {}); hidden {}; re-logins {relogins}; \
         over {} refreshes, answer to written p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         answer to synced p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         the disk alone (a page written and synced, {} times) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        planted.map(|b| format!(" (planted {b})")).unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        replays.len(),
        written_then_lost.len(),
        hidden.len(),
        windows.len(),
        percentile(&written, 0.5),
        percentile(&written, 0.99),
        percentile(&written, 1.0),
        percentile(&windows, 0.5),
        percentile(&windows, 0.99),
        percentile(&windows, 1.0),
        disk.len(),
        percentile(&disk, 0.5),
        percentile(&disk, 0.99),
        percentile(&disk, 1.0),
    );
    Outcome {
        written_then_lost: written_then_lost.len(),
        hidden,
        replays: replays.len(),
        relogins,
        ok: ok.load(Ordering::Relaxed),
    }
}
