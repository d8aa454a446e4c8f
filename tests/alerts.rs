//! Alerts as a receiver sees them (`src/alerts/`): a daemon and the simulator on one manual
//! clock, a real HTTP receiver on loopback for the webhook, and a desktop "notifier" that
//! writes down what it was called with. Each event arrives once, signed, in order; a receiver
//! that is down gets it once it is back, and never holds a request; nothing secret is sent.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs::config::Webhook;
use common::rig::*;
use common::*;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "a@example.com";
const B: &str = "b@example.com";
const HOOK_SECRET: &str = "receiver-checks-this-0123456789";

/// One request the receiver took.
#[derive(Clone, Debug)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: answers 503 to the first `refuse` requests, never answers
/// while `hang` is set, 200 otherwise; keeps every request it read.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    refuse: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
    /// Requests read and not answered yet.
    open: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> (Receiver, String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hook/T000/secret-path",
            listener.local_addr().unwrap()
        );
        let r = Receiver::default();
        let me = r.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    while let Some(d) = read_request(&mut sock).await {
                        me.got.lock().unwrap().push(d);
                        me.open.fetch_add(1, Ordering::SeqCst);
                        while me.hang.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        let refused = me
                            .refuse
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if refused {
                            "503 Service Unavailable"
                        } else {
                            "200 OK"
                        };
                        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        me.open.fetch_sub(1, Ordering::SeqCst);
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (r, url, task)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (a bound for a stuck test) until `n` requests arrived.
    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        for _ in 0..600 {
            let d = self.deliveries();
            if d.len() >= n {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the receiver got {:?}",
            self.deliveries()
                .iter()
                .map(Delivery::json)
                .collect::<Vec<_>>()
        );
    }
}

/// One HTTP/1.1 request off `sock`: its headers and its body (by content-length).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Delivery> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Delivery { headers, body })
}

/// The receiver's check: the signature is the HMAC-SHA256 of `TIMESTAMP.BODY` under the
/// secret (that ours is HMAC by its definition is `src/alerts/tests.rs`'s to show).
fn signed(d: &Delivery) -> bool {
    let (Some(ts), Some(sig)) = (d.header("x-ccs-timestamp"), d.header("x-ccs-signature")) else {
        return false;
    };
    let Some(hex) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut message = format!("{ts}.").into_bytes();
    message.extend_from_slice(&d.body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    ring::hmac::verify(&key, &message, &tag).is_ok()
}

/// The `event` of each alert in `list`.
fn events(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| a["event"].as_str().unwrap())
        .collect()
}

/// A notifier that appends its arguments to `log`, one call a line.
fn notifier(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("notified.log");
    let script = dir.join("notify");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s|%s\\n' \"$1\" \"$2\" >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), log)
}

