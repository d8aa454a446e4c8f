//! Named client keys, as a team shares one daemon: keys made and revoked with the CLI, every
//! request attributed to its key's name in the live feed, usage and metrics, a revoked key
//! refused on the very next request, made keys kept (hashed) across a restart.

mod common;

use common::rig::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const A: &str = "alice@example.com";

/// One request through the proxy with `key`; its status.
async fn ask_with(url: &str, key: &str) -> u16 {
    try_ask_as(url, key, None, false)
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn cli(rig: &Rig, args: &[&str]) -> (i32, String, String) {
    let home = rig.paths.home.clone();
    tokio::task::block_in_place(|| ccs(&home, args))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_key_is_attributed_everywhere_and_refused_once_revoked() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    point_cli_at_daemon(&rig);

    let (code, out, err) = cli(&rig, &["cliproxy", "key", "add", "ann", "--json"]);
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let key = made["key"].as_str().unwrap().to_string();
    assert_eq!(made["name"], "ann");
    let (code, _, err) = cli(&rig, &["cliproxy", "key", "add", "ann"]);
    assert_ne!(code, 0);
    assert!(err.contains("exists already"), "{err}");

    assert_eq!(ask_with(&url, &key).await, 200);
    assert_eq!(ask_with(&url, CLIENT_KEY).await, 200);

    // Usage, by client key.
    let mut by_client = Value::Null;
    for _ in 0..400 {
        let (_, u) = manage(&url, Method::GET, "/usage?span=24h", None).await;
        if u["total"]["requests"] == 2 {
            by_client = u["by_client"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let names: Vec<&str> = by_client
        .as_array()
        .expect("both answers counted")
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"ann") && names.contains(&"default"),
        "{by_client}"
    );

    // Metrics, by client key.
    let text = metrics_text(&url).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("ccs_requests_total{") && l.contains("client=\"ann\""))
        .unwrap_or_else(|| panic!("no request of ann in:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");

    // Listed without the key.
    let (code, out, _) = cli(&rig, &["cliproxy", "key", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("ann") && out.contains("default"), "{out}");
    assert!(!out.contains(&key) && !out.contains(CLIENT_KEY), "{out}");
    let (code, _, err) = cli(&rig, &["cliproxy", "key", "revoke", "default"]);
    assert_ne!(code, 0, "config.yaml's key is changed there");
    assert!(err.contains("config.yaml"), "{err}");

    // Revoked: refused on the next request, without a restart.
    let (code, out, err) = cli(&rig, &["cliproxy", "key", "revoke", "ann"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ask_with(&url, &key).await, 401);
    assert_eq!(
        ask_with(&url, CLIENT_KEY).await,
        200,
        "the others still work"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn made_keys_survive_a_restart_as_digests() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let (s, made) = manage(&url, Method::POST, "/clients", Some(json!({"name": "ci"}))).await;
    assert_eq!(s, 200, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    // Each refusal with the status of its cause: a bad name, a name taken, no such key.
    let (s, bad) = manage(&url, Method::POST, "/clients", Some(json!({"name": "a b"}))).await;
    assert_eq!(s, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("letters"));
    let (s, taken) = manage(&url, Method::POST, "/clients", Some(json!({"name": "CI"}))).await;
    assert_eq!(s, 409, "{taken}");
    assert!(taken["error"].as_str().unwrap().contains("exists already"));
    let (s, missing) = manage(&url, Method::DELETE, "/clients/nobody", None).await;
    assert_eq!(s, 404, "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("no key named"));

    let again = rig.restarted(|paths| {
        // The store holds the digest, never the key.
        let on_disk = walk(&paths.store_dir());
        assert!(!on_disk.is_empty());
        for f in &on_disk {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{} holds the key",
                f.display()
            );
        }
    });
    let url = again.daemon.url.clone();
    assert_eq!(
        ask_with(&url, &key).await,
        200,
        "the key works after a restart"
    );
    let (_, list) = manage(&url, Method::GET, "/clients", None).await;
    let ci = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(ci["from_config"], false);
    assert!(ci["created_at"].is_string());

    // A damaged record of the made keys is said, not silently forgotten, and its keys are
    // refused.
    let damaged = again.restarted(|paths| {
        let clock: ccs_actors::SharedClock = std::sync::Arc::new(ccs_actors::SystemClock);
        let store = ccs::store::SledStore::open(paths, clock).unwrap();
        store.set_client_keys(b"{not json").unwrap();
    });
    let url = damaged.daemon.url.clone();
    let (_, status) = manage(&url, Method::GET, "/status", None).await;
    let notes = status["store_notes"].to_string();
    assert!(
        notes.contains("client keys made with `ccs cliproxy key add` cannot be read"),
        "{status}"
    );
    assert_eq!(ask_with(&url, &key).await, 401, "its keys are refused");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A streamed request with `key`, its response unread.
async fn stream_with(url: &str, key: &str) -> reqwest::Response {
    try_ask_as(url, key, None, true).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keys_own_limits_answer_429s_that_say_they_are_not_anthropics() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let (s, made) = manage(
        &url,
        Method::POST,
        "/clients",
        Some(json!({"name": "ci", "requests_per_minute": 2})),
    )
    .await;
    assert_eq!(s, 200, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    assert_eq!(ask_with(&url, &key).await, 200);
    assert_eq!(ask_with(&url, &key).await, 200);
    let over = stream_with(&url, &key).await;
    assert_eq!(over.status(), 429);
    assert!(over.headers().contains_key("retry-after"));
    let body: Value = over.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"ci\"")
            && msg.contains("2 requests a minute")
            && msg.contains("not an Anthropic limit"),
        "{msg}"
    );
    assert_eq!(
        ask_with(&url, CLIENT_KEY).await,
        200,
        "other keys are not limited"
    );
    advance(&rig, 60);
    assert_eq!(ask_with(&url, &key).await, 200, "a new minute");

    // At once: a stream holds its share until its last event.
    let (_, made) = manage(
        &url,
        Method::POST,
        "/clients",
        Some(json!({"name": "solo", "concurrent": 1})),
    )
    .await;
    let solo = made["key"].as_str().unwrap().to_string();
    fault(
        &rig.sim.url(),
        json!({"kind": "event_latency", "ms": 100, "count": 1}),
    )
    .await;
    let first = stream_with(&url, &solo).await;
    assert_eq!(first.status(), 200);
    let second = stream_with(&url, &solo).await;
    assert_eq!(second.status(), 429, "one at once");
    let msg = second.text().await.unwrap();
    assert!(msg.contains("1 requests at once"), "{msg}");
    let (_, list) = manage(&url, Method::GET, "/clients", None).await;
    let entry = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "solo")
        .unwrap()
        .clone();
    assert_eq!(entry["in_flight"], 1, "{entry}");
    assert_eq!(entry["concurrent"], 1);
    let text = first.text().await.unwrap();
    assert!(text.contains("message_stop"));
    // The share comes back when the relay ends, just after the last byte.
    let mut ok = false;
    for _ in 0..200 {
        if ask_with(&url, &solo).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(ok, "the finished stream gave its share back");
    let (s, zero) = manage(
        &url,
        Method::POST,
        "/clients",
        Some(json!({"name": "none", "concurrent": 0})),
    )
    .await;
    assert_eq!(s, 400, "{zero}");
}

fn ccs_env(
    home: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ccs"));
    cmd.args(args)
        .env("CCS_HOME", home)
        .env("NO_PROXY", "*")
        .env_remove(ccs::keys::SECRET_ENV)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_management_secret_kept_as_an_argon2_hash_lets_in_the_secret_only() {
    // What `ccs cliproxy hash-secret` prints, for a secret long enough.
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| {
        ccs_env(dir.path(), &["cliproxy", "hash-secret"], &[], "short\n")
    });
    assert_ne!(code, 0);
    assert!(err.contains("at least 24"), "{err}");
    let long = "a-long-enough-management-secret-123";
    let (code, out, _) = tokio::task::block_in_place(|| {
        ccs_env(
            dir.path(),
            &["cliproxy", "hash-secret"],
            &[],
            &format!("{long}\n"),
        )
    });
    assert_eq!(code, 0);
    assert!(
        out.contains("management_secret_argon2: '$argon2id$") && !out.contains(long),
        "{out}"
    );

    let phc = ccs::keys::hash_secret(SECRET).unwrap();
    let hashed = phc.clone();
    let rig = rig_with(&[(A, 100)], move |c| {
        c.cliproxy.auth.management_secret = None;
        c.cliproxy.auth.management_secret_argon2 = Some(hashed);
    })
    .await;
    let url = rig.daemon.url.clone();
    // The rig logged the account in with the secret itself: the hash let it in.
    let (s, _) = manage(&url, Method::GET, "/status", None).await;
    assert_eq!(s, 200);
    let wrong = http()
        .get(format!("{url}/v0/management/status"))
        .bearer_auth(&phc)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "the hash itself is no secret");

    // The CLI, with config.yaml holding the hash only: the secret comes from the environment.
    point_cli_at_daemon(&rig);
    let yaml = std::fs::read_to_string(rig.paths.config_file()).unwrap();
    std::fs::write(
        rig.paths.config_file(),
        yaml.replace(
            &format!("management_secret: {SECRET}"),
            &format!("management_secret_argon2: '{phc}'"),
        ),
    )
    .unwrap();
    let home = rig.paths.home.clone();
    let (code, _, err) =
        tokio::task::block_in_place(|| ccs_env(&home, &["cliproxy", "status"], &[], ""));
    assert_ne!(code, 0);
    assert!(err.contains("CCS_MANAGEMENT_KEY"), "{err}");
    let (code, out, err) = tokio::task::block_in_place(|| {
        ccs_env(
            &home,
            &["cliproxy", "status"],
            &[("CCS_MANAGEMENT_KEY", SECRET)],
            "",
        )
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running at"), "{out}");
    let (code, out, _) =
        tokio::task::block_in_place(|| ccs_env(&home, &["config", "show", "--json"], &[], ""));
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(
        shown["management_secret"]
            .as_str()
            .unwrap()
            .contains("argon2"),
        "{shown}"
    );
    assert!(!out.contains(SECRET) && !out.contains("$argon2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_read_in_any_case() {
    let rig = rig(&[(A, 100)]).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = http()
            .post(format!("{}/v1/messages", rig.daemon.url))
            .header("authorization", format!("{scheme} {CLIENT_KEY}"))
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
        let status = http()
            .get(format!("{}/v0/management/status", rig.daemon.url))
            .header("authorization", format!("{scheme} {SECRET}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "management with {scheme}");
    }
}

/// Issue 32 item 6: revoking a key ends its streams in flight, not only its next request; the
/// stream of another key runs on.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_key_ends_its_running_stream() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let (s, made) = manage(
        &url,
        Method::POST,
        "/clients",
        Some(json!({"name": "temp"})),
    )
    .await;
    assert_eq!(s, 200, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    // Events 600 ms apart: a stream of several seconds.
    fault(
        &rig.sim.url(),
        json!({"kind": "event_latency", "ms": 600, "count": 2}),
    )
    .await;
    let theirs = tokio::spawn(stream_with(&url, &key).await.text());
    let ours = tokio::spawn(stream_with(&url, CLIENT_KEY).await.text());
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (s, v) = manage(&url, Method::DELETE, "/clients/temp", None).await;
    assert_eq!(s, 200, "{v}");
    let cut = theirs.await.unwrap().unwrap();
    assert!(
        cut.contains("event: error") && cut.contains("revoked"),
        "{cut}"
    );
    assert!(!cut.contains("message_stop"), "{cut}");
    let whole = ours.await.unwrap().unwrap();
    assert!(
        whole.contains("message_stop"),
        "the other key's stream ran to its end: {whole}"
    );
}

/// Issue 32 item 10: a key limited to pools draws from those only, whichever way a request
/// names its pool; `key list` says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_limited_to_a_pool_is_refused_every_other() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    point_cli_at_daemon(&rig);
    let (s, v) = manage(
        &url,
        Method::PUT,
        "/pools/work",
        Some(json!({"accounts": [A]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (code, out, err) = cli(
        &rig,
        &["cliproxy", "key", "add", "ci", "--pool", "work", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let key = serde_json::from_str::<Value>(&out).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let on = |pool: Option<&'static str>, path: &'static str| {
        let (url, key) = (url.clone(), key.clone());
        async move {
            let mut rb = http()
                .post(format!("{url}{path}"))
                .bearer_auth(&key)
                .header("anthropic-version", "2023-06-01");
            if let Some(p) = pool {
                rb = rb.header("x-ccs-pool", p);
            }
            let r = rb
                .json(&json!({"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(on(Some("work"), "/v1/messages").await.0, 200);
    assert_eq!(on(None, "/pool/work/v1/messages").await.0, 200);
    for (pool, path) in [
        (None, "/v1/messages"),
        (Some("claude"), "/v1/messages"),
        (None, "/pool/claude/v1/messages"),
    ] {
        let (s, body) = on(pool, path).await;
        assert_eq!(s, 403, "{pool:?} {path}: {body}");
        assert!(body.contains("may draw from pool work only"), "{body}");
    }
    assert_eq!(
        ask_with(&url, CLIENT_KEY).await,
        200,
        "an open key goes anywhere"
    );
    let (code, out, _) = cli(&rig, &["cliproxy", "key", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("pools work"), "{out}");
}
