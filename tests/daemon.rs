//! The daemon and the simulator on 127.0.0.1 with a temporary CCS_HOME: the proxy endpoint,
//! failover, quota learning, the management API, and real clients through it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ccs::daemon::DaemonHandle;
use ccs_actors::SharedClock;
use common::rig::*;
use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_the_conversation_and_all_limited_says_when() {
    let r = rig(&[
        ("a@example.com", 3),
        ("b@example.com", 3),
        ("c@example.com", 3),
    ])
    .await;
    let url = &r.daemon.url;
    let mut served = Vec::new();
    for _ in 0..6 {
        served.push(served_by(ask(url, Some("conv-1"), false).await).await);
    }
    assert_eq!(
        served,
        [
            "a@example.com",
            "a@example.com",
            "a@example.com",
            "b@example.com",
            "b@example.com",
            "b@example.com"
        ]
    );
    let (_, ev) = manage(url, Method::GET, "/events", None).await;
    let events = ev["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{ev}");
    assert_eq!(
        (
            events[0]["session"].as_str(),
            events[0]["from"].as_str(),
            events[0]["to"].as_str(),
            events[0]["reason"].as_str()
        ),
        (
            Some("conv-1"),
            Some("a@example.com"),
            Some("b@example.com"),
            Some("limited")
        )
    );

    // A session started after the hop goes to b, a is benched.
    assert_eq!(
        served_by(ask(url, Some("conv-2"), false).await).await,
        "c@example.com",
        "b is exhausted now, c is next"
    );
    for _ in 0..2 {
        served_by(ask(url, Some("conv-2"), false).await).await;
    }
    // Every budget spent: a 429 that says when the first account resets.
    let resp = ask(url, Some("conv-3"), false).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        retry,
        5 * 3600,
        "a's window started at its first request, on the shared clock"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("all 3 accounts"),
        "{body}"
    );
    assert!(
        !body["error"]["message"].as_str().unwrap().contains("Z UTC"),
        "a time says its zone once: {body}"
    );

    advance(&r, 5 * 3600);
    assert_eq!(
        served_by(ask(url, Some("conv-4"), false).await).await,
        "a@example.com",
        "a serves again after its reset"
    );
    let c = counters(&r.sim.url()).await;
    assert_eq!(c["a@example.com"]["messages_ok"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_after_the_hop_goes_to_account_two() {
    let r = rig(&[
        ("a@example.com", 3),
        ("b@example.com", 10),
        ("c@example.com", 10),
    ])
    .await;
    let url = &r.daemon.url;
    for _ in 0..4 {
        served_by(ask(url, Some("first"), false).await).await;
    }
    assert_eq!(
        served_by(ask(url, Some("second"), false).await).await,
        "b@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_529_reaches_the_client_and_benches_nobody() {
    let r = rig(&[("a@example.com", 10), ("b@example.com", 10)]).await;
    fault(&r.sim.url(), json!({"kind": "status_529", "count": 1})).await;
    let resp = ask(&r.daemon.url, Some("s"), false).await;
    assert_eq!(resp.status(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(
        served_by(ask(&r.daemon.url, Some("s"), false).await).await,
        "a@example.com"
    );
    let list = accounts(&r.daemon.url).await;
    assert!(
        list.iter().all(|a| a["cooldown_until"].is_null()),
        "{list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_stream_reaches_the_client_as_an_error_event() {
    let r = rig(&[("a@example.com", 10)]).await;
    fault(
        &r.sim.url(),
        json!({"kind": "close_mid_stream", "after_events": 3, "count": 1}),
    )
    .await;
    let resp = ask(&r.daemon.url, Some("s"), true).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap_or_default();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    let next = ask(&r.daemon.url, Some("s"), true).await;
    assert_eq!(next.status(), 200);
    assert!(next.text().await.unwrap().contains("event: message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_before_headers_moves_to_the_next_account() {
    let r = rig(&[("a@example.com", 10), ("b@example.com", 10)]).await;
    fault(
        &r.sim.url(),
        json!({"kind": "close_before_headers", "account": "a@example.com", "count": 1}),
    )
    .await;
    assert_eq!(
        served_by(ask(&r.daemon.url, Some("s"), false).await).await,
        "b@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_event_arrives_while_the_upstream_is_still_sending() {
    let r = rig(&[("a@example.com", 10)]).await;
    fault(
        &r.sim.url(),
        json!({"kind": "event_latency", "ms": 150, "count": 1}),
    )
    .await;
    let resp = ask(&r.daemon.url, Some("s"), true).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: message_start"));
    let after_first = Instant::now();
    let mut rest = Vec::new();
    while let Some(c) = body.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    // Nine more events, each 150 ms apart upstream, were still to come.
    assert!(
        after_first.elapsed() >= Duration::from_millis(9 * 150),
        "the first event was held back"
    );
    assert!(String::from_utf8_lossy(&rest).contains("message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_body_passes_unchanged() {
    use sha2::{Digest, Sha256};
    let r = rig(&[("a@example.com", 10)]).await;
    let body = serde_json::to_vec(&json!({"model":"claude-sonnet-4-5","max_tokens":1,"messages":[{"role":"user","content":"é".repeat(5 << 20)}]})).unwrap();
    assert!(body.len() >= 10 << 20);
    let want: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let resp = http()
        .post(format!("{}/v1/messages", r.daemon.url))
        .header("x-api-key", CLIENT_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(last_request(&r.sim.url()).await["body_sha256"], want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_probes_refuses_bad_keys_and_bad_bodies() {
    let r = rig(&[("a@example.com", 10)]).await;
    let url = &r.daemon.url;
    assert_eq!(
        http()
            .head(format!("{url}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http()
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let nf = http()
        .get(format!("{url}/v2/whatever"))
        .send()
        .await
        .unwrap();
    assert_eq!(nf.status(), 404);
    assert_eq!(
        nf.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );

    let bad = http()
        .post(format!("{url}/v1/messages"))
        .bearer_auth("wrong")
        .json(&json!({"model":"m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    assert_eq!(
        counters(&r.sim.url()).await["a@example.com"]["messages_ok"],
        0,
        "never forwarded"
    );

    let garbage = http()
        .post(format!("{url}/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let msg = garbage.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("not valid JSON"), "{msg}");

    let models = http()
        .get(format!("{url}/v1/models"))
        .header("x-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert!(
        models.json::<Value>().await.unwrap()["data"]
            .as_array()
            .unwrap()
            .len()
            >= 3
    );
    // The daemon survived all of it.
    assert_eq!(
        served_by(ask(url, None, false).await).await,
        "a@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_a_clear_413() {
    let sim = sim(&scenario(&[("a@example.com", 10)]), false);
    let (_home, paths, mut config) = home_for(&sim.url());
    config.cliproxy.body_limit = ccs::config::Size(1 << 20);
    let clock: SharedClock = Arc::new(ccs_actors::SystemClock);
    let daemon = tokio::task::block_in_place(|| DaemonHandle::start(paths, config, clock)).unwrap();
    let resp = http()
        .post(format!("{}/v1/messages", daemon.url))
        .bearer_auth(CLIENT_KEY)
        .body(vec![b'x'; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cliproxy.body_limit"),
        "{v}"
    );
}

#[cfg(feature = "external-clients")]
#[test]
fn the_python_sdk_works_through_the_proxy_with_either_key_header() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(rig(&[("a@example.com", 20)]));
    let url = r.daemon.url.clone();
    for flag in ["--auth-token", "--api-key"] {
        let out = run_python("sdk_check.py", &["smoke", &url, flag, CLIENT_KEY]);
        assert!(
            out["create"]
                .as_str()
                .unwrap()
                .starts_with("Served by a@example.com."),
            "{flag}: {out}"
        );
        assert!(
            out["stream"]
                .as_str()
                .unwrap()
                .starts_with("Served by a@example.com."),
            "{flag}: {out}"
        );
        assert!(out["count"].as_u64().unwrap() > 0);
    }
    let out = run_python(
        "sdk_check.py",
        &["errors", &url, "--bad-token", "not-the-key"],
    );
    assert_eq!(out["auth"], "AuthenticationError", "{out}");
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let r = rig(&[("a@example.com", 10)]).await;
    fault(
        &r.sim.url(),
        json!({"kind": "event_latency", "ms": 200, "count": 1}),
    )
    .await;
    let resp = ask(&r.daemon.url, Some("s"), true).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: message_start"));
    drop(body); // the client goes away mid-stream
    let mut abandoned = Value::Null;
    for _ in 0..100 {
        abandoned = counters(&r.sim.url()).await["a@example.com"]["streams_abandoned"].clone();
        if abandoned == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(abandoned, 1, "the upstream stream was cut, not drained");
    // A completed stream is not counted.
    let done = ask(&r.daemon.url, Some("s"), true)
        .await
        .text()
        .await
        .unwrap();
    assert!(done.contains("message_stop"));
    assert_eq!(
        counters(&r.sim.url()).await["a@example.com"]["streams_abandoned"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_answer_reaches_the_client_as_the_upstream_sent_it() {
    use std::io::Read;
    let r = rig(&[("a@example.com", 10)]).await;
    let resp = http()
        .post(format!("{}/v1/messages?beta=true", r.daemon.url))
        .bearer_auth(CLIENT_KEY)
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .json(&json!({"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let zipped = resp.bytes().await.unwrap();
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut plain)
        .expect("a gzip body");
    let v: Value = serde_json::from_str(&plain).unwrap();
    assert!(
        v["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Served by a@example.com."),
        "{v}"
    );
    // The quota headers were still read from the compressed answer.
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = accounts(&r.daemon.url).await[0]["five_hour"]["utilization"]
            .as_f64()
            .unwrap_or(0.0);
        if seen > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!((seen - 0.1).abs() < 1e-6, "utilization {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_one_account_is_routed_around_and_a_403_from_all_reaches_the_client() {
    let r = rig(&[("a@example.com", 100), ("b@example.com", 100)]).await;
    // a's permission is gone for good; b is fine.
    fault(
        &r.sim.url(),
        json!({"kind": "status_403", "account": "a@example.com"}),
    )
    .await;
    for i in 0..10 {
        let who = served_by(ask(&r.daemon.url, Some(&format!("new-{i}")), false).await).await;
        assert_eq!(who, "b@example.com", "session {i}");
    }
    // Every account refuses: the request itself is refused, in the upstream's words.
    fault(
        &r.sim.url(),
        json!({"kind": "status_403", "account": "b@example.com"}),
    )
    .await;
    let resp = ask(&r.daemon.url, Some("new-x"), false).await;
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_benched_on_a_guess_is_probed_before_a_client_is_refused() {
    let r = rig(&[("a@example.com", 100), ("b@example.com", 1)]).await;
    // One bare 429 on a (no rate-limit headers): benched on a guess; b takes the request.
    fault(
        &r.sim.url(),
        json!({"kind": "status_429", "account": "a@example.com", "count": 1}),
    )
    .await;
    let first = ask(&r.daemon.url, Some("c1"), false).await;
    assert_eq!(first.status(), 200, "the first conversation is served");
    assert_eq!(served_by(first).await, "b@example.com");
    // b's window is now spent (its answer says so): only a's guess stands between the next
    // conversation and a 429, and a has 99 requests of budget left. It is probed, and serves.
    let second = ask(&r.daemon.url, Some("c2"), false).await;
    assert_eq!(second.status(), 200, "the probe serves");
    assert_eq!(served_by(second).await, "a@example.com");
    // The probe cleared a's bench: the conversations after it are served too.
    assert_eq!(
        served_by(ask(&r.daemon.url, Some("c3"), false).await).await,
        "a@example.com"
    );
}
