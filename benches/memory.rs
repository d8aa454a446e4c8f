//! The memory soak: the release daemon under full load for a long time must end where it
//! started, whatever the number of requests (issue 14: it kept every request of the last hour).
//! `cargo xtask memory [--minutes N]` runs it (default 60); `CCS_BIN` points it at another
//! build of ccs to compare.
//!
//! Load: 64 connections, one small streamed request after another, 1,000 sessions, two
//! accounts, the daemon logging at info (one line per request, capped by the log limiter).
//! Reports the daemon's RSS after a warm-up, every minute, at the peak, and 10 s after the load
//! stopped. Not a test: it asserts nothing about time, it measures.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use support::*;

const CONCURRENCY: usize = 64;
const SESSIONS: u64 = 1_000;

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Sends requests on `CONCURRENCY` connections until `stop`; counts answers and failures.
fn load(
    rt: &tokio::runtime::Runtime,
    url: &str,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let body = Bytes::from(
        serde_json::to_vec(
            &json!({"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,
            "messages":[{"role":"user","content":"hi"}]}),
        )
        .unwrap(),
    );
    let c = client();
    (0..CONCURRENCY)
        .map(|w| {
            let (c, url, body) = (c.clone(), url.to_string(), body.clone());
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            rt.spawn(async move {
                let mut n = w as u64;
                while !stop.load(Ordering::Relaxed) {
                    n += CONCURRENCY as u64;
                    let r = c
                        .post(format!("{url}/v1/messages"))
                        .bearer_auth(KEY)
                        .header("content-type", "application/json")
                        .header("x-claude-code-session-id", format!("s-{}", n % SESSIONS))
                        .body(body.clone())
                        .send()
                        .await;
                    let good = match r {
                        Ok(r) if r.status().is_success() => {
                            let mut s = r.bytes_stream();
                            let mut whole = true;
                            while let Some(chunk) = s.next().await {
                                whole &= chunk.is_ok();
                            }
                            whole
                        }
                        _ => false,
                    };
                    if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

fn main() {
    let minutes: u64 = std::env::var("MEMORY_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let (_sim, sim) = spawn_sim(tmp.path(), 4);
    let (daemon, url, _) = spawn_daemon_logging(&tmp.path().join("home"), &sim, "info");
    let pid = daemon.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(add_accounts(&client(), &sim, &url, 0, 2));
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    println!(
        "memory soak: {minutes} min of load on {} ({})",
        url,
        ccs_bin()
    );
    let idle = rss_kb(pid);
    let workers = load(&rt, &url, stop.clone(), ok.clone(), failed.clone());
    // Allocator pools, connection buffers and session bindings settle in the first minute.
    std::thread::sleep(Duration::from_secs(60));
    let warm = rss_kb(pid);
    let warm_count = ok.load(Ordering::Relaxed);
    println!(
        "| minute | requests ok | failed | req/s | daemon RSS MB |\n| --- | --- | --- | --- | --- |"
    );
    println!(
        "| warm-up | {warm_count} | {} | - | {:.1} (idle before: {:.1}) |",
        failed.load(Ordering::Relaxed),
        mb(warm),
        mb(idle)
    );
    let peak = PeakRss::start(pid, Duration::from_secs(1));
    let started = Instant::now();
    let mut last = warm_count;
    for m in 1..=minutes {
        let until = started + Duration::from_secs(60 * m);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let now = ok.load(Ordering::Relaxed);
        println!(
            "| {m} | {now} | {} | {:.0} | {:.1} |",
            failed.load(Ordering::Relaxed),
            (now - last) as f64 / 60.0,
            mb(rss_kb(pid))
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            let _ = w.await;
        }
    });
    let peak = peak.stop();
    std::thread::sleep(Duration::from_secs(10));
    let end = rss_kb(pid);
    let total = ok.load(Ordering::Relaxed) - warm_count;
    println!(
        "\nrequests in {minutes} min: {total} ok, {} failed; daemon RSS after warm-up {:.1} MB, \
         peak {:.1} MB, 10 s after the load {:.1} MB: {:+.1} MB over the run",
        failed.load(Ordering::Relaxed),
        mb(warm),
        mb(peak),
        mb(end),
        mb(end) - mb(warm)
    );
}
