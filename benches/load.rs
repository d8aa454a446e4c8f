//! Load benchmark: a small load generator on reqwest against the simulator on loopback.
//! `cargo bench --bench load` (release build). Prints throughput and latency percentiles per
//! concurrency level. The proxy rows join this table when the daemon lands.
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
        let small = Arc::new(br#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#.to_vec());
        let url = format!("{base}/v1/messages");
        run(&client, &url, &token, 4, 400, small.clone()).await; // warm-up
        println!("{:<44} {:>10} {:>10} {:>10}", "simulator, direct", "req/s", "p50 ms", "p99 ms");
        for c in [1usize, 16, 64] {
            let total = if c == 1 { 2_000 } else { 10_000 };
            let s = run(&client, &url, &token, c, total, small.clone()).await;
            println!(
                "{:<44} {:>10.0} {:>10.3} {:>10.3}",
                format!("small non-streaming, concurrency {c}"),
                s.rps(),
                s.pct(0.5).as_secs_f64() * 1e3,
                s.pct(0.99).as_secs_f64() * 1e3
            );
        }
    });
    sim.stop();
}
