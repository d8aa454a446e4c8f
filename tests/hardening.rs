//! The daemon under a fault campaign (issue 14): a silent or broken upstream, clients that never
//! finish their bodies, pages that rebind their name to 127.0.0.1, guessers that fail on
//! purpose. Nothing may hang, only the owner gets in, memory stays bounded. Each test starts a
//! simulator and a daemon on 127.0.0.1 (port 0) with a temporary CCS_HOME.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ccs::config::{Size, Span};
use common::rig::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn secs(n: u64) -> Span {
    Span(Duration::from_secs(n))
}

/// The events of an SSE text, each checked to be whole: an `event:` line and a `data:` line
/// whose JSON parses. Panics naming the first broken one.
fn whole_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data =
                        Some(serde_json::from_str::<Value>(d).unwrap_or_else(|err| {
                            panic!("a broken event ({err}): {e:?}\nin {text}")
                        }));
                } else {
                    panic!("a line that belongs to no event: {line:?}\nin {text}");
                }
            }
            (
                name.unwrap_or_else(|| panic!("an event without a name: {e:?}")),
                data.unwrap_or_else(|| panic!("an event without data: {e:?}")),
            )
        })
        .collect()
}

/// Sends raw bytes on a new connection and reads until the server closes it or `wait` passes;
/// returns what came back.
fn raw(url: &str, request: &[u8], wait: Duration) -> String {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no answer and no close within {wait:?} ({e}); got so far: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn host_of(url: &str) -> &str {
    url.strip_prefix("http://").unwrap()
}

// ---- it must never hang ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_moves_the_request_to_the_next_account() {
    let r = rig_with(&[("a@example.com", 10), ("b@example.com", 10)], |c| {
        c.upstream.header_timeout = secs(1);
    })
    .await;
    // Account a's upstream accepts and never answers (a black hole).
    fault(
        &r.sim.url(),
        json!({"kind": "latency", "ms": 600_000, "account": "a@example.com", "count": 1}),
    )
    .await;
    let resp = ask(&r.daemon.url, Some("s"), true).await;
    assert_eq!(resp.status(), 200);
    let events = whole_events(&resp.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert_eq!(
        counters(&r.sim.url()).await["b@example.com"]["messages_ok"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_account_is_silent_the_client_hears_a_504_within_the_bound() {
    let r = rig_with(&[("a@example.com", 10), ("b@example.com", 10)], |c| {
        c.upstream.header_timeout_whole = secs(2);
    })
    .await;
    fault(&r.sim.url(), json!({"kind": "latency", "ms": 600_000})).await;
    // Non-streaming: a's wait uses the whole bound, so b is not even tried.
    let resp = ask(&r.daemon.url, Some("s"), false).await;
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("a@example.com (no response headers in time)")
            && msg.contains("b@example.com (no response headers in time)"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gone_silent_ends_with_an_error_event() {
    let r = rig_with(&[("a@example.com", 10)], |c| {
        c.upstream.idle_timeout = secs(1);
    })
    .await;
    fault(
        &r.sim.url(),
        json!({"kind": "event_latency", "ms": 5_000, "count": 1}),
    )
    .await;
    let resp = ask(&r.daemon.url, Some("s"), true).await;
    assert_eq!(resp.status(), 200);
    let events = whole_events(&resp.text().await.unwrap());
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert!(
        data["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream.idle_timeout"),
        "{data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_an_event_ends_with_an_error_event_on_a_boundary() {
    let r = rig(&[("a@example.com", 10)]).await;
    fault(
        &r.sim.url(),
        json!({"kind": "close_mid_event", "after_events": 3, "count": 1}),
    )
    .await;
    let resp = ask(&r.daemon.url, Some("s"), true).await;
    assert_eq!(resp.status(), 200);
    let events = whole_events(&resp.text().await.unwrap_or_default());
    assert_eq!(
        events.len(),
        4,
        "three whole events and the error: {events:?}"
    );
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events[3].0, "error");
    assert_eq!(events[3].1["error"]["type"], "api_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_daemon_mid_stream_ends_the_stream_with_an_error_event() {
    let r = rig_with(&[("a@example.com", 10)], |c| {
        c.cliproxy.stop_grace = secs(2);
    })
    .await;
    // Ten events 800 ms apart: the stream outlives the grace.
    fault(
        &r.sim.url(),
        json!({"kind": "event_latency", "ms": 800, "count": 1}),
    )
    .await;
    let url = r.daemon.url.clone();
    let streaming = tokio::spawn(async move {
        let resp = ask(&url, Some("s"), true).await;
        resp.text().await.unwrap_or_default()
    });
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (s, _) = manage(&r.daemon.url, Method::POST, "/shutdown", Some(json!({}))).await;
    assert_eq!(s, 200);
    let text = streaming.await.unwrap();
    let events = whole_events(&text);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{text}");
    assert!(
        data["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daemon is stopping"),
        "{data}"
    );
    assert!(!text.contains("message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_a_408_and_the_connection_closes() {
    let r = rig_with(&[("a@example.com", 10)], |c| {
        c.cliproxy.body_timeout = secs(1);
    })
    .await;
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: {}\r\nx-api-key: {CLIENT_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":",
        host_of(&r.daemon.url)
    );
    let url = r.daemon.url.clone();
    let got =
        tokio::task::spawn_blocking(move || raw(&url, req.as_bytes(), Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("cliproxy.body_timeout"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_held_at_once_are_bounded_and_the_rest_get_a_503() {
    let r = rig_with(&[("a@example.com", 10)], |c| {
        c.cliproxy.body_limit = Size(1 << 20);
        c.cliproxy.bodies_in_flight = Size(1 << 20);
    })
    .await;
    // A client that declares 900 KB and sends a little of it, then waits.
    let addr = host_of(&r.daemon.url).to_string();
    let mut slow = TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "POST /v1/messages HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {CLIENT_KEY}\r\n\
         content-length: 900000\r\n\r\n{{\"model\":\"claude-sonnet-4-5\","
    )
    .unwrap();
    let big = || {
        let pad = "x".repeat(200_000);
        serde_json::to_vec(&json!({"model":"claude-sonnet-4-5","max_tokens":1,"messages":[{"role":"user","content":pad}]})).unwrap()
    };
    let mut refused = None;
    for _ in 0..200 {
        let resp = http()
            .post(format!("{}/v1/messages", r.daemon.url))
            .header("x-api-key", CLIENT_KEY)
            .body(big())
            .send()
            .await
            .unwrap();
        if resp.status() == 503 {
            refused = Some(resp);
            break;
        }
        // The slow body's share may not be taken yet: its head must arrive first.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = refused.expect("a body beyond the budget is refused");
    assert_eq!(resp.headers()["retry-after"], "5");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cliproxy.bodies_in_flight"),
        "{v}"
    );
    // The slow client leaves: its share comes back and the same body is taken.
    drop(slow);
    let mut ok = false;
    for _ in 0..200 {
        let resp = http()
            .post(format!("{}/v1/messages", r.daemon.url))
            .header("x-api-key", CLIENT_KEY)
            .body(big())
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "the budget came back");
}

// ---- only the owner gets in -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_rebinds_its_name_to_loopback_reaches_nothing() {
    let r = rig(&[("a@example.com", 10)]).await;
    let url = &r.daemon.url;
    let port = url.rsplit(':').next().unwrap();
    let evil = format!("evil.example:{port}");
    let listed = http()
        .get(format!("{url}/v0/management/accounts"))
        .header("host", &evil)
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 403);
    let v: Value = listed.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cliproxy.allowed_hosts"),
        "{v}"
    );
    let spent = http()
        .post(format!("{url}/v1/messages"))
        .header("host", &evil)
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "claude-sonnet-4-5", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 403);
    assert_eq!(
        counters(&r.sim.url()).await["a@example.com"]["messages_ok"],
        0
    );
    // An absolute-form target names the host, whatever `Host` says (RFC 9112 §3.2.2).
    let host = host_of(url);
    let absolute = raw(
        url,
        format!(
            "POST http://{evil}/v1/messages HTTP/1.1\r\nHost: {host}\r\nx-api-key: {CLIENT_KEY}\r\n\
             content-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    assert!(absolute.starts_with("HTTP/1.1 403"), "{absolute}");
    assert_eq!(
        counters(&r.sim.url()).await["a@example.com"]["messages_ok"],
        0
    );
    // Loopback names are fine.
    let ok = http()
        .get(format!("{url}/v0/management/accounts"))
        .header("host", format!("localhost:{port}"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A page on another origin, even with a loopback Host: refused on management, no CORS.
    let cross = http()
        .post(format!("{url}/v0/management/shutdown"))
        .header("origin", "http://evil.example")
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(cross.headers().get("access-control-allow-origin").is_none());
    let preflight = http()
        .request(Method::OPTIONS, format!("{url}/v0/management/accounts"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    // Still running: the refused shutdown did nothing.
    assert_eq!(accounts(url).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_refuses_before_reading_a_body() {
    let r = rig(&[("a@example.com", 10)]).await;
    // A body announced and never sent, without the secret: refused at once, not waited for.
    let req = format!(
        "POST /v0/management/accounts HTTP/1.1\r\nHost: {}\r\ncontent-type: application/json\r\n\
         content-length: 1900000\r\nconnection: close\r\n\r\n",
        host_of(&r.daemon.url)
    );
    let url = r.daemon.url.clone();
    let got =
        tokio::task::spawn_blocking(move || raw(&url, req.as_bytes(), Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
    // Malformed JSON without the secret: 401, not 400.
    let bad = http()
        .post(format!("{}/v0/management/accounts", r.daemon.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_never_lock_the_owner_out_and_all_of_loopback_counts_as_one() {
    let r = rig(&[("a@example.com", 10)]).await;
    let url = r.daemon.url.clone();
    // A guesser spreads 40 failures over 127.0.0.2–127.0.0.41 at once.
    let guesses: Vec<_> = (2..42u8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .local_address(Some(std::net::IpAddr::from([127, 0, 0, i])))
                    .build()
                    .unwrap();
                client
                    .get(format!("{url}/v0/management/accounts"))
                    .bearer_auth(format!("guess-{i}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    // Meanwhile the owner, with the secret, is let straight in, several times.
    for _ in 0..5 {
        assert_eq!(accounts(&url).await.len(), 1);
    }
    assert_throttled(
        guesses,
        "the guesses from all of 127/8 were counted as one client",
    )
    .await;
    // After the flood too.
    assert_eq!(accounts(&url).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_keys_are_generated_and_the_public_default_names_are_refused() {
    let sim = sim(&scenario(&[("a@example.com", 10)]), false);
    let dir = tempfile::tempdir().unwrap();
    let paths = ccs::config::Paths::at(dir.path().join("ccs"));
    std::fs::create_dir_all(&paths.home).unwrap();
    let s = sim.url();
    std::fs::write(
        paths.config_file(),
        format!(
            "upstream:\n  api_base: {s}\noauth:\n  token_url: {s}/v1/oauth/token\n  \
             usage_url: {s}/api/oauth/usage\n"
        ),
    )
    .unwrap();
    let config = ccs::config::Config::load(&paths).unwrap();
    let clock: ccs_actors::SharedClock = std::sync::Arc::new(ccs_actors::SystemClock);
    let daemon = tokio::task::block_in_place(|| {
        ccs::daemon::DaemonHandle::start(paths.clone(), config, clock)
    })
    .unwrap();
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(paths.keys_file()).unwrap()).unwrap();
    assert_eq!(ccs::fsutil::mode(&paths.keys_file()).unwrap(), 0o600);
    for (secret, want) in [
        ("ccs-internal-management", 401),
        (keys["management_secret"].as_str().unwrap(), 200),
    ] {
        let r = http()
            .get(format!("{}/v0/management/accounts", daemon.url))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{secret}");
    }
    for (key, want) in [
        ("ccs-internal-managed", 401),
        (keys["client_key"].as_str().unwrap(), 401),
    ] {
        // With no account the right key still reaches routing (401: no account in the pool),
        // the wrong one stops at the door: the messages tell them apart.
        let r = http()
            .post(format!("{}/v1/messages", daemon.url))
            .bearer_auth(key)
            .json(&json!({"model": "claude-sonnet-4-5", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        let msg = r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        let at_the_door = msg.contains("invalid client key");
        assert_eq!(at_the_door, key == "ccs-internal-managed", "{key}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_anthropic_needs_goes_upstream() {
    let r = rig(&[("a@example.com", 10)]).await;
    let resp = http()
        .post(format!(
            "{}/v1/messages?beta=true&api_key=sk-client-secret",
            r.daemon.url
        ))
        .bearer_auth(CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "claude-code-20250219")
        .header("x-claude-code-session-id", "sess-1")
        .header("x-stainless-lang", "js")
        .header("x-app", "cli")
        .header("cookie", "session=browser-cookie")
        .header("x-forwarded-for", "10.9.8.7")
        .header("x-ccs-pool", "claude")
        .header("x-private-note", "mine")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 1, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = last_request(&r.sim.url()).await;
    assert_eq!(got["path_and_query"], "/v1/messages?beta=true");
    let headers: Vec<(String, String)> = serde_json::from_value(got["headers"].clone()).unwrap();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    for kept in [
        "anthropic-version",
        "x-claude-code-session-id",
        "x-stainless-lang",
        "x-app",
    ] {
        assert!(get(kept).is_some(), "{kept} is forwarded: {headers:?}");
    }
    for dropped in [
        "cookie",
        "x-forwarded-for",
        "x-ccs-pool",
        "x-private-note",
        "x-api-key",
    ] {
        assert!(get(dropped).is_none(), "{dropped} stays here: {headers:?}");
    }
    assert!(get("authorization")
        .unwrap()
        .starts_with("Bearer sk-ant-oat01-"));
    assert!(get("anthropic-beta").unwrap().contains("oauth-2025-04-20"));
}

/// Issue 32 item 4: what one client key controls is bounded. A model name that is no model
/// name (too long, odd bytes) is refused before it goes anywhere; distinct names beyond
/// `MODELS_PER_KEY` count as `other` in `/metrics` and the usage book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_grow_the_metrics_or_the_usage_book_with_model_names() {
    let r = rig(&[("a@example.com", 1000)]).await;
    let url = r.daemon.url.clone();
    let send = |model: String| {
        let url = url.clone();
        async move {
            http()
                .post(format!("{url}/v1/messages"))
                .bearer_auth(CLIENT_KEY)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": model, "max_tokens": 8, "messages": [{"role":"user","content":"hi"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    let huge = send("m".repeat(5 << 20)).await;
    assert_eq!(huge.status(), 400);
    let text = huge.text().await.unwrap();
    assert!(
        text.contains("not a model name") && text.len() < 1000,
        "{text}"
    );
    assert_eq!(send("claude\u{1b}[2J".into()).await.status(), 400);
    let n = ccs::telemetry::MODELS_PER_KEY + 16;
    for i in 0..n {
        send(format!("claude-probe-{i}")).await;
    }
    let r2 = http()
        .get(format!("{url}/metrics"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let metrics = r2.text().await.unwrap();
    let models: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ccs_requests_total{"))
        .filter_map(|l| l.split("model=\"").nth(1)?.split('"').next())
        // `-`: the refused requests, which name no model.
        .filter(|m| *m != "-")
        .collect();
    assert!(models.contains("other"), "{models:?}");
    assert!(
        models.len() <= ccs::telemetry::MODELS_PER_KEY + 1,
        "{} model labels for one key: {models:?}",
        models.len()
    );
    assert!(
        !metrics.contains("mmmmmmmm"),
        "the refused name is not a label"
    );
    let (s, usage) = manage(&url, Method::GET, "/usage?span=24h", None).await;
    assert_eq!(s, 200);
    let by_model = usage["by_model"].as_array().unwrap();
    assert!(
        by_model.len() <= ccs::telemetry::MODELS_PER_KEY + 1,
        "{by_model:?}"
    );
}

/// Issue 32 item 8: what an unauthenticated caller is told says what to do, never where the
/// server keeps its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_answers_name_no_server_path() {
    let r = rig(&[("a@example.com", 10)]).await;
    let url = r.daemon.url.clone();
    let home = r.paths.home.display().to_string();
    let wrong_key = try_ask_as(&url, "not-a-key", None, false).await.unwrap();
    assert_eq!(wrong_key.status(), 401);
    let no_secret = http()
        .get(format!("{url}/v0/management/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_secret.status(), 401);
    for body in [
        wrong_key.text().await.unwrap(),
        no_secret.text().await.unwrap(),
    ] {
        assert!(
            !body.contains(&home) && !body.contains("keys.json"),
            "{body}"
        );
        assert!(body.contains("ccs"), "it still says what to do: {body}");
    }
}
