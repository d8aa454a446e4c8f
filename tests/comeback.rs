//! Quota that comes back before its announced reset (`src/proxy/comeback.rs`): a daemon and
//! the simulator on one manual clock, an account benched by its 5-hour window for hours, the
//! simulator's window opened early (a budget top-up), and the usage endpoint asked on its
//! schedule, with its own 429s honoured.

mod common;

use std::time::Duration;

use ccs::config::Span;
use common::rig::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const A: &str = "a@example.com";
const B: &str = "b@example.com";

async fn top_up(sim: &str, email: &str, five_hour: u64) {
    let r = http()
        .post(format!("{sim}/sim/users/{email}/budget"))
        .json(&json!({ "five_hour": five_hour }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn account(url: &str, email: &str) -> Value {
    accounts(url)
        .await
        .into_iter()
        .find(|a| a["email"] == email)
        .unwrap()
}

async fn usage_calls(sim: &str, email: &str) -> (u64, u64) {
    let c = counters(sim).await;
    (
        c[email]["usage_calls"].as_u64().unwrap(),
        c[email]["usage_refused"].as_u64().unwrap(),
    )
}

/// Waits (real time, the daemon looks once a second) for `email`'s bench to lift.
async fn wait_unbenched(url: &str, email: &str, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if account(url, email).await["cooldown_until"].is_null() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `a` spends its one request and is benched by its window; the next turn moves to `b`.
async fn bench_a(url: &str) {
    assert_eq!(served_by(ask(url, Some("s1"), false).await).await, A);
    assert_eq!(served_by(ask(url, Some("s1"), false).await).await, B);
    assert!(
        !account(url, A).await["cooldown_until"].is_null(),
        "benched until its window resets"
    );
    seen_by_the_daemon().await;
}

/// The daemon looks at its benches once a second (real time): the clock moves on only once it
/// has seen this one, so its first question is one wait after the bench.
async fn seen_by_the_daemon() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_opens_early_lifts_the_bench_on_the_next_question() {
    let r = rig_with(&[(A, 1), (B, 10)], |c| {
        c.oauth.usage_poll = Span(Duration::from_secs(60))
    })
    .await;
    let url = &r.daemon.url;
    bench_a(url).await;
    top_up(&r.sim.url(), A, 10).await;
    // Within one wait (60 s, up to 90 with the jitter) nobody asks: the window just closed.
    advance(&r, 55);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(usage_calls(&r.sim.url(), A).await, (0, 0));
    assert!(!account(url, A).await["cooldown_until"].is_null());
    // Past it, one question, and the bench is gone hours before the announced reset.
    advance(&r, 40);
    assert!(
        wait_unbenched(url, A, Duration::from_secs(10)).await,
        "still benched: {}",
        account(url, A).await
    );
    assert_eq!(usage_calls(&r.sim.url(), A).await, (1, 0));
    assert_eq!(
        usage_calls(&r.sim.url(), B).await,
        (0, 0),
        "b was never benched"
    );
    // Fill-first: a new conversation goes to a again.
    assert_eq!(served_by(ask(url, Some("s2"), false).await).await, A);
    let metrics = metrics_text(url).await;
    assert!(
        metrics.contains("ccs_quota_came_back_early_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_endpoint_that_answers_429_is_asked_only_after_its_retry_after() {
    let s = ccs::sim::Scenario {
        usage_min_interval: Span(Duration::from_secs(3600)),
        ..scenario(&[(A, 1), (B, 10)])
    };
    let r = rig_on(s, |c| c.oauth.usage_poll = Span(Duration::from_secs(60))).await;
    let url = &r.daemon.url;
    // Someone looks at the quota: the endpoint's one answer of the hour is spent.
    let (s, v) = manage(url, Method::GET, "/quota?max_age=0", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(usage_calls(&r.sim.url(), A).await, (1, 0));
    bench_a(url).await;
    top_up(&r.sim.url(), A, 10).await;
    // The first question is refused with a retry-after of most of an hour.
    advance(&r, 100);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while usage_calls(&r.sim.url(), A).await != (2, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no refused question: {:?}",
            usage_calls(&r.sim.url(), A).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Half an hour on, far past the doubled wait but not the retry-after: nobody asks.
    advance(&r, 1800);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(usage_calls(&r.sim.url(), A).await, (2, 1));
    assert!(!account(url, A).await["cooldown_until"].is_null());
    // Past the retry-after, the next question is answered and lifts the bench.
    advance(&r, 1800);
    assert!(
        wait_unbenched(url, A, Duration::from_secs(10)).await,
        "still benched: {}",
        account(url, A).await
    );
    assert_eq!(usage_calls(&r.sim.url(), A).await, (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_every_account_limited_serves_again_when_the_first_comes_back() {
    let r = rig_with(&[(A, 1), (B, 1)], |c| {
        c.oauth.usage_poll = Span(Duration::from_secs(60))
    })
    .await;
    let url = &r.daemon.url;
    assert_eq!(served_by(ask(url, Some("s"), false).await).await, A);
    assert_eq!(served_by(ask(url, Some("s"), false).await).await, B);
    assert_eq!(ask(url, Some("s"), false).await.status(), 429);
    seen_by_the_daemon().await;
    top_up(&r.sim.url(), B, 10).await;
    advance(&r, 100);
    assert!(
        wait_unbenched(url, B, Duration::from_secs(10)).await,
        "still benched: {}",
        account(url, B).await
    );
    assert!(!account(url, A).await["cooldown_until"].is_null());
    assert_eq!(served_by(ask(url, Some("s"), false).await).await, B);
}