fn notified_now(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// The notifier's calls once `n` have written down (the notifier runs beside the daemon and
/// is not waited for; a bound for a stuck test), and no more after a moment.
async fn notified(log: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..200 {
        if notified_now(log).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    notified_now(log)
}

async fn rig_alerting(accounts: &[(&str, u64)], hook: &str, desktop: &str) -> Rig {
    let (hook, desktop) = (hook.to_string(), desktop.to_string());
    rig_with(accounts, move |c| {
        c.alerts.webhook = Some(Webhook {
            url: hook,
            secret: HOOK_SECRET.into(),
        });
        c.alerts.desktop = desktop;
        c.oauth.usage_poll = ccs::config::Span(Duration::ZERO);
    })
    .await
}

/// The secrets a payload must never carry: every token on disk, the keys, the hook's secret.
fn secrets(r: &Rig) -> Vec<String> {
    let mut out = vec![
        SECRET.to_string(),
        CLIENT_KEY.to_string(),
        HOOK_SECRET.to_string(),
    ];
    for e in std::fs::read_dir(r.paths.auth_dir()).unwrap().flatten() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        for k in ["access_token", "refresh_token"] {
            if let Some(t) = v[k].as_str() {
                out.push(t.to_string());
            }
        }
    }
    assert!(out.len() >= 5, "tokens found: {out:?}");
    out
}

async fn kill_account(r: &Rig, email: &str) {
    let s = http()
        .post(format!("{}/sim/users/{email}/revoke", r.sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 200);
    let (_, _) = manage(
        &r.daemon.url,
        Method::POST,
        &format!("/accounts/{email}/refresh"),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_arrives_once_signed_in_order_and_without_secrets() {
    let (hook, hook_url, _task) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (program, log) = notifier(dir.path());
    let r = rig_alerting(&[(A, 1), (B, 1)], &hook_url, &program).await;
    let url = r.daemon.url.clone();
    let secrets = secrets(&r);

    // a and b each spend their one request; the pool is all limited.
    assert_eq!(served_by(ask(&url, Some("s1"), false).await).await, A);
    assert_eq!(served_by(ask(&url, Some("s1"), false).await).await, B);
    assert_eq!(ask(&url, Some("s2"), false).await.status(), 429);
    let got = hook.wait_for(1).await;
    assert_eq!(got[0].json()["event"], "pool_limited", "{}", got[0].json());
    // Then a's grant goes: it needs a new login.
    kill_account(&r, A).await;
    let got = hook.wait_for(2).await;
    // The watcher looks every two seconds: several more looks, nothing more told.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let got_later = hook.deliveries();
    assert_eq!(
        got_later.len(),
        2,
        "once per change of state: {:?}",
        got_later.iter().map(Delivery::json).collect::<Vec<_>>()
    );

    let bodies: Vec<Value> = got.iter().map(Delivery::json).collect();
    assert_eq!(bodies[0]["event"], "pool_limited");
    assert_eq!(bodies[0]["subject"], "claude");
    assert_eq!(bodies[1]["event"], "account_dead");
    assert_eq!(bodies[1]["subject"], A);
    assert!(
        bodies[1]["text"]
            .as_str()
            .unwrap()
            .contains("ccs claude --auth --add"),
        "says what to do: {}",
        bodies[1]
    );
    assert!(
        bodies[0]["id"].as_u64().unwrap() < bodies[1]["id"].as_u64().unwrap(),
        "in order"
    );
    for d in &got {
        assert!(signed(d), "signed: {:?}", d.headers);
        assert_eq!(d.header("x-ccs-event"), d.json()["event"].as_str());
        assert_eq!(d.json()["test"], false);
        let body = String::from_utf8_lossy(&d.body);
        for s in &secrets {
            assert!(!body.contains(s.as_str()), "a secret in {body}");
        }
        let headers = format!("{:?}", d.headers);
        for s in &secrets {
            assert!(!headers.contains(s.as_str()), "a secret in {headers}");
        }
    }
    // A tampered body fails the receiver's check.
    let mut forged = got[1].clone();
    forged.body = String::from_utf8_lossy(&forged.body)
        .replace(A, B)
        .into_bytes();
    assert!(!signed(&forged));

    // The desktop heard the same two, once each.
    let mut calls = notified(&log, 2).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    // Started one after the other, in order; each writes down as soon as it runs.
    calls.sort_by_key(|c| !c.starts_with("ccs: pool limited"));
    assert!(calls[0].starts_with("ccs: pool limited|"), "{calls:?}");
    assert!(
        calls[1].starts_with("ccs: account dead|") && calls[1].contains(A),
        "{calls:?}"
    );

    // The banner and the status line show what holds.
    let (s, alerts) = manage(&url, Method::GET, "/alerts", None).await;
    assert_eq!(s, 200);
    let active = events(&alerts["active"]);
    assert_eq!(
        active,
        ["account_dead", "pool_limited"],
        "newest first: {alerts}"
    );
    let (_, session) = manage(&url, Method::GET, "/session?id=s1", None).await;
    assert_eq!(session["alert"], format!("{A} needs a login"), "{session}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_alert_once_it_is_back_and_holds_no_request() {
    let (hook, hook_url, _task) = Receiver::start().await;
    let r = rig_alerting(&[(A, 100), (B, 100)], &hook_url, "off").await;
    let url = r.daemon.url.clone();
    // The receiver takes requests and answers none.
    hook.hang.store(true, Ordering::SeqCst);
    kill_account(&r, B).await;
    hook.wait_for(1).await;
    // While the webhook waits on it, every request is served.
    for i in 0..20 {
        assert_eq!(
            served_by(ask(&url, Some(&format!("c{i}")), false).await).await,
            A
        );
    }
    assert!(
        hook.open.load(Ordering::SeqCst) >= 1,
        "the webhook's try was still unanswered"
    );
    // Back, but refusing twice (the hung try gets the first 503): the alert is taken on the
    // third try, same id, once.
    hook.refuse.store(2, Ordering::SeqCst);
    hook.hang.store(false, Ordering::SeqCst);
    let got = hook.wait_for(3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_later = hook.deliveries();
    assert_eq!(got_later.len(), 3, "two refused, one taken");
    let ids: Vec<&str> = got
        .iter()
        .map(|d| d.header("x-ccs-delivery").unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert!(got
        .iter()
        .all(|d| d.json()["event"] == "account_dead" && signed(d)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccs_alerts_test_sends_one_of_each_to_every_channel() {
    let (hook, hook_url, _task) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (program, log) = notifier(dir.path());
    let r = rig_alerting(&[(A, 100)], &hook_url, &program).await;
    point_cli_at_daemon(&r);
    let home = r.paths.home.clone();
    let (code, out, err) =
        tokio::task::block_in_place(|| ccs(&home, &["alerts", "test", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let kinds = events(&v["sent"]);
    assert_eq!(
        kinds,
        [
            "account_dead",
            "runway_low",
            "pool_limited",
            "came_back",
            "refresh_failing",
            "restarted_after_crash"
        ]
    );
    let got = hook.wait_for(6).await;
    assert_eq!(got.len(), 6);
    for (d, kind) in got.iter().zip(&kinds) {
        assert!(signed(d));
        assert_eq!(d.json()["event"], *kind);
        assert_eq!(d.json()["test"], true);
        assert!(d.json()["text"]
            .as_str()
            .unwrap()
            .starts_with("ccs (test): "));
    }
    let calls = notified(&log, 6).await;
    assert_eq!(calls.len(), 6, "{calls:?}");
    // The banner shows them for a while.
    let (_, alerts) = manage(&r.daemon.url, Method::GET, "/alerts", None).await;
    assert_eq!(alerts["active"].as_array().unwrap().len(), 6, "{alerts}");

    // The words, and a receiver that refuses: exit 1, naming the channel.
    hook.refuse.store(usize::MAX / 2, Ordering::SeqCst);
    let (code, out, err) = tokio::task::block_in_place(|| ccs(&home, &["alerts", "test"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAILED webhook"), "{out}");
    assert!(out.contains("ok     desktop"), "{out}");
    assert!(
        err.contains("webhook did not take the test alerts"),
        "{err}"
    );
    assert!(
        !out.contains("secret-path"),
        "the hook's path (a token, for Slack) is not printed: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_after_a_run_that_did_not_stop_cleanly_is_an_alert() {
    let r = rig(&[(A, 100)]).await;
    let (_, alerts) = manage(&r.daemon.url, Method::GET, "/alerts", None).await;
    assert_eq!(
        alerts["active"],
        serde_json::json!([]),
        "a first start: {alerts}"
    );
    // A clean stop and start: nothing.
    let r = r.restarted(|_| {});
    let (_, alerts) = manage(&r.daemon.url, Method::GET, "/alerts", None).await;
    assert_eq!(
        alerts["active"],
        serde_json::json!([]),
        "after a clean stop: {alerts}"
    );
    // The marker a killed run leaves behind.
    let r = r.restarted(|paths| std::fs::write(paths.running_file(), "12345").unwrap());
    let (_, alerts) = manage(&r.daemon.url, Method::GET, "/alerts", None).await;
    assert_eq!(
        alerts["active"][0]["event"], "restarted_after_crash",
        "{alerts}"
    );
}
