//! Shared helpers of the integration tests: a simulator with a scenario, the OAuth dance as a
//! browser would do it, and the Python interpreter that has the official `anthropic` SDK.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ccs::sim::scenario::{Scenario, User};
use ccs::sim::SimHandle;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
pub const REDIRECT: &str = "http://localhost:54545/callback";
pub const BETA: &str = "oauth-2025-04-20";

pub fn scenario(users: &[(&str, u64)]) -> Scenario {
    Scenario {
        users: users
            .iter()
            .map(|(e, budget)| User {
                five_hour: *budget,
                ..User::new(e)
            })
            .collect(),
        stream_events: 4,
        ..Scenario::default()
    }
}

pub fn sim(s: &Scenario, manual_clock: bool) -> SimHandle {
    SimHandle::start(s, 0, manual_clock, 42).expect("simulator starts")
}

/// A client that never follows redirects and never uses a proxy.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce(verifier: &str) -> Pkce {
    Pkce {
        verifier: verifier.to_string(),
        challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
    }
}

pub fn authorize_url(base: &str, p: &Pkce, state: &str, hint: Option<&str>) -> String {
    let mut u = url::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("code", "true")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "user:profile user:inference")
        .append_pair("code_challenge", &p.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", state);
    if let Some(h) = hint {
        u.query_pairs_mut().append_pair("login_hint", h);
    }
    u.to_string()
}

/// Plays the browser: follows nothing, reads the code from the redirect.
pub async fn get_code(base: &str, p: &Pkce, state: &str, hint: Option<&str>) -> String {
    let r = http()
        .get(authorize_url(base, p, state, hint))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "authorize should redirect");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let u = url::Url::parse(&loc).unwrap();
    u.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in the redirect")
}

pub async fn token_call(base: &str, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{base}/v1/oauth/token"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The whole code flow; returns the token response.
pub async fn login(base: &str, email: &str) -> Value {
    let p = pkce(&format!(
        "verifier-{email}-0123456789-0123456789-0123456789"
    ));
    let code = get_code(base, &p, "st-1", Some(email)).await;
    let (status, body) = token_call(
        base,
        json!({"grant_type":"authorization_code","code":code,"state":"st-1","client_id":CLIENT_ID,"redirect_uri":REDIRECT,"code_verifier":p.verifier}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A simulator with one logged-in account's tokens.
pub struct Sim {
    pub sim: SimHandle,
    pub tokens: Value,
}

pub fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_string()
}

/// The Python interpreter with the official `anthropic` SDK: `$CCS_TEST_PYTHON`, else the venv
/// `.ci/run` makes under `target/test-env/venv`. Panics with the fix when neither has it.
pub fn python() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("CCS_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-env/venv/bin/python")])
        .collect();
    for c in &candidates {
        let ok = std::process::Command::new(c)
            .args(["-c", "import anthropic"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return c.clone();
        }
    }
    panic!(
        "no Python with the `anthropic` SDK (looked at {candidates:?}).\n\
         Install the test clients with `.ci/run`, or: python3 -m venv target/test-env/venv && \
         target/test-env/venv/bin/pip install anthropic"
    );
}

/// Runs `tests/python/<script>` with args; returns its parsed JSON output.
pub fn run_python(script: &str, args: &[&str]) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = std::process::Command::new(python())
        .arg(&path)
        .args(args)
        .env("NO_PROXY", "*")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}
