//! The simulator over real HTTP on 127.0.0.1: OAuth, the Messages API, quotas, every fault,
//! and the official Python SDK talking to it directly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn post_message(base: &str, token: &str, stream: bool) -> reqwest::Response {
    http()
        .post(format!("{base}/v1/messages?beta=true"))
        .bearer_auth(token)
        .header("anthropic-beta", format!("claude-code-20250219,{BETA}"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model":"claude-sonnet-4-5","max_tokens":16,"stream":stream,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .expect("request sent")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn oauth_code_flow_with_pkce_then_profile_and_usage() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    assert!(access(&tokens).starts_with("sk-ant-oat01-"));
    assert!(tokens["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("sk-ant-ort01-"));
    assert_eq!(tokens["account"]["email_address"], "alice@example.com");
    assert_eq!(tokens["expires_in"], 8 * 3600);

    let profile: Value = http()
        .get(format!("{base}/api/oauth/profile"))
        .bearer_auth(access(&tokens))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(profile["account"]["email"], "alice@example.com");
    assert_eq!(profile["organization"]["organization_type"], "claude_max");

    post_message(&base, &access(&tokens), false).await;
    let usage: Value = http()
        .get(format!("{base}/api/oauth/usage"))
        .bearer_auth(access(&tokens))
        .header("anthropic-beta", BETA)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        usage["five_hour"]["utilization"], 10.0,
        "percent: 1 of 10 used"
    );
    assert!(usage["five_hour"]["resets_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

#[tokio::test]
async fn bad_verifier_replayed_code_wrong_state_and_redirect_are_refused() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let p = pkce("the-right-verifier-0123456789-0123456789-0123");
    let exchange = |code: &str, state: &str, redirect: &str, verifier: &str| json!({"grant_type":"authorization_code","code":code,"state":state,"client_id":CLIENT_ID,"redirect_uri":redirect,"code_verifier":verifier});
    let cases = [
        (
            "wrong verifier",
            "st",
            REDIRECT,
            "a-wrong-verifier-0123456789-0123456789-0123",
            "PKCE",
        ),
        (
            "wrong state",
            "other",
            REDIRECT,
            p.verifier.as_str(),
            "state",
        ),
        (
            "wrong redirect_uri",
            "st",
            "http://localhost:1/evil",
            p.verifier.as_str(),
            "redirect_uri",
        ),
    ];
    for (what, state, redirect, verifier, says) in cases {
        let code = get_code(&base, &p, "st", None).await;
        let (status, body) = token_call(&base, exchange(&code, state, redirect, verifier)).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{what}");
        assert!(
            body["error_description"].as_str().unwrap().contains(says),
            "{what}: {body}"
        );
    }
    let code = get_code(&base, &p, "st", None).await;
    let (status, _) = token_call(&base, exchange(&code, "st", REDIRECT, &p.verifier)).await;
    assert_eq!(status, 200);
    let (status, body) = token_call(&base, exchange(&code, "st", REDIRECT, &p.verifier)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "replayed code"
    );

    // Form bodies are refused: the real endpoint takes JSON.
    let r = http()
        .post(format!("{base}/v1/oauth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_dies() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let first = login(&base, "alice@example.com").await;
    let refresh =
        |rt: &str| json!({"grant_type":"refresh_token","refresh_token":rt,"client_id":CLIENT_ID});
    let old_rt = first["refresh_token"].as_str().unwrap().to_string();
    let (status, second) = token_call(&base, refresh(&old_rt)).await;
    assert_eq!(status, 200);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    let (status, body) = token_call(&base, refresh(&old_rt)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    let (status, _) = token_call(&base, refresh(second["refresh_token"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert_eq!(
        counters(&base).await["alice@example.com"]["refresh_calls"],
        3
    );
}

#[tokio::test]
async fn access_tokens_expire_on_the_simulator_clock() {
    let mut s = scenario(&[("alice@example.com", 10)]);
    s.token_ttl = ccs::config::Span(Duration::from_secs(600));
    let sim = sim(&s, true);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    assert_eq!(
        post_message(&base, &access(&tokens), false).await.status(),
        200
    );
    let r = http()
        .post(format!("{base}/sim/clock/advance"))
        .json(&json!({"secs": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post_message(&base, &access(&tokens), false).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn requests_need_a_token_it_issued_and_the_oauth_beta() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    assert_eq!(
        post_message(&base, "sk-ant-oat01-forged", false)
            .await
            .status(),
        401
    );
    let r = http()
        .post(format!("{base}/v1/messages"))
        .bearer_auth(access(&tokens))
        .json(&json!({"model":"m","max_tokens":1,"messages":[]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no oauth beta");
    let r = http()
        .get(format!("{base}/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn budget_of_n_gives_n_successes_then_a_rejected_429_until_the_reset() {
    let sim = sim(&scenario(&[("alice@example.com", 3)]), true);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    for i in 1..=3 {
        let r = post_message(&base, &access(&tokens), false).await;
        assert_eq!(r.status(), 200, "request {i}");
        let util: f64 = header(&r, "anthropic-ratelimit-unified-5h-utilization")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (util - i as f64 / 3.0).abs() < 1e-3,
            "utilization after {i}: {util}"
        );
        let body: Value = r.json().await.unwrap();
        assert!(body["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Served by alice@example.com"));
    }
    let r = post_message(&base, &access(&tokens), false).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        header(&r, "anthropic-ratelimit-unified-status"),
        Some("rejected")
    );
    assert_eq!(
        header(&r, "anthropic-ratelimit-unified-5h-status"),
        Some("rejected")
    );
    assert_eq!(
        header(&r, "anthropic-ratelimit-unified-representative-claim"),
        Some("five_hour")
    );
    let reset: u64 = header(&r, "anthropic-ratelimit-unified-5h-reset")
        .unwrap()
        .parse()
        .unwrap();
    let now = sim.model.now().as_secs();
    assert_eq!(
        reset,
        now + 5 * 3600,
        "rolling window started at the first request"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        counters(&base).await["alice@example.com"]["messages_rejected"],
        1
    );

    http()
        .post(format!("{base}/sim/clock/advance"))
        .json(&json!({"secs": 5 * 3600 - 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post_message(&base, &access(&tokens), false).await.status(),
        429
    );
    http()
        .post(format!("{base}/sim/clock/advance"))
        .json(&json!({"secs": 1}))
        .send()
        .await
        .unwrap();
    // The token lives 8 h, so it is still valid after 5 h.
    let r = post_message(&base, &access(&tokens), false).await;
    assert_eq!(r.status(), 200, "the window reset");
    assert_eq!(
        header(&r, "anthropic-ratelimit-unified-5h-status"),
        Some("allowed")
    );
}

#[tokio::test]
async fn streams_the_full_sse_event_sequence() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    let r = post_message(&base, &access(&tokens), true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), Some("text/event-stream"));
    let text = r.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(text.contains("Served by alice@example.com."));
}

#[tokio::test]
async fn accepts_bodies_of_tens_of_megabytes() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    let big = "x".repeat(20 << 20);
    let r = http()
        .post(format!("{base}/v1/messages"))
        .bearer_auth(access(&tokens))
        .header("anthropic-beta", BETA)
        .json(&json!({"model":"m","max_tokens":1,"messages":[{"role":"user","content":big}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 5_000_000);
}

/// One fault for alice's next request; returns that response.
async fn with_fault(kind: &str, extra: Value) -> (reqwest::Result<reqwest::Response>, Sim) {
    let sim = sim(
        &scenario(&[("alice@example.com", 10), ("bob@example.com", 10)]),
        false,
    );
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    let mut spec = json!({"kind": kind, "account": "alice@example.com", "count": 1});
    if let (Some(o), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    fault(&base, spec).await;
    let r = http()
        .post(format!("{base}/v1/messages"))
        .bearer_auth(access(&tokens))
        .header("anthropic-beta", BETA)
        .json(&json!({"model":"claude-sonnet-4-5","max_tokens":1,"stream":true,"messages":[]}))
        .send()
        .await;
    (r, Sim { sim, tokens })
}

/// Checks a status fault; returns its `x-should-retry` header.
async fn status_fault(kind: &str, status: u16, error_type: &str) -> Option<String> {
    let (r, s) = with_fault(kind, json!({})).await;
    let r = r.expect("an answer");
    assert_eq!(r.status(), status, "{kind}");
    assert!(
        r.headers()
            .get("anthropic-ratelimit-unified-status")
            .is_none(),
        "{kind}: no unified headers"
    );
    let retry = header(&r, "x-should-retry").map(str::to_string);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], error_type, "{kind}");
    // The fault was for one request only: the next one is served.
    assert_eq!(
        post_message(&s.sim.url(), &access(&s.tokens), false)
            .await
            .status(),
        200,
        "{kind} then"
    );
    assert_eq!(
        counters(&s.sim.url()).await["alice@example.com"]["faults"],
        1
    );
    retry
}

#[tokio::test]
async fn fault_429_without_headers() {
    assert_eq!(
        status_fault("status_429", 429, "rate_limit_error").await,
        None
    );
}

#[tokio::test]
async fn fault_429_with_should_retry() {
    let retry = status_fault("status_429_retry", 429, "rate_limit_error").await;
    assert_eq!(retry.as_deref(), Some("true"));
}

#[tokio::test]
async fn fault_401() {
    status_fault("status_401", 401, "authentication_error").await;
}

#[tokio::test]
async fn fault_403() {
    status_fault("status_403", 403, "permission_error").await;
}

#[tokio::test]
async fn fault_500() {
    status_fault("status_500", 500, "api_error").await;
}

#[tokio::test]
async fn fault_529() {
    status_fault("status_529", 529, "overloaded_error").await;
}

#[tokio::test]
async fn fault_close_before_headers() {
    let (r, s) = with_fault("close_before_headers", json!({})).await;
    let err = r.expect_err("no response at all");
    assert!(!err.is_status(), "{err}");
    assert_eq!(
        post_message(&s.sim.url(), &access(&s.tokens), false)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn fault_close_mid_stream_after_n_events() {
    let (r, _s) = with_fault("close_mid_stream", json!({"after_events": 3})).await;
    let r = r.expect("headers arrive");
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the stream ends in an error, not cleanly");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("event: ").count(), 3, "{text}");
    assert!(!text.contains("message_stop"));
}

#[tokio::test]
async fn fault_latency_per_request() {
    let started = Instant::now();
    let (r, _s) = with_fault("latency", json!({"ms": 120})).await;
    assert_eq!(r.unwrap().status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(120),
        "the delay was applied"
    );
}

#[tokio::test]
async fn fault_latency_per_event() {
    let (r, _s) = with_fault("event_latency", json!({"ms": 40})).await;
    let r = r.unwrap();
    let started = Instant::now();
    let text = r.text().await.unwrap();
    // 10 events, each delayed: the whole body takes at least 10 × 40 ms.
    assert_eq!(text.matches("event: ").count(), 10);
    assert!(
        started.elapsed() >= Duration::from_millis(360),
        "events were delayed"
    );
}

#[tokio::test]
async fn fault_token_endpoint_down_then_up() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    fault(&base, json!({"kind": "token_down", "count": 1})).await;
    let body = json!({"grant_type":"refresh_token","refresh_token":tokens["refresh_token"],"client_id":CLIENT_ID});
    let (status, _) = token_call(&base, body.clone()).await;
    assert_eq!(status, 503);
    let (status, _) = token_call(&base, body).await;
    assert_eq!(status, 200, "a 503 does not rotate the refresh token");
}

#[tokio::test]
async fn fault_token_endpoint_slow() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    fault(
        &base,
        json!({"kind": "token_slow", "ms": 150, "account": "alice@example.com"}),
    )
    .await;
    let started = Instant::now();
    let (status, _) = token_call(
        &base,
        json!({"grant_type":"refresh_token","refresh_token":tokens["refresh_token"],"client_id":CLIENT_ID}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn revoked_grant_kills_access_and_refresh() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), false);
    let base = sim.url();
    let tokens = login(&base, "alice@example.com").await;
    let r = http()
        .post(format!("{base}/sim/users/alice@example.com/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        post_message(&base, &access(&tokens), false).await.status(),
        401
    );
    let (status, body) = token_call(
        &base,
        json!({"grant_type":"refresh_token","refresh_token":tokens["refresh_token"],"client_id":CLIENT_ID}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn authorize_denial_and_login_order() {
    let sim = sim(
        &scenario(&[("alice@example.com", 10), ("bob@example.com", 10)]),
        false,
    );
    let base = sim.url();
    let p = pkce("v-0123456789-0123456789-0123456789-0123456789");
    // Without a hint: the first user without a grant approves.
    let t = login(&base, "alice@example.com").await;
    assert_eq!(t["account"]["email_address"], "alice@example.com");
    let code = get_code(&base, &p, "s", None).await;
    let (_, t) = token_call(&base, json!({"grant_type":"authorization_code","code":code,"state":"s","client_id":CLIENT_ID,"redirect_uri":REDIRECT,"code_verifier":p.verifier})).await;
    assert_eq!(t["account"]["email_address"], "bob@example.com");
    // A scripted denial.
    http()
        .post(format!("{base}/sim/next-login"))
        .json(&json!({"email":"alice@example.com","deny":true}))
        .send()
        .await
        .unwrap();
    let r = http()
        .get(authorize_url(&base, &p, "s2", None))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.contains("error=access_denied") && loc.contains("state=s2"),
        "{loc}"
    );
}

#[cfg(feature = "external-clients")]
#[test]
fn python_sdk_create_stream_count_tokens_and_errors() {
    let sim = sim(&scenario(&[("alice@example.com", 4)]), false);
    let base = sim.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tokens = rt.block_on(login(&base, "alice@example.com"));
    let at = access(&tokens);
    let out = run_python(
        "sdk_check.py",
        &["smoke", &base, "--auth-token", &at, "--oauth-beta"],
    );
    assert!(
        out["create"]
            .as_str()
            .unwrap()
            .starts_with("Served by alice@example.com."),
        "{out}"
    );
    assert_eq!(out["stop_reason"], "end_turn");
    assert!(
        out["stream"]
            .as_str()
            .unwrap()
            .starts_with("Served by alice@example.com."),
        "{out}"
    );
    assert_eq!(out["stream_stop_reason"], "end_turn");
    assert!(out["count"].as_u64().unwrap() > 0);
    let counts = rt.block_on(counters(&base));
    assert_eq!(counts["alice@example.com"]["messages_ok"], 2);
    assert_eq!(counts["alice@example.com"]["count_tokens"], 1);

    let out = run_python(
        "sdk_check.py",
        &[
            "errors",
            &base,
            "--bad-token",
            "sk-ant-oat01-bogus",
            "--auth-token",
            &at,
            "--oauth-beta",
            "--exhaust",
            "10",
        ],
    );
    assert_eq!(out["auth"], "AuthenticationError", "{out}");
    assert_eq!(out["auth_status"], 401);
    assert_eq!(out["ratelimit"], "RateLimitError", "{out}");
    assert_eq!(out["ratelimit_status"], "rejected");
    assert_eq!(
        out["ok_before_limit"], 2,
        "budget 4, two used by the smoke run"
    );
}

#[tokio::test]
async fn an_expired_authorization_code_is_refused() {
    let sim = sim(&scenario(&[("alice@example.com", 10)]), true);
    let base = sim.url();
    let p = pkce("v-0123456789-0123456789-0123456789-0123456789");
    let code = get_code(&base, &p, "s", None).await;
    http()
        .post(format!("{base}/sim/clock/advance"))
        .json(&json!({"secs": 601}))
        .send()
        .await
        .unwrap();
    let (status, body) = token_call(
        &base,
        json!({"grant_type":"authorization_code","code":code,"state":"s","client_id":CLIENT_ID,"redirect_uri":REDIRECT,"code_verifier":p.verifier}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}
