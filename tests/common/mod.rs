//! Shared helpers of the integration tests: a simulator with a scenario, the OAuth dance as a
//! browser would do it, and the Python interpreter that has the official `anthropic` SDK.
#![allow(dead_code)]

pub mod process;
pub mod redis;
pub mod remote;
pub mod rig;

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
        // A bound for a stuck test, above the slowest answer a test waits for on purpose
        // (a 32 s token endpoint).
        .timeout(Duration::from_secs(60))
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

pub const CLIENT_KEY: &str = "test-client-key";
pub const SECRET: &str = "test-management-secret";

/// A temporary CCS_HOME whose config points every outside URL at the simulator.
pub fn home_for(sim_url: &str) -> (tempfile::TempDir, ccs::config::Paths, ccs::config::Config) {
    home_with_port(sim_url, 8317)
}

/// Like `home_for`, with the daemon's port set (for tests that run the real binary).
pub fn home_with_port(
    sim_url: &str,
    port: u16,
) -> (tempfile::TempDir, ccs::config::Paths, ccs::config::Config) {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = ccs::config::Paths::at(dir.path().join("ccs"));
    let yaml = format!(
        "cliproxy:\n  port: {port}\n  auth:\n    api_key: {CLIENT_KEY}\n    management_secret: {SECRET}\n\
         upstream:\n  api_base: {sim_url}\n\
         oauth:\n  authorize_url: {sim_url}/oauth/authorize\n  token_url: {sim_url}/v1/oauth/token\n  \
         profile_url: {sim_url}/api/oauth/profile\n  usage_url: {sim_url}/api/oauth/usage\n"
    );
    std::fs::create_dir_all(&paths.home).unwrap();
    std::fs::write(paths.config_file(), yaml).unwrap();
    let config = ccs::config::Config::load(&paths).expect("config");
    (dir, paths, config)
}

