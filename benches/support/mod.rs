//! What the load benchmark and the memory soak share: the simulator and the daemon as release
//! processes on loopback, logins at the simulator, accounts handed to the daemon, RSS readings.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod drive;
mod nginx;
mod wrk;
// Not every benchmark drives load (the memory soak has its own loop).
#[allow(unused_imports)]
pub use drive::*;
#[allow(unused_imports)]
pub use nginx::spawn_nginx;
#[allow(unused_imports)]
pub use wrk::wrk;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The ccs binary: `$CCS_BIN` (an older build, to compare), else this build's.
pub fn ccs_bin() -> String {
    std::env::var("CCS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ccs").to_string())
}
pub const KEY: &str = "bench-key";
pub const SECRET: &str = "bench-secret";

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rss_kb(pid: u32) -> u64 {
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
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32, every: Duration) -> PeakRss {
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
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

pub fn spawn_sim(dir: &Path, stream_events: usize) -> (Proc, String) {
    let scenario = dir.join("scenario.yaml");
    std::fs::write(&scenario, format!("stream_events: {stream_events}\nusers:\n  - email: u0@bench.example\n    five_hour: 1000000000\n    seven_day: 1000000000\n")).unwrap();
    let mut child = Command::new(ccs_bin())
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
pub fn spawn_daemon(home: &Path, sim: &str) -> (Proc, String, Duration) {
    spawn_daemon_logging(home, sim, "warn")
}

/// `spawn_daemon` with `CCS_LOG` set to `log`.
pub fn spawn_daemon_logging(home: &Path, sim: &str, log: &str) -> (Proc, String, Duration) {
    spawn_daemon_with(home, sim, log, None, "")
}

/// `spawn_daemon` with more config.yaml lines (whole top-level sections).
pub fn spawn_daemon_configured(home: &Path, sim: &str, extra: &str) -> (Proc, String, Duration) {
    spawn_daemon_with(home, sim, "warn", None, extra)
}

/// A daemon serving HTTPS with a new self-signed certificate for 127.0.0.1; returns it, its
/// URL and the certificate (PEM) a client trusts.
pub fn spawn_daemon_tls(home: &Path, sim: &str) -> (Proc, String, String) {
    std::fs::create_dir_all(home.join("tls")).unwrap();
    let made = ccs::tls::self_signed(&["127.0.0.1".into()]).unwrap();
    std::fs::write(home.join("tls/cert.pem"), &made.cert_pem).unwrap();
    std::fs::write(home.join("tls/key.pem"), &made.key_pem).unwrap();
    let (proc_, url, _) = spawn_daemon_with(home, sim, "warn", Some(made.fingerprint), "");
    (proc_, url, made.cert_pem)
}

/// Starts `ccs daemon run` (over TLS when `pin` is the fingerprint of `tls/cert.pem`) and
/// waits for a 200 on /healthz.
fn spawn_daemon_with(
    home: &Path,
    sim: &str,
    log: &str,
    pin: Option<ccs::tls::Fingerprint>,
    extra: &str,
) -> (Proc, String, Duration) {
    let port = free_port();
    std::fs::create_dir_all(home).unwrap();
    let tls = if pin.is_some() {
        "\n  tls: {cert: tls/cert.pem, key: tls/key.pem}"
    } else {
        ""
    };
    std::fs::write(
        home.join("config.yaml"),
        format!("cliproxy:\n  port: {port}{tls}\n  auth:\n    api_key: {KEY}\n    management_secret: {SECRET}\nupstream:\n  api_base: {sim}\noauth:\n  token_url: {sim}/v1/oauth/token\n  usage_url: {sim}/api/oauth/usage\n{extra}"),
    )
    .unwrap();
    let scheme = if pin.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{port}");
    let started = Instant::now();
    let child = Command::new(ccs_bin())
        .args(["daemon", "run"])
        .env("CCS_HOME", home)
        .env("CCS_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ccs daemon run");
    let seen = Arc::default();
    loop {
        let tls = pin
            .map(|p| ccs::tls::client_config(&ccs::tls::Trust::Pin(p), Arc::clone(&seen)).unwrap());
        if ccs::endpoint::get(&format!("{url}/healthz"), tls, None).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "daemon never became ready"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    (Proc(child), url, started.elapsed())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// Logs `email` in at the simulator (adding the user first); returns the token response.
pub async fn login(c: &reqwest::Client, sim: &str, email: &str) -> Value {
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

pub async fn add_accounts(
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
