//! The load benchmark: the simulator and the daemon as release processes on loopback, and a
//! load generator written on reqwest calling the simulator directly and through the daemon in
//! the same run. `cargo bench --bench load`; `LOAD_QUICK=1` for a short run.
//!
//! Prints one table: the direct figure, the proxied figure, and their ratio or the added
//! milliseconds. Two cores are shared by the load generator, the daemon and the simulator, so
//! throughput figures are a floor for each, not a ceiling.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CCS: &str = env!("CARGO_BIN_EXE_ccs");
const KEY: &str = "bench-key";
const SECRET: &str = "bench-secret";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's RSS on a thread until stopped; keeps the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    fn start(pid: u32, every: Duration) -> PeakRss {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(every);
            }
        });
        PeakRss { peak, stop, thread }
    }

    /// Stops sampling; the peak in KiB.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

fn spawn_sim(dir: &Path, stream_events: usize) -> (Proc, String) {
    let scenario = dir.join("scenario.yaml");
    std::fs::write(&scenario, format!("stream_events: {stream_events}\nusers:\n  - email: u0@bench.example\n    five_hour: 1000000000\n    seven_day: 1000000000\n")).unwrap();
    let mut child = Command::new(CCS)
        .args([
            "sim",
            "serve",
            "--port",
            "0",
            "--json",
            "--seed",
            "1",
            "--scenario",
        ])
        .arg(&scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ccs sim serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).expect("sim prints its URL as JSON");
    (Proc(child), v["url"].as_str().unwrap().to_string())
}

