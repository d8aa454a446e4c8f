//! What the dashboard stands on, over real HTTP: the typed management API (positions per
//! pool), usage read from every answer (equal to the simulator's own token counters, kept
//! across a restart), `/metrics` parsed as Prometheus text, the dashboard's login (secret,
//! one-time link, cookie, CSRF, origin), the live feed, the browser login of a new account,
//! and `ccs statusline`. The same pages in a real browser: `dashboard_browser.rs`.

mod common;

use std::time::Duration;

use ccs::api;
use ccs::client::Client;
use common::rig::*;
use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

const A: &str = "alice@example.com";
const B: &str = "bob@example.com";
const C: &str = "carol@example.com";

/// The typed client of the CLI, on the rig's daemon (blocking: off the runtime).
fn client(url: &str) -> Client {
    Client::new(url, SECRET)
}

fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("blocking call")
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_of_a_named_pool_gives_positions_in_that_pool() {
    let rig = rig(&[(A, 100), (B, 100), (C, 100)]).await;
    let url = rig.daemon.url.clone();
    let q = blocking(move || {
        let c = client(&url);
        c.set_pool("team", &[C.into(), A.into()]).unwrap();
        c.quota("team", None).unwrap()
    });
    let pos: Vec<(String, Option<usize>)> = q
        .accounts
        .iter()
        .map(|a| (a.email.clone(), a.position))
        .collect();
    assert_eq!(q.pool, "team");
    assert!(
        pos.contains(&(C.into(), Some(1))) && pos.contains(&(A.into(), Some(2))),
        "positions are the named pool's, not the default pool's: {pos:?}"
    );
    assert!(
        !pos.iter().any(|(e, _)| e == B),
        "an account outside the pool is not listed: {pos:?}"
    );
    let c = q.accounts.iter().find(|a| a.email == C).unwrap();
    assert_eq!(c.pools, vec!["claude".to_string(), "team".to_string()]);
}

