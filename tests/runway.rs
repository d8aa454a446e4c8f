//! The runway as a user sees it (`src/proxy/runway.rs`): a daemon and the simulator on one
//! manual clock, the quota sampled five times a second, requests served a minute apart, and
//! the forecast read back from `/quota`, `/status`, the status line's `/session`, `/metrics`
//! and `ccs cliproxy quota`.

mod common;

use std::time::Duration;

use ccs::config::Span;
use common::rig::*;
use common::*;
use reqwest::Method;
use serde_json::Value;

const A: &str = "a@example.com";
const B: &str = "b@example.com";

async fn runway(url: &str) -> Value {
    let (s, v) = manage(url, Method::GET, "/quota?pool=claude", None).await;
    assert_eq!(s, 200, "{v}");
    v["runway"].clone()
}

/// Waits (real time; the sampler looks every 200 ms) for the runway to satisfy `ok`.
async fn runway_until(url: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = runway(url).await;
        if ok(&r) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One turn of conversation `s1`, then a minute passes once the sampler has seen it.
async fn turn(r: &Rig, expect: &str) {
    assert_eq!(
        served_by(ask(&r.daemon.url, Some("s1"), false).await).await,
        expect
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    advance(r, 60);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runway_is_forecast_from_the_pace_and_shown_everywhere() {
    let r = rig_with(&[(A, 5), (B, 5)], |c| {
        c.cliproxy.runway_sample = Span(Duration::from_millis(200));
        c.oauth.usage_poll = Span(Duration::ZERO);
    })
    .await;
    let url = r.daemon.url.clone();
    // No history yet: nothing is claimed.
    let first = runway(&url).await;
    assert_eq!(first["state"], "unknown", "{first}");
    assert!(first["text"].as_str().unwrap().contains("not known yet"));

    // The sampler has seen the accounts before they serve (a request before an account's
    // first sample is not in the pace).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Four turns a minute apart: a's window is 80 % spent at 60 requests an hour, 20 % each.
    for _ in 0..4 {
        turn(&r, A).await;
    }
    // Left: one request on a, five on b at the pool's average cost: six minutes.
    let v = runway_until(&url, "dry in about six minutes", |v| {
        v["state"] == "dry_at"
            && v["seconds"]
                .as_u64()
                .is_some_and(|s| (300..=420).contains(&s))
    })
    .await;
    assert_eq!(v["freed"]["account"], A, "a's window resets first: {v}");
    assert_eq!(v["freed"]["window"], "five_hour", "{v}");
    assert_eq!(v["freed"]["frees"], 1.0, "{v}");
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("at this pace the pool lasts until")
            && text.contains("a@example.com's 5-hour window resets at")
            && text.contains("frees ~100 % of it"),
        "{text}"
    );
    let rph = v["requests_per_hour"].as_f64().unwrap();
    assert!((55.0..=65.0).contains(&rph), "{v}");

    // The status line's question, `/status` and `/metrics` carry the same forecast.
    let (s, session) = manage(&url, Method::GET, "/session?id=s1", None).await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["runway"]["state"], "dry_at", "{session}");
    assert!(session["runway"]["seconds"].as_u64().unwrap() < 3600);
    let (s, status) = manage(&url, Method::GET, "/status", None).await;
    assert_eq!(s, 200);
    let pools = status["runway"].as_array().unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p["pool"] == "claude" && p["state"] == "dry_at"),
        "{status}"
    );
    let metrics = metrics_text(&url).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ccs_pool_runway_seconds{pool=\"claude\"}"))
        .unwrap_or_else(|| panic!("no runway gauge: {metrics}"));
    let secs: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((250.0..=420.0).contains(&secs), "{line}");

    // `ccs cliproxy quota` says it in words, and `--json` has the figures.
    point_cli_at_daemon(&r);
    let home = r.paths.home.clone();
    let (code, out, err) = tokio::task::block_in_place(|| ccs(&home, &["cliproxy", "quota"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("runway: at this pace the pool lasts until"),
        "{out}"
    );
    let (code, out, err) =
        tokio::task::block_in_place(|| ccs(&home, &["cliproxy", "quota", "--json"]));
    assert_eq!(code, 0, "{err}");
    let q: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(q["runway"]["state"], "dry_at", "{q}");
    let (code, out, err) = tokio::task::block_in_place(|| ccs(&home, &["cliproxy", "status"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("runway        claude: at this pace the pool lasts until"),
        "{out}"
    );

    // A paused account has no room: with b paused the pool lasts one request, a minute.
    let (s, _) = manage(&url, Method::POST, &format!("/accounts/{B}/pause"), None).await;
    assert_eq!(s, 200);
    runway_until(&url, "dry in about a minute once b is paused", |v| {
        v["state"] == "dry_at" && v["seconds"].as_u64().is_some_and(|s| s <= 90)
    })
    .await;

    // a's last request spends its window: dry now, until a's reset frees it.
    turn(&r, A).await;
    let v = runway_until(&url, "dry now", |v| v["state"] == "dry").await;
    assert_eq!(v["freed"]["account"], A, "{v}");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("every account of the pool is limited now"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_nobody_uses_does_not_run_dry() {
    let r = rig_with(&[(A, 5)], |c| {
        c.cliproxy.runway_sample = Span(Duration::from_millis(200));
        c.oauth.usage_poll = Span(Duration::ZERO);
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    advance(&r, 120);
    let v = runway_until(&r.daemon.url, "idle", |v| v["state"] == "idle").await;
    assert!(v["seconds"].is_null(), "{v}");
    assert!(v["text"].as_str().unwrap().contains("does not run dry"));
}