/// Logs `email` in at the simulator and hands the token to the daemon.
pub async fn add_account(sim_url: &str, daemon_url: &str, email: &str) -> Value {
    let tokens = login(sim_url, email).await;
    let r = http()
        .post(format!("{daemon_url}/v0/management/accounts"))
        .bearer_auth(SECRET)
        .json(&json!({"token_response": tokens}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

pub async fn manage(
    daemon_url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = http()
        .request(method, format!("{daemon_url}/v0/management{path}"))
        .bearer_auth(SECRET);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// One Claude-Code-shaped request through the proxy.
pub async fn ask(daemon_url: &str, session: Option<&str>, stream: bool) -> reqwest::Response {
    try_ask(daemon_url, session, stream)
        .await
        .expect("the proxy answers")
}

/// `ask`, for tests where the daemon may be down: the transport error instead of a panic.
pub async fn try_ask(
    daemon_url: &str,
    session: Option<&str>,
    stream: bool,
) -> reqwest::Result<reqwest::Response> {
    try_ask_as(daemon_url, CLIENT_KEY, session, stream).await
}

/// `try_ask` with another client key.
pub async fn try_ask_as(
    daemon_url: &str,
    key: &str,
    session: Option<&str>,
    stream: bool,
) -> reqwest::Result<reqwest::Response> {
    let mut rb = http()
        .post(format!("{daemon_url}/v1/messages?beta=true"))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "claude-code-20250219")
        .header("x-app", "cli");
    if let Some(s) = session {
        rb = rb.header("x-claude-code-session-id", s);
    }
    rb.json(&json!({"model":"claude-sonnet-4-5","max_tokens":16,"stream":stream,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
}

/// Which account served a (non-streaming) reply, from the simulator's text.
pub async fn served_by(r: reqwest::Response) -> String {
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    // The text block (a thinking block may come first).
    let t = v["content"]
        .as_array()
        .and_then(|c| c.iter().find_map(|b| b["text"].as_str()))
        .unwrap_or("");
    t.strip_prefix("Served by ")
        .and_then(|r| r.split_once(". ").map(|(e, _)| e).or(r.strip_suffix('.')))
        .unwrap_or(t)
        .to_string()
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the real `ccs` binary with `CCS_HOME`; returns (exit code, stdout, stderr).
pub fn ccs(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    ccs_with(home, args, &[])
}

/// `ccs` with more variables in its environment.
pub fn ccs_with(
    home: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(args)
        .env("CCS_HOME", home)
        .envs(env.iter().copied())
        .env("NO_PROXY", "*")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ccs runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The daemon's URL as the CCS_HOME's config.yaml sets it.
pub fn configured_url(paths: &ccs::config::Paths) -> String {
    ccs::daemon::configured_url(&ccs::config::Config::load(paths).expect("config"))
}

/// Everything the daemon of `paths` has logged so far (its daily files, in one string).
pub fn daemon_log(paths: &ccs::config::Paths) -> String {
    std::fs::read_dir(paths.logs_dir())
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("ccs.log"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Stops the daemon of a CCS_HOME when the test ends, however it ends.
pub struct StopOnDrop(pub std::path::PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = ccs(&self.0, &["cliproxy", "stop"]);
    }
}

/// The real Claude Code CLI: `$CCS_TEST_CLAUDE`, else what `.ci/run` installs under
/// `target/test-env/claude`. Panics with the fix when neither is there.
pub fn claude_code() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("CCS_TEST_CLAUDE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-env/claude/node_modules/.bin/claude")])
        .collect();
    candidates.iter().find(|c| c.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "Claude Code is not installed for the tests (looked at {candidates:?}).\n\
             Install it with `.ci/run`, or: npm install --prefix target/test-env/claude @anthropic-ai/claude-code"
        )
    })
}

/// Appends a line to the config of a CCS_HOME.
pub fn config_line(paths: &ccs::config::Paths, line: &str) {
    let mut yaml = std::fs::read_to_string(paths.config_file()).unwrap_or_default();
    yaml.push_str(line);
    yaml.push('\n');
    std::fs::write(paths.config_file(), yaml).unwrap();
}

/// A running `ccs` login (`claude --auth`, `auth create`) with its output on a channel.
pub struct Login {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Login {
    pub fn start(home: &std::path::Path, args: &[&str]) -> Login {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ccs"))
            .args(args)
            .env("CCS_HOME", home)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        Login {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The authorize URL the CLI printed.
    pub fn url(&mut self) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no URL printed; saw {:?}", self.seen));
            self.seen.push(l.clone());
            if let Some(u) = l.trim().strip_prefix("http").map(|r| format!("http{r}")) {
                return u;
            }
        }
    }

    /// Waits for a printed line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no line with {needle:?}; saw {:?}", self.seen));
            self.seen.push(l.clone());
            if l.contains(needle) {
                return l;
            }
        }
    }

    pub fn paste(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        use std::io::Write;
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the CLI to exit; returns its exit code and everything it printed.
    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        while let Ok(l) = self
            .lines
            .recv_timeout(std::time::Duration::from_millis(200))
        {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

/// The person on another device: reads `CODE#STATE` off the authorize page; also returns
/// where the page would send the browser.
pub fn code_from_page(url: &str) -> (String, String) {
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let page = r.text().unwrap();
    let start = page.find("<pre id=\"code\">").unwrap() + 15;
    let end = page[start..].find("</pre>").unwrap();
    (page[start..start + end].to_string(), loc)
}

/// `GET {sim}{path}` of the simulator's control API, as JSON.
pub async fn sim_get(sim: &str, path: &str) -> Value {
    http()
        .get(format!("{sim}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The simulator's counters per account (`GET /sim/counters`).
pub async fn counters(sim: &str) -> Value {
    sim_get(sim, "/sim/counters").await
}

/// Adds a test user to the simulator (`POST /sim/users`), one no grant exists for yet.
pub async fn add_sim_user(sim: &str, email: &str) {
    let r = http()
        .post(format!("{sim}/sim/users"))
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Adds a fault to the simulator (`POST /sim/faults`).
pub async fn fault(sim: &str, spec: Value) {
    let r = http()
        .post(format!("{sim}/sim/faults"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Keeps a real Claude Code offline and away from the user's files: telemetry, non-essential
/// traffic and the auto-updater off, HOME in a temporary folder, no API key of the user's.
pub fn claude_offline<'a>(
    cmd: &'a mut std::process::Command,
    home: &std::path::Path,
) -> &'a mut std::process::Command {
    cmd.env("HOME", home)
        .env("DISABLE_TELEMETRY", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env_remove("ANTHROPIC_API_KEY")
}

/// The daemon's `/metrics` text.
pub async fn metrics_text(daemon_url: &str) -> String {
    http()
        .get(format!("{daemon_url}/metrics"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