async fn ask_gzip(url: &str, session: &str) -> u16 {
    http()
        .post(format!("{url}/v1/messages?beta=true"))
        .bearer_auth(CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("accept-encoding", "gzip")
        .header("x-claude-code-session-id", session)
        .json(&json!({"model":"claude-opus-4-1","max_tokens":16,"messages":[{"role":"user","content":"a longer question, to count more input tokens"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn sum(counters: &Value, field: &str) -> u64 {
    counters
        .as_object()
        .unwrap()
        .values()
        .map(|c| c[field].as_u64().unwrap_or(0))
        .sum()
}

async fn usage(url: &str) -> api::Usage {
    let (s, v) = manage(url, Method::GET, "/usage?span=24h", None).await;
    assert_eq!(s, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

/// Waits until the usage book has counted `n` answers (a stream's tail is counted when its
/// relay ends, just after the client read it).
async fn wait_counted(url: &str, n: u64) -> api::Usage {
    for _ in 0..400 {
        let u = usage(url).await;
        if u.total.requests >= n {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("usage never counted {n} answers: {:?}", usage(url).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_equals_the_simulators_token_counters_and_survives_a_restart() {
    let rig = rig(&[(A, 3), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    // Streams, whole answers, and gzip-compressed whole answers; four turns cross A's limit.
    for i in 0..4 {
        served_by(ask(&url, Some("conv-1"), false).await).await;
        let r = ask(&url, Some("conv-2"), true).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        assert_eq!(ask_gzip(&url, &format!("conv-g{i}")).await, 200);
    }
    let u = wait_counted(&url, 12).await;
    let c = counters(&rig.sim.url()).await;
    assert_eq!(u.total.requests, sum(&c, "messages_ok"), "{u:?} {c}");
    assert_eq!(u.total.input, sum(&c, "input_tokens"), "{u:?} {c}");
    assert_eq!(u.total.output, sum(&c, "output_tokens"), "{u:?} {c}");
    for (email, row) in [(A, &c[A]), (B, &c[B])] {
        let mine = u.by_account.iter().find(|r| r.name == email).unwrap();
        assert_eq!(mine.tokens.input, row["input_tokens"].as_u64().unwrap());
        assert_eq!(mine.tokens.output, row["output_tokens"].as_u64().unwrap());
    }
    let models: Vec<&str> = u.by_model.iter().map(|r| r.name.as_str()).collect();
    assert!(
        models.contains(&"claude-opus-4-1") && models.contains(&"claude-sonnet-4-5"),
        "{models:?}"
    );
    let hour_sum: u64 = u.hours.iter().map(|h| h.tokens.input).sum();
    assert_eq!(
        hour_sum, u.total.input,
        "the chart's hours add up to the total"
    );

    // A restart keeps the figures.
    let again = rig.restarted(|_| {});
    let after = usage(&again.daemon.url).await;
    assert_eq!(after.total, u.total, "the usage book survives a restart");
}

/// The sum of a metric's samples whose labels include every `(name, value)` of `with`.
fn metric(scrape: &prometheus_parse::Scrape, name: &str, with: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(url: &str, key: Option<&str>) -> (u16, String) {
    let mut rb = http().get(format!("{url}/metrics"));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text_that_matches_what_was_driven() {
    let rig = rig_with(&[(A, 2), (B, 100)], |c| {
        c.cliproxy.auth.metrics_key = Some("scraper-key-0123456789abcdef".into());
    })
    .await;
    let url = rig.daemon.url.clone();
    for _ in 0..3 {
        served_by(ask(&url, Some("conv-m"), false).await).await;
    }
    wait_counted(&url, 3).await;

    assert_eq!(scrape(&url, None).await.0, 401, "never public");
    assert_eq!(scrape(&url, Some("wrong")).await.0, 401);
    let (s, _) = manage(&url, Method::GET, "/accounts", None).await;
    assert_eq!(s, 200);
    let (s, _) = {
        let r = http()
            .get(format!("{url}/v0/management/accounts"))
            .bearer_auth("scraper-key-0123456789abcdef")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(s, 401, "the metrics key opens /metrics only");

    let (s, text) = scrape(&url, Some("scraper-key-0123456789abcdef")).await;
    assert_eq!(s, 200);
    let parsed =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    assert_eq!(
        metric(&parsed, "ccs_requests_total", &[("status", "200")]),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &parsed,
            "ccs_requests_total",
            &[("account", A), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        metric(&parsed, "ccs_hops_total", &[("reason", "limited")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &parsed,
            "ccs_account_state",
            &[("account", A), ("state", "fresh")]
        ),
        1.0
    );
    let c = counters(&rig.sim.url()).await;
    assert_eq!(
        metric(&parsed, "ccs_tokens_total", &[("kind", "input")]) as u64,
        sum(&c, "input_tokens")
    );
    assert_eq!(
        metric(
            &parsed,
            "ccs_quota_utilization",
            &[("account", A), ("window", "five_hour")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&parsed, "ccs_requests_in_flight", &[]), 0.0);
    assert!(
        metric(&parsed, "ccs_request_duration_seconds_count", &[]) >= 3.0,
        "{text}"
    );
    assert!(
        text.contains("ccs_store_flush_seconds"),
        "store write latency is reported: {text}"
    );
    // The session ids and secrets never appear.
    assert!(!text.contains("conv-m") && !text.contains(SECRET));
}

/// A client that keeps cookies, like the browser.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

async fn login(b: &reqwest::Client, url: &str, body: Value) -> reqwest::Response {
    b.post(format!("{url}/dashboard/login"))
        .header("origin", url)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_lets_in_only_the_secret_and_its_pages_only() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let b = browser();

    let page = b.get(format!("{url}/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("login-form") && !html.contains("app.js"),
        "the login page"
    );
    let js = b
        .get(format!("{url}/dashboard/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 401, "the app's script needs a session");
    let api = b
        .get(format!("{url}/v0/management/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);

    let wrong = login(&b, &url, json!({"secret": "guess"})).await;
    assert_eq!(wrong.status(), 401);
    let huge = login(&b, &url, json!({"secret": "x".repeat(64 << 10)})).await;
    assert!(
        huge.status().is_client_error() && huge.status() != 401,
        "a login body is small: {}",
        huge.status()
    );
    let foreign = b
        .post(format!("{url}/dashboard/login"))
        .header("origin", "http://evil.example")
        .json(&json!({"secret": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        foreign.status(),
        403,
        "a login from another page is refused"
    );

    let ok = login(&b, &url, json!({"secret": SECRET})).await;
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let csrf = ok.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!cookie.contains(&csrf), "the CSRF token is not the cookie");

    let html = b
        .get(format!("{url}/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("app.js"), "the app once logged in");
    let list = b
        .get(format!("{url}/v0/management/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200, "reads with the cookie");

    let pause = format!("{url}/v0/management/accounts/{A}/pause");
    let no_token = b.post(&pause).header("origin", &url).send().await.unwrap();
    assert_eq!(no_token.status(), 403, "a write without the CSRF token");
    let cross = b
        .post(&pause)
        .header("origin", "http://evil.example")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403, "a write from another origin");
    let good = b
        .post(&pause)
        .header("origin", &url)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(accounts(&url).await[0]["paused"], true);

    let out = b
        .post(format!("{url}/dashboard/logout"))
        .header("origin", &url)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let after = b
        .get(format!("{url}/v0/management/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "logged out");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_link_works_once() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let u = url.clone();
    let link = blocking(move || client(&u).login_link().unwrap());
    assert!(
        link.url.starts_with(&format!("{url}/dashboard#link=")),
        "{}",
        link.url
    );
    let token = link.url.split("#link=").nth(1).unwrap().to_string();
    let b = browser();
    assert_eq!(login(&b, &url, json!({"link": token})).await.status(), 200);
    let again = browser();
    let r = login(&again, &url, json!({"link": token})).await;
    assert_eq!(r.status(), 401, "used up");
    assert!(r.text().await.unwrap().contains("ccs config"));
}

/// Reads SSE `data:` lines from the live feed until `pred` holds for one of them.
async fn live_until(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    pred: impl Fn(&api::LiveEvent) -> bool,
) -> api::LiveEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(i) = buf.find("\n\n") {
            let event: String = buf.drain(..i + 2).collect();
            if let Some(data) = event.strip_prefix("data: ") {
                let ev: api::LiveEvent = serde_json::from_str(data.trim()).unwrap();
                if pred(&ev) {
                    return ev;
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the live feed sends the event")
            .expect("the feed is open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_feed_carries_requests_and_hops_as_they_happen() {
    let rig = rig(&[(A, 1), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    let r = http()
        .get(format!("{url}/v0/management/live"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    served_by(ask(&url, Some("conv-live"), false).await).await;
    let first = live_until(&mut stream, &mut buf, |e| {
        matches!(e, api::LiveEvent::Request(_))
    })
    .await;
    let api::LiveEvent::Request(req) = first else {
        unreachable!()
    };
    assert_eq!(req.account.as_deref(), Some(A));
    assert_eq!(req.status, 200);
    assert_eq!(req.session.as_deref(), Some("conv-live"));
    assert_eq!(req.client.as_deref(), Some("default"), "the key's name");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&req.at).is_ok(),
        "stamped: {:?}",
        req.at
    );
    assert!(req.tokens.is_some_and(|t| t.output > 0), "{req:?}");

    served_by(ask(&url, Some("conv-live"), false).await).await;
    let hop = live_until(&mut stream, &mut buf, |e| {
        matches!(e, api::LiveEvent::Hop(_))
    })
    .await;
    let api::LiveEvent::Hop(hop) = hop else {
        unreachable!()
    };
    assert_eq!((hop.from.as_str(), hop.to.as_str()), (A, B));
    assert_eq!(hop.reason, "limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_account_logs_in_through_the_daemons_own_callback() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let sim_url = rig.sim.url();
    add_sim_user(&sim_url, B).await;
    let (s, start) = manage(&url, Method::POST, "/login/start", None).await;
    assert_eq!(s, 200, "{start}");
    let authorize = start["url"].as_str().unwrap();
    let port = url.rsplit(':').next().unwrap();
    assert!(
        authorize.contains(&format!(
            "redirect_uri=http%3A%2F%2Flocalhost%3A{port}%2Fcallback"
        )),
        "{authorize}"
    );
    // The browser at the authority: it is sent back to the daemon.
    let at_authority = http().get(authorize).send().await.unwrap();
    assert_eq!(at_authority.status(), 302);
    let back = at_authority.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        back.starts_with(&format!("http://localhost:{port}/callback?")),
        "{back}"
    );
    let page = http().get(&back).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(
        text.contains(B) && text.contains("added to the pool"),
        "{text}"
    );
    wait_fresh(&url, 2).await;
    // The same answer again is stale: its state is used up.
    let replay = http().get(&back).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    // A forged state never reaches the authority.
    let forged = http()
        .get(format!("{url}/callback?code=x&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_line_names_the_serving_account_and_a_recent_hop() {
    let rig = rig(&[(A, 1), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    let port = url.rsplit(':').next().unwrap().to_string();
    // The CLI finds the daemon by the port config.yaml names.
    let yaml = std::fs::read_to_string(rig.paths.config_file()).unwrap();
    std::fs::write(
        rig.paths.config_file(),
        yaml.replace("port: 8317", &format!("port: {port}")),
    )
    .unwrap();
    let statusline = |input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ccs"))
            .arg("statusline")
            .env("CCS_HOME", &rig.paths.home)
            .env("NO_PROXY", "*")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let input = json!({"session_id": "conv-s", "model": {"id": "claude-sonnet-4-5"}}).to_string();
    let line = tokio::task::block_in_place(|| statusline(&input));
    assert_eq!(line, "ccs: new conversation");
    served_by(ask(&url, Some("conv-s"), false).await).await;
    let line = tokio::task::block_in_place(|| statusline(&input));
    assert!(line.starts_with("ccs: alice"), "{line}");
    assert!(line.contains("5h 100%"), "{line}");
    served_by(ask(&url, Some("conv-s"), false).await).await;
    let line = tokio::task::block_in_place(|| statusline(&input));
    assert!(
        line.starts_with("ccs: bob") && line.contains("moved from alice@example.com"),
        "{line}"
    );
    assert!(!line.contains(SECRET) && !line.contains(CLIENT_KEY));
    // Garbage on stdin is not an error.
    assert_eq!(
        tokio::task::block_in_place(|| statusline("not json")),
        "ccs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_dashboard_logins_are_slowed_like_wrong_secrets_and_the_owner_still_gets_in() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                login(&browser(), &url, json!({"secret": format!("guess-{i}")}))
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    // Meanwhile the owner logs in at once, more than once.
    for _ in 0..3 {
        assert_eq!(
            login(&browser(), &url, json!({"secret": SECRET}))
                .await
                .status(),
            200
        );
    }
    assert_throttled(
        guesses,
        "the guesses were throttled like the management API's",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ccs_config_gives_the_dashboard_and_a_link_that_logs_in_once() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    point_cli_at_daemon(&rig);
    let home = rig.paths.home.clone();
    let (code, out, err) = tokio::task::block_in_place(|| ccs(&home, &["config", "--json"]));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dashboard"], format!("{url}/dashboard"));
    let link = v["login_link"].as_str().unwrap();
    let token = link
        .split("#link=")
        .nth(1)
        .expect("the token is in the fragment");
    assert!(!out.contains(SECRET), "the secret is never printed");
    assert_eq!(
        login(&browser(), &url, json!({"link": token}))
            .await
            .status(),
        200
    );
    assert_eq!(
        login(&browser(), &url, json!({"link": token}))
            .await
            .status(),
        401
    );

    // `--print` (as on SSH or without a display) prints the address and a link.
    let (code, out, _) = tokio::task::block_in_place(|| ccs(&home, &["config", "--print"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("#link=") && out.contains("/dashboard"),
        "{out}"
    );

    let (code, out, _) = tokio::task::block_in_place(|| ccs(&home, &["config", "show", "--json"]));
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(shown["dashboard"].as_str().unwrap().ends_with("/dashboard"));
    assert!(!out.contains(SECRET));
}
