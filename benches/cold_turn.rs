//! What a move costs: the first turn on a new account of a long conversation (about 100k
//! tokens, a prompt-cache breakpoint on its last message) against a warm turn on the account
//! that made its cache, through the daemon and the simulator (whose prompt cache is per
//! organization and whose time to first byte grows with the uncached input:
//! `prefill_us_per_ktok`, specs/sim-scenario.yaml).
//!
//! `cargo bench --bench cold_turn`. Each sample is a new conversation: a first turn on alice
//! (writes her cache), a warm turn on alice (reads it), then alice is paused and the next turn
//! goes to bob (cold). Prints time to first byte (the answer's headers) and the usage figures,
//! medians over the samples, and the cold/warm ratios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ccs::config::{Config, Paths};
use ccs::daemon::DaemonHandle;
use ccs::sim::model::AuthorizeQuery;
use ccs::sim::scenario::{Scenario, User};
use ccs::sim::SimHandle;
use ccs_actors::{SharedClock, SystemClock};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KEY: &str = "bench-client-key";
const SECRET: &str = "bench-management-secret";
const SAMPLES: usize = 7;
/// About 100k tokens of history (4 bytes a token, as the simulator counts).
const HISTORY_BYTES: usize = 400_000;

fn login(sim: &SimHandle, email: &str) -> Value {
    let verifier = "bench-verifier-0123456789-0123456789-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://localhost:54545/callback";
    let q = AuthorizeQuery {
        client_id: Some("bench".into()),
        response_type: Some("code".into()),
        redirect_uri: Some(redirect.into()),
        scope: Some("user:inference".into()),
        code_challenge: Some(challenge),
        code_challenge_method: Some("S256".into()),
        state: Some("s".into()),
        login_hint: Some(email.into()),
        code: Some("true".into()),
    };
    let code = match sim.model.authorize(&q).expect("authorized") {
        ccs::sim::model::Authorized::Approved { code, .. } => code,
        other => panic!("{other:?}"),
    };
    sim.model
        .token(
            &json!({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "client_id": "bench", "code_verifier": verifier, "state": "s"}),
        )
        .result
        .expect("tokens")
}

struct Sample {
    ttfb: Duration,
    uncached: u64,
    cache_read: u64,
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn turn(c: &reqwest::Client, url: &str, session: &str, messages: &[Value]) -> Sample {
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages});
    let started = Instant::now();
    let r = c
        .post(format!("{url}/v1/messages"))
        .bearer_auth(KEY)
        .header("x-claude-code-session-id", session)
        .json(&body)
        .send()
        .await
        .unwrap();
    let ttfb = started.elapsed();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let u = &v["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    Sample {
        ttfb,
        uncached: n("input_tokens") + n("cache_creation_input_tokens"),
        cache_read: n("cache_read_input_tokens"),
    }
}

async fn manage(c: &reqwest::Client, url: &str, path: &str) {
    let r = c
        .post(format!("{url}/v0/management{path}"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
}

fn main() {
    let scenario = Scenario {
        users: ["alice@bench.example", "bob@bench.example"]
            .iter()
            .map(|e| User {
                five_hour: 1_000_000_000,
                seven_day: 1_000_000_000,
                ..User::new(e)
            })
            .collect(),
        ..Scenario::default()
    };
    let sim = SimHandle::start(&scenario, 0, false, 7).unwrap();
    let home = tempfile::tempdir().unwrap();
    let paths = Paths::at(home.path().join("ccs"));
    std::fs::create_dir_all(&paths.home).unwrap();
    let s = sim.url();
    std::fs::write(
        paths.config_file(),
        format!("cliproxy:\n  port: 0\n  auth:\n    api_key: {KEY}\n    management_secret: {SECRET}\nupstream:\n  api_base: {s}\noauth:\n  token_url: {s}/v1/oauth/token\n  profile_url: {s}/api/oauth/profile\n  usage_url: {s}/api/oauth/usage\n"),
    )
    .unwrap();
    let config = Config::load(&paths).unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let daemon = DaemonHandle::start(paths.clone(), config, clock).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = daemon.url.clone();
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for email in ["alice@bench.example", "bob@bench.example"] {
            let r = c
                .post(format!("{url}/v0/management/accounts"))
                .bearer_auth(SECRET)
                .json(&json!({"token_response": login(&sim, email)}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        for i in 0..SAMPLES {
            let session = format!("00000000-0000-4000-8000-{i:012}");
            let history = format!("sample {i}: {}", "lorem ipsum ".repeat(HISTORY_BYTES / 12));
            let mut messages = vec![json!({"role": "user", "content": [
                {"type": "text", "text": history, "cache_control": {"type": "ephemeral"}}
            ]})];
            // Turn 1 writes alice's cache; turn 2 reads it: the warm turn.
            turn(&c, &url, &session, &messages).await;
            messages.push(json!({"role": "assistant", "content": "ok"}));
            messages.push(json!({"role": "user", "content": "go on"}));
            warm.push(turn(&c, &url, &session, &messages).await);
            // The move: alice is paused, bob answers the next turn from a cold cache.
            manage(&c, &url, "/accounts/alice@bench.example/pause").await;
            messages.push(json!({"role": "assistant", "content": "ok"}));
            messages.push(json!({"role": "user", "content": "and on"}));
            cold.push(turn(&c, &url, &session, &messages).await);
            manage(&c, &url, "/accounts/alice@bench.example/resume").await;
        }
    });
    let ms = |v: &[Sample]| median(v.iter().map(|s| s.ttfb.as_secs_f64() * 1e3).collect());
    let unc = |v: &[Sample]| median(v.iter().map(|s| s.uncached).collect());
    let read = |v: &[Sample]| median(v.iter().map(|s| s.cache_read).collect());
    println!(
        "first turn after a move vs a warm turn, {SAMPLES} conversations of ~100k tokens (medians)"
    );
    println!("| turn | time to first byte | input read uncached | input read from cache |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| warm (alice, her cache) | {:.1} ms | {} | {} |",
        ms(&warm),
        unc(&warm),
        read(&warm)
    );
    println!(
        "| cold (bob, after the move) | {:.1} ms | {} | {} |",
        ms(&cold),
        unc(&cold),
        read(&cold)
    );
    println!(
        "| cold / warm | {:.1}× | {:.0}× | |",
        ms(&cold) / ms(&warm),
        unc(&cold) as f64 / unc(&warm).max(1) as f64
    );
    drop(daemon);
}
