//! Load benchmark: a small load generator on reqwest, calling the simulator directly and
//! through the ccs daemon, in the same run. `cargo bench --bench load` (release build). Prints
//! throughput and latency percentiles per concurrency level, direct vs proxied.
//!
//! Two cores are shared by the load generator and the server: the figures are a floor for
//! the server, not its ceiling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ccs::sim::scenario::{Scenario, User};
use ccs::sim::SimHandle;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct Stats {
    requests: usize,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 - 1.0) * p).round() as usize]
    }
}

async fn login(client: &reqwest::Client, base: &str) -> String {
    let verifier = "bench-verifier-0123456789-0123456789-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://localhost:54545/callback";
    let r = client
        .get(format!("{base}/oauth/authorize"))
        .query(&[
            ("client_id", "c"),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "s"),
        ])
        .send()
        .await
        .expect("authorize");
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = loc
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let t: Value = client
        .post(format!("{base}/v1/oauth/token"))
        .json(&json!({"grant_type":"authorization_code","code":code,"state":"s","client_id":"c","redirect_uri":redirect,"code_verifier":verifier}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

async fn run(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    concurrency: usize,
    total: usize,
    body: Arc<Vec<u8>>,
) -> Stats {
    let started = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token, body) = (
            client.clone(),
            url.to_string(),
            token.to_string(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("anthropic-beta", "oauth-2025-04-20")
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .expect("request");
                assert!(r.status().is_success(), "status {}", r.status());
                r.bytes().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Stats {
        requests: latencies.len(),
        wall: started.elapsed(),
        latencies,
    }
}

fn row(name: &str, d: &Stats, p: &Stats) {
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    println!(
        "{:<38} {:>9.0} {:>9.0} {:>6.2}  {:>8.3} {:>8.3} {:>+7.3}  {:>8.3} {:>8.3} {:>+7.3}",
        name,
        d.rps(),
        p.rps(),
        p.rps() / d.rps(),
        ms(d.pct(0.5)),
        ms(p.pct(0.5)),
        ms(p.pct(0.5)) - ms(d.pct(0.5)),
        ms(d.pct(0.99)),
        ms(p.pct(0.99)),
        ms(p.pct(0.99)) - ms(d.pct(0.99)),
    );
}

fn main() {
    let scenario = Scenario {
        users: vec![User {
            five_hour: u64::MAX / 4,
            seven_day: u64::MAX / 4,
            ..User::new("bench@example.com")
        }],
        ..Scenario::default()
    };
    let sim = SimHandle::start(&scenario, 0, false, 1).expect("simulator");
    let base = sim.url();
    let home = tempfile::tempdir().expect("temp dir");
    let paths = ccs::config::Paths::at(home.path());
    let yaml = format!(
        "cliproxy:\n  auth:\n    api_key: bench-key\n    management_secret: bench-secret\nupstream:\n  api_base: {base}\noauth:\n  token_url: {base}/v1/oauth/token\n"
    );
    std::fs::write(paths.config_file(), yaml).unwrap();
    let config = ccs::config::Config::load(&paths).unwrap();
    let daemon = ccs::daemon::DaemonHandle::start(
        paths,
        config,
        std::sync::Arc::new(ccs_actors::SystemClock),
    )
    .expect("daemon");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let token = login(&client, &base).await;
        let tokens = serde_json::json!({"access_token": token, "refresh_token": "sk-ant-ort01-unused", "expires_in": 28800, "account": {"email_address": "bench@example.com"}});
        let r = client
            .post(format!("{}/v0/management/accounts", daemon.url))
            .bearer_auth("bench-secret")
            .json(&serde_json::json!({"token_response": tokens}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let small = Arc::new(br#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#.to_vec());
        let direct = format!("{base}/v1/messages");
        let proxied = format!("{}/v1/messages", daemon.url);
        run(&client, &direct, &token, 4, 400, small.clone()).await; // warm-up
        run(&client, &proxied, "bench-key", 4, 400, small.clone()).await;
        println!(
            "{:<38} {:>9} {:>9} {:>6}  {:>8} {:>8} {:>7}  {:>8} {:>8} {:>7}",
            "small non-streaming requests", "direct/s", "proxy/s", "ratio", "p50 dir", "p50 prx", "added", "p99 dir", "p99 prx", "added"
        );
        for c in [1usize, 16, 64] {
            let total = if c == 1 { 2_000 } else { 8_000 };
            let d = run(&client, &direct, &token, c, total, small.clone()).await;
            let p = run(&client, &proxied, "bench-key", c, total, small.clone()).await;
            row(&format!("concurrency {c}"), &d, &p);
        }
    });
    daemon.stop().expect("daemon stops");
    sim.stop();
}
