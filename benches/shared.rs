//! What the Redis backend adds to the request path (issue 19): two daemons on one simulator
//! in the same run, one alone on sled and one in a shared pool on a real `redis-server`, the
//! same small requests through each. A kept conversation is placed from the daemon's own
//! snapshot (Redis is not on its path); a new one looks its session up in Redis once and
//! writes its binding behind the request. `cargo bench --bench shared`; `LOAD_QUICK=1` for a
//! short run. Needs `redis-server` (Debian's package).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// A `redis-server` on a free loopback port, persisting as specs/shared-store.md asks.
fn spawn_redis(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (Proc(child), format!("redis://127.0.0.1:{port}/0"))
}

fn main() {
    let quick = std::env::var_os("LOAD_QUICK").is_some();
    let scale = |n: usize| if quick { (n / 10).max(50) } else { n };
    let tmp = tempfile::tempdir().unwrap();
    let (_sim, sim) = spawn_sim(tmp.path(), 50);
    let (_redis, redis) = spawn_redis(&tmp.path().join("redis"));
    let (_sled, sled_url, _) = spawn_daemon(&tmp.path().join("sled"), &sim);
    let shared_cfg =
        format!("store:\n  backend: redis\n  redis:\n    url: {redis}\n    prefix: bench\n");
    let (_shared, shared_url, _) =
        spawn_daemon_configured(&tmp.path().join("shared"), &sim, &shared_cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    header("sled alone", "redis pool");
    rt.block_on(async {
        let c = client();
        add_accounts(&c, &sim, &sled_url, 0, 1).await;
        add_accounts(&c, &sim, &shared_url, 0, 1).await;
        let target = |url: &str| Target {
            url: url.to_string(),
            token: KEY.into(),
            beta: false,
        };
        let (sled, shared) = (target(&sled_url), target(&shared_url));
        run(&c, &sled, 4, 400, body_small(), 16).await;
        run(&c, &shared, 4, 400, body_small(), 16).await;
        for conc in [1usize, 16] {
            let total = scale(if conc == 1 { 2_000 } else { 8_000 });
            // Kept conversations: 16 sessions, each bound after its first request.
            let a = run(&c, &sled, conc, total, body_small(), 16).await;
            let b = run(&c, &shared, conc, total, body_small(), 16).await;
            row(
                &format!("kept conversations, c={conc}: requests/s"),
                format!("{:.0}", a.rps()),
                format!("{:.0}", b.rps()),
                format!("{:.2}×", b.rps() / a.rps()),
            );
            added(
                &format!("kept conversations, c={conc}: p50 ms"),
                &a.latencies,
                &b.latencies,
                0.5,
            );
            added(
                &format!("kept conversations, c={conc}: p99 ms"),
                &a.latencies,
                &b.latencies,
                0.99,
            );
            // Every request a new conversation: a Redis lookup first, a binding written after.
            let total = scale(if conc == 1 { 1_000 } else { 4_000 });
            let a = run(&c, &sled, conc, total, body_small(), usize::MAX).await;
            let b = run(&c, &shared, conc, total, body_small(), usize::MAX).await;
            added(
                &format!("new conversation each request, c={conc}: p50 ms"),
                &a.latencies,
                &b.latencies,
                0.5,
            );
            added(
                &format!("new conversation each request, c={conc}: p99 ms"),
                &a.latencies,
                &b.latencies,
                0.99,
            );
        }
    });
}