/// Starts `ccs daemon run`; returns it, its URL and the time from spawn to a 200 on /healthz.
fn spawn_daemon(home: &Path, sim: &str) -> (Proc, String, Duration) {
    let port = free_port();
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(
        home.join("config.yaml"),
        format!("cliproxy:\n  port: {port}\n  auth:\n    api_key: {KEY}\n    management_secret: {SECRET}\nupstream:\n  api_base: {sim}\noauth:\n  token_url: {sim}/v1/oauth/token\n  usage_url: {sim}/api/oauth/usage\n"),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let child = Command::new(CCS)
        .args(["daemon", "run"])
        .env("CCS_HOME", home)
        .env("CCS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ccs daemon run");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "daemon never became ready"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    (Proc(child), url, started.elapsed())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// Logs `email` in at the simulator (adding the user first); returns the token response.
async fn login(c: &reqwest::Client, sim: &str, email: &str) -> Value {
    c.post(format!("{sim}/sim/users"))
        .json(
            &json!({"email": email, "five_hour": 1_000_000_000u64, "seven_day": 1_000_000_000u64}),
        )
        .send()
        .await
        .unwrap();
    let verifier = "bench-verifier-0123456789-0123456789-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://localhost:1/callback";
    let r = c
        .get(format!("{sim}/oauth/authorize"))
        .query(&[
            ("client_id", "c"),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "s"),
            ("login_hint", email),
        ])
        .send()
        .await
        .unwrap();
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = loc
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    c.post(format!("{sim}/v1/oauth/token"))
        .json(&json!({"grant_type":"authorization_code","code":code,"state":"s","client_id":"c","redirect_uri":redirect,"code_verifier":verifier}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn add_accounts(
    c: &reqwest::Client,
    sim: &str,
    daemon: &str,
    from: usize,
    to: usize,
) -> String {
    let mut first = String::new();
    for i in from..to {
        let t = login(c, sim, &format!("u{i}@bench.example")).await;
        if first.is_empty() {
            first = t["access_token"].as_str().unwrap().to_string();
        }
        let r = c
            .post(format!("{daemon}/v0/management/accounts"))
            .bearer_auth(SECRET)
            .json(&json!({"token_response": t}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    first
}

#[derive(Default)]
struct Stats {
    wall: Duration,
    latencies: Vec<Duration>,
    first_event: Vec<Duration>,
    /// Largest gap between two consecutive body chunks, per request (events must not batch).
    chunks: u64,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut l = v.to_vec();
    l.sort();
    l.get(((l.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

impl Stats {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

#[derive(Clone)]
struct Target {
    url: String,
    token: String,
    beta: bool,
}

/// `total` requests over `concurrency` connections; each request's session id is drawn from
/// `sessions` (0: none).
async fn run(
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(name: &str, direct: String, proxied: String, cmp: String) {
    println!("| {name:<52} | {direct:>12} | {proxied:>12} | {cmp:>14} |");
}

/// A latency row: the `q` quantile of direct and proxied samples, and the added milliseconds.
fn added(name: &str, direct: &[Duration], proxied: &[Duration], q: f64) {
    let (d, p) = (ms(pct(direct, q)), ms(pct(proxied, q)));
    row(
        name,
        format!("{d:.3}"),
        format!("{p:.3}"),
        format!("+{:.3} ms", p - d),
    );
}

fn body_small() -> Bytes {
    Bytes::from_static(br#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#)
}

/// An 80 KB, Claude-Code-shaped streaming request.
fn body_claude_code() -> Bytes {
    let system = "You are Claude Code. ".repeat(4000);
    Bytes::from(
        serde_json::to_vec(&json!({
            "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": &system[..78_000]}],
            "messages": [{"role": "user", "content": "explain this code"}],
            "metadata": {"user_id": "{\"device_id\":\"ab\",\"account_uuid\":\"\",\"session_id\":\"x\"}"}
        }))
        .unwrap(),
    )
}

fn body_10mb() -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({"model": "claude-sonnet-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": "x".repeat(10 << 20)}]})).unwrap())
}

fn main() {
    let quick = std::env::var_os("LOAD_QUICK").is_some();
    let scale = |n: usize| if quick { (n / 10).max(50) } else { n };
    let tmp = tempfile::tempdir().unwrap();
    let (_sim, sim) = spawn_sim(tmp.path(), 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| {:<52} | {:>12} | {:>12} | {:>14} |",
        "measure", "direct", "proxied", "ratio / added"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(14),
        "-".repeat(14),
        "-".repeat(16)
    );

    let (daemon_proc, daemon, ready) = spawn_daemon(&tmp.path().join("home1"), &sim);
    let pid = daemon_proc.0.id();
    row(
        "daemon start to ready (empty store), ms",
        "-".into(),
        format!("{:.1}", ms(ready)),
        "target ≤ 150".into(),
    );
    rt.block_on(async {
        let c = client();
        let access = add_accounts(&c, &sim, &daemon, 0, 1).await;
        let direct = Target {
            url: sim.clone(),
            token: access,
            beta: true,
        };
        let proxied = Target {
            url: daemon.clone(),
            token: KEY.into(),
            beta: false,
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        row(
            "daemon RSS idle, 1 account, MB",
            "-".into(),
            format!("{:.1}", rss_kb(pid) as f64 / 1024.0),
            "target ≤ 20".into(),
        );

        // Status end to end: the real CLI, as a person runs it.
        let mut times = Vec::new();
        for _ in 0..scale(30) {
            let t = Instant::now();
            let out = Command::new(CCS)
                .args(["cliproxy", "status"])
                .env("CCS_HOME", tmp.path().join("home1"))
                .output()
                .unwrap();
            assert!(out.status.success());
            times.push(t.elapsed());
        }
        row(
            "`ccs cliproxy status` end to end, median ms",
            "-".into(),
            format!("{:.1}", ms(pct(&times, 0.5))),
            "target ≤ 20".into(),
        );

        run(&c, &direct, 4, 400, body_small(), 0).await;
        run(&c, &proxied, 4, 400, body_small(), 0).await;
        for conc in [1usize, 16, 64] {
            let total = scale(if conc == 1 { 2_000 } else { 8_000 });
            let d = run(&c, &direct, conc, total, body_small(), 0).await;
            let sampler = PeakRss::start(pid, Duration::from_millis(20));
            let p = run(&c, &proxied, conc, total, body_small(), 1_000).await;
            let peak_kb = sampler.stop();
            row(
                &format!("small non-streaming, c={conc}: requests/s"),
                format!("{:.0}", d.rps()),
                format!("{:.0}", p.rps()),
                format!("{:.2}×", p.rps() / d.rps()),
            );
            added(
                &format!("small non-streaming, c={conc}: p50 ms"),
                &d.latencies,
                &p.latencies,
                0.5,
            );
            added(
                &format!("small non-streaming, c={conc}: p99 ms"),
                &d.latencies,
                &p.latencies,
                0.99,
            );
            if conc == 64 {
                row(
                    "daemon RSS peak under load (c=64), 1 account, MB",
                    "-".into(),
                    format!("{:.1}", peak_kb as f64 / 1024.0),
                    "-".into(),
                );
            }
        }
        for conc in [1usize, 16] {
            let total = scale(if conc == 1 { 300 } else { 1_600 });
            let d = run(&c, &direct, conc, total, body_claude_code(), 0).await;
            let p = run(&c, &proxied, conc, total, body_claude_code(), 100).await;
            added(
                &format!("80 KB body, SSE 50 events, c={conc}: first event p50 ms"),
                &d.first_event,
                &p.first_event,
                0.5,
            );
            added(
                &format!("80 KB body, SSE 50 events, c={conc}: total p50 ms"),
                &d.latencies,
                &p.latencies,
                0.5,
            );
            row(
                &format!("80 KB body, SSE 50 events, c={conc}: chunks per response"),
                format!("{:.1}", d.chunks as f64 / total as f64),
                format!("{:.1}", p.chunks as f64 / total as f64),
                "-".into(),
            );
        }
        let base_rss = rss_kb(pid);
        let sampler = PeakRss::start(pid, Duration::from_millis(5));
        let total = scale(40).max(8);
        let d = run(&c, &direct, 4, total, body_10mb(), 0).await;
        let p = run(&c, &proxied, 4, total, body_10mb(), 0).await;
        let peak_kb = sampler.stop();
        row(
            "10 MB body, c=4: p50 ms",
            format!("{:.1}", ms(pct(&d.latencies, 0.5))),
            format!("{:.1}", ms(pct(&p.latencies, 0.5))),
            format!(
                "+{:.1} ms",
                ms(pct(&p.latencies, 0.5)) - ms(pct(&d.latencies, 0.5))
            ),
        );
        row(
            "10 MB body, c=4: daemon RSS growth over idle, MB",
            "-".into(),
            format!("{:.1}", (peak_kb.saturating_sub(base_rss)) as f64 / 1024.0),
            "4 in flight".into(),
        );
    });
    drop(daemon_proc);

    for n in [100usize, 1000] {
        let (proc_n, daemon_n, _) = spawn_daemon(&tmp.path().join(format!("home{n}")), &sim);
        let pid = proc_n.0.id();
        rt.block_on(async {
            let c = client();
            add_accounts(&c, &sim, &daemon_n, 1_000 * n, 1_000 * n + n).await;
            let proxied = Target {
                url: daemon_n.clone(),
                token: KEY.into(),
                beta: false,
            };
            if n == 1000 {
                // 10,000 bound sessions.
                run(&c, &proxied, 64, 10_000, body_small(), 10_000).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let label = if n == 1000 {
                format!("daemon RSS idle, {n} accounts, 10,000 sessions, MB")
            } else {
                format!("daemon RSS idle, {n} accounts, MB")
            };
            row(
                &label,
                "-".into(),
                format!("{:.1}", rss_kb(pid) as f64 / 1024.0),
                if n == 1000 {
                    "target ≤ 60".into()
                } else {
                    "-".into()
                },
            );
        });
    }
}
