//! The load generator the benchmarks share: `run` sends requests over a number of
//! connections and keeps each one's latency and time to the first body chunk; `row` and
//! `added` print the table lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

#[derive(Default)]
pub struct Stats {
    pub wall: Duration,
    pub latencies: Vec<Duration>,
    pub first_event: Vec<Duration>,
    /// Largest gap between two consecutive body chunks, per request (events must not batch).
    pub chunks: u64,
}

pub fn pct(v: &[Duration], p: f64) -> Duration {
    let mut l = v.to_vec();
    l.sort();
    l.get(((l.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub token: String,
    pub beta: bool,
}

/// `total` requests over `concurrency` connections; each request's session id is drawn from
/// `sessions` (0: none).
pub async fn run(
    c: &reqwest::Client,
    t: &Target,
    concurrency: usize,
    total: usize,
    body: Bytes,
    sessions: usize,
) -> Stats {
    let started = Instant::now();
    let per = total.div_ceil(concurrency);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, t, body, counter) = (c.clone(), t.clone(), body.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Stats::default();
            for _ in 0..per {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let mut rb = c
                    .post(format!("{}/v1/messages", t.url))
                    .bearer_auth(&t.token)
                    .header("content-type", "application/json")
                    .body(body.clone());
                if t.beta {
                    rb = rb.header("anthropic-beta", "oauth-2025-04-20");
                }
                if sessions > 0 {
                    rb = rb.header(
                        "x-claude-code-session-id",
                        format!("s-{}", n as usize % sessions),
                    );
                }
                let begun = Instant::now();
                let r = rb.send().await.expect("request");
                assert!(r.status().is_success(), "status {}", r.status());
                let mut stream = r.bytes_stream();
                let mut first = None;
                while let Some(chunk) = stream.next().await {
                    chunk.expect("body");
                    out.chunks += 1;
                    first.get_or_insert_with(|| begun.elapsed());
                }
                out.first_event.push(first.unwrap_or_default());
                out.latencies.push(begun.elapsed());
            }
            out
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let s = t.await.unwrap();
        all.latencies.extend(s.latencies);
        all.first_event.extend(s.first_event);
        all.chunks += s.chunks;
    }
    all.wall = started.elapsed();
    all
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The table's head: the two columns compared.
pub fn header(left: &str, right: &str) {
    println!(
        "| {:<52} | {:>12} | {:>12} | {:>14} |",
        "measure", left, right, "ratio / added"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(14),
        "-".repeat(14),
        "-".repeat(16)
    );
}

pub fn row(name: &str, direct: String, proxied: String, cmp: String) {
    println!("| {name:<52} | {direct:>12} | {proxied:>12} | {cmp:>14} |");
}

/// A latency row: the `q` quantile of direct and proxied samples, and the added milliseconds.
pub fn added(name: &str, direct: &[Duration], proxied: &[Duration], q: f64) {
    let (d, p) = (ms(pct(direct, q)), ms(pct(proxied, q)));
    row(
        name,
        format!("{d:.3}"),
        format!("{p:.3}"),
        format!("+{:.3} ms", p - d),
    );
}

pub fn body_small() -> Bytes {
    Bytes::from_static(br#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#)
}
