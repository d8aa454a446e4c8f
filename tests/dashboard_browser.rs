//! The dashboard in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver, from Rust with fantoccini) against the daemon and the simulator on
//! 127.0.0.1. No browser is downloaded: `cargo xtask test` installs the system packages
//! (`chromium`, `chromium-driver`). A screenshot of each page is kept under
//! `target/dashboard-screenshots/`.
//!
//! Waits here are bounds for a stuck test, never speed checks.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::rig::*;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{json, Value};

const A: &str = "alice@example.com";
const B: &str = "bob@example.com";
const C: &str = "carol@example.com";

/// The longest a test waits for the page to show something.
const PATIENCE: Duration = Duration::from_secs(10);

fn chromium() -> PathBuf {
    std::env::var_os("CCS_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn chromedriver() -> PathBuf {
    std::env::var_os("CCS_TEST_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// chromedriver on a free port, and a headless Chromium session through it. Both end when
/// this is dropped, a failing test's too: chromedriver leads a process group of its own, which
/// Chromium and its helpers join, and the whole group is killed.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        drop(self.client.take());
        // Killing chromedriver alone leaves Chromium running, orphaned.
        if let Some(group) = i32::try_from(self.driver.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl std::ops::Deref for Browser {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().unwrap()
    }
}

async fn browser() -> Browser {
    browser_with(&[]).await
}

/// A browser with extra Chromium flags.
async fn browser_with(extra: &[&str]) -> Browser {
    assert!(
        chromium().exists() && chromedriver().exists(),
        "Chromium and chromedriver are needed ({} and {}): `cargo xtask test` installs them \
         (apt-get install chromium chromium-driver)",
        chromium().display(),
        chromedriver().display()
    );
    let port = free_port();
    let mut driver = Command::new(chromedriver());
    driver
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut driver, 0);
    let driver = driver.spawn().expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium(),
            // The flags keep Chromium off the network (this machine has none): no background
            // fetches, no component updates, no sync.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,800",
                // No crash reporter: its handlers start sessions of their own, outside the
                // group the test ends.
                "--disable-crash-reporter", "--disable-breakpad",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }
    });
    let mut caps: serde_json::Map<String, Value> = serde_json::from_value(caps).unwrap();
    if let Some(args) = caps["goog:chromeOptions"]["args"].as_array_mut() {
        args.extend(extra.iter().map(|a| json!(a)));
    }
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                return Browser {
                    driver,
                    client: Some(client),
                    _profile: profile,
                }
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot start a Chromium session: {last:?}");
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Evaluates `script` (a function body) until it returns true.
async fn wait_true(b: &Client, script: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let v = b.execute(script, vec![]).await.expect("script runs");
        if v == Value::Bool(true) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let body = b.source().await.unwrap_or_default();
            panic!("the page never showed {what}; it shows:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eval(b: &Client, script: &str) -> Value {
    b.execute(script, vec![]).await.expect("script runs")
}

/// Clicks the element `at` finds.
async fn click(b: &Client, at: Locator<'_>) {
    b.find(at).await.unwrap().click().await.unwrap();
}

/// Logs in with the secret through the form.
async fn log_in(b: &Client, url: &str) {
    b.goto(&format!("{url}/dashboard")).await.unwrap();
    b.find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys(SECRET)
        .await
        .unwrap();
    click(b, Locator::Id("login-button")).await;
    wait_true(
        b,
        "return document.body.dataset.loaded === 'accounts'",
        "the Accounts page",
    )
    .await;
}

async fn open(b: &Client, url: &str, page: &str) {
    b.goto(&format!("{url}/dashboard#{page}")).await.unwrap();
    if page != "live" {
        wait_true(
            b,
            &format!("return document.body.dataset.loaded === '{page}'"),
            page,
        )
        .await;
    }
}

/// Drives one request of conversation `session` through the proxy; returns who served it.
async fn turn(url: &str, session: &str) -> String {
    served_by(ask(url, Some(session), false).await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wrong_secret_is_refused_and_the_right_one_logs_in() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let b = browser().await;
    b.goto(&format!("{url}/dashboard")).await.unwrap();
    screenshot(&b, "login").await;
    b.find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys("not the secret")
        .await
        .unwrap();
    click(&b, Locator::Id("login-button")).await;
    wait_true(
        &b,
        "return document.getElementById('login-error').textContent.includes('wrong management secret')",
        "the refusal",
    )
    .await;
    assert_eq!(
        eval(&b, "return document.cookie").await,
        json!(""),
        "no session cookie (and the real one is HttpOnly)"
    );
    log_in(&b, &url).await;
    assert_eq!(
        eval(&b, "return document.cookie").await,
        json!(""),
        "the session cookie is out of the page's reach"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_accounts_page_shows_each_accounts_state_and_bars() {
    let rig = rig(&[(A, 4), (B, 100), (C, 100)]).await;
    let url = rig.daemon.url.clone();
    turn(&url, "conv-a").await;
    turn(&url, "conv-a").await;
    let (_, dead) = manage(&url, Method::POST, &format!("/accounts/{C}/pause"), None).await;
    assert_eq!(dead["paused"], true);
    let b = browser().await;
    log_in(&b, &url).await;
    let cards = eval(
        &b,
        "return [...document.querySelectorAll('#accounts li.card')].map(c => ({
            email: c.dataset.account, state: c.dataset.state, paused: c.dataset.paused,
            position: c.dataset.position,
            five: c.querySelector('.bar-5h .track').dataset.utilization,
            drawn: c.querySelector('.bar-5h .fill').getBoundingClientRect().width /
                   c.querySelector('.bar-5h .track').getBoundingClientRect().width,
            week: c.querySelector('.bar-7d .track').dataset.utilization }))",
    )
    .await;
    let cards = cards.as_array().unwrap();
    assert_eq!(cards.len(), 3, "{cards:?}");
    let card = |e: &str| cards.iter().find(|c| c["email"] == e).unwrap();
    for e in [A, B, C] {
        assert_eq!(card(e)["state"], "fresh");
    }
    assert_eq!(card(A)["five"], "0.5", "2 of 4 requests: {cards:?}");
    assert_eq!(card(B)["five"], "0");
    let drawn = |e: &str| card(e)["drawn"].as_f64().unwrap();
    assert!(
        (drawn(A) - 0.5).abs() < 0.02 && drawn(B) < 0.02,
        "the bars are drawn to scale: {cards:?}"
    );
    assert_eq!(card(C)["paused"], "true");
    assert_eq!(card(A)["position"], "1");
    screenshot(&b, "accounts").await;
    // A phone's width.
    b.set_window_size(390, 844).await.unwrap();
    let overflow = eval(
        &b,
        "return document.documentElement.scrollWidth <= window.innerWidth",
    )
    .await;
    assert_eq!(overflow, json!(true), "nothing wider than a phone");
    screenshot(&b, "accounts-phone").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_accounts_page_says_when_the_pool_runs_dry() {
    let rig = rig_with(&[(A, 5), (B, 5)], |c| {
        c.cliproxy.runway_sample = ccs::config::Span(Duration::from_millis(200));
        c.oauth.usage_poll = ccs::config::Span(Duration::ZERO);
    })
    .await;
    let url = rig.daemon.url.clone();
    // The sampler sees the accounts, then four turns a minute apart: about six minutes left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..4 {
        assert_eq!(turn(&url, "conv-a").await, A);
        tokio::time::sleep(Duration::from_millis(500)).await;
        advance(&rig, 60);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let b = browser().await;
    log_in(&b, &url).await;
    wait_true(
        &b,
        "const r = document.getElementById('runway');
         return r.textContent.startsWith('Runway: at this pace the pool lasts until')
             && r.textContent.includes(\"alice@example.com's 5-hour window resets\")
             && r.dataset.state === 'soon'",
        "the runway, marked as under an hour",
    )
    .await;
    screenshot(&b, "accounts-runway").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_show_as_a_banner_on_every_page() {
    let rig = rig(&[(A, 100), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    let b = browser().await;
    log_in(&b, &url).await;
    assert_eq!(
        eval(&b, "return document.getElementById('alerts').hidden").await,
        json!(true),
        "nothing to tell: no banner"
    );
    // An account whose grant is gone.
    http()
        .post(format!("{}/sim/users/{B}/revoke", rig.sim.url()))
        .send()
        .await
        .unwrap();
    manage(&url, Method::POST, &format!("/accounts/{B}/refresh"), None).await;
    open(&b, &url, "usage").await;
    wait_true(
        &b,
        "const a = document.getElementById('alerts');
         return !a.hidden && [...a.querySelectorAll('li')].some(l =>
             l.dataset.event === 'account_dead' && l.dataset.subject === 'bob@example.com'
             && l.textContent.includes('ccs claude --auth --add'))",
        "the dead account's banner",
    )
    .await;
    screenshot(&b, "alerts-banner").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hop_shows_on_the_live_page_without_a_reload() {
    let rig = rig(&[(A, 1), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    let b = browser().await;
    log_in(&b, &url).await;
    open(&b, &url, "live").await;
    wait_true(
        &b,
        "return document.getElementById('feed').textContent.includes('live')",
        "the live feed open",
    )
    .await;
    eval(&b, "window.stillThisPage = true; return true").await;
    assert_eq!(turn(&url, "conv-live").await, A);
    assert_eq!(turn(&url, "conv-live").await, B);
    wait_true(
        &b,
        "const h = document.querySelector('#live tr[data-kind=hop]');
         return !!h && h.textContent.includes('alice@example.com → bob@example.com')",
        "the hop",
    )
    .await;
    assert_eq!(
        eval(&b, "return window.stillThisPage === true").await,
        json!(true),
        "pushed into the page, not reloaded"
    );
    let served = eval(
        &b,
        "return document.querySelectorAll('#live tr[data-kind=request]').length",
    )
    .await;
    assert_eq!(served, json!(2));
    screenshot(&b, "live").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pausing_on_the_page_sends_new_conversations_elsewhere() {
    let rig = rig(&[(A, 100), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    assert_eq!(turn(&url, "before").await, A);
    let b = browser().await;
    log_in(&b, &url).await;
    click(
        &b,
        Locator::Css(&format!("li[data-account='{A}'] button.pause")),
    )
    .await;
    wait_true(
        &b,
        &format!(
            "return document.querySelector(\"li[data-account='{A}']\").dataset.paused === 'true'"
        ),
        "the account paused",
    )
    .await;
    assert_eq!(
        turn(&url, "after").await,
        B,
        "the next new conversation avoids it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reordering_on_the_page_is_what_pool_show_prints() {
    let rig = rig(&[(A, 100), (B, 100), (C, 100)]).await;
    let url = rig.daemon.url.clone();
    let b = browser().await;
    log_in(&b, &url).await;
    click(
        &b,
        Locator::Css(&format!("li[data-account='{A}'] button.down")),
    )
    .await;
    wait_true(
        &b,
        &format!(
            "return document.querySelector(\"li[data-account='{A}']\").dataset.position === '2'"
        ),
        "the new order",
    )
    .await;
    let order = eval(
        &b,
        "return [...document.querySelectorAll('#accounts li.card')].map(c => c.dataset.account)",
    )
    .await;
    assert_eq!(order, json!([B, A, C]));
    // The CLI, on the same daemon.
    point_cli_at_daemon(&rig);
    let home = rig.paths.home.clone();
    let (code, out, err) = tokio::task::block_in_place(|| ccs(&home, &["pool", "show"]));
    assert_eq!(code, 0, "{err}");
    let listed: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            l.trim()
                .split_once(". ")
                .map(|(_, r)| r.split(' ').next().unwrap())
        })
        .collect();
    assert_eq!(listed, vec![B, A, C], "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_account_logs_in_through_the_page() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let sim_url = rig.sim.url();
    add_sim_user(&sim_url, B).await;
    let b = browser().await;
    log_in(&b, &url).await;
    let dashboard = b.window().await.unwrap();
    click(&b, Locator::Id("add-account")).await;
    // The authority's page opens in a new tab, and sends the browser back to the daemon's
    // /callback.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let tab = loop {
        let all = b.windows().await.unwrap();
        if let Some(t) = all.into_iter().find(|w| *w != dashboard) {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no tab opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    b.switch_to_window(tab).await.unwrap();
    wait_true(
        &b,
        "const o = document.getElementById('outcome'); return !!o && o.textContent.includes('bob@example.com')",
        "the login's outcome",
    )
    .await;
    let current = b.current_url().await.unwrap();
    assert!(
        current.as_str().contains("/callback?"),
        "came back through the callback: {current}"
    );
    screenshot(&b, "login-new-account").await;
    b.close_window().await.unwrap();
    b.switch_to_window(dashboard).await.unwrap();
    // The tab that started it shows the new account, told by the daemon (no reload).
    wait_true(
        &b,
        "return document.querySelectorAll('#accounts li.card').length === 2",
        "two accounts",
    )
    .await;
    wait_fresh(&url, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_usage_chart_adds_up_to_the_simulators_counters() {
    let rig = rig(&[(A, 3), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    for i in 0..3 {
        turn(&url, "conv-u").await;
        let r = ask(&url, Some(&format!("conv-s{i}")), true).await;
        r.bytes().await.unwrap();
    }
    let c = counters(&rig.sim.url()).await;
    let sum = |f: &str| -> u64 {
        c.as_object()
            .unwrap()
            .values()
            .map(|v| v[f].as_u64().unwrap_or(0))
            .sum()
    };
    let b = browser().await;
    log_in(&b, &url).await;
    open(&b, &url, "usage").await;
    wait_true(
        &b,
        &format!(
            "return document.getElementById('usage-total').dataset.requests === '{}'",
            sum("messages_ok")
        ),
        "every answer counted",
    )
    .await;
    let shown = eval(
        &b,
        "const t = document.getElementById('usage-total').dataset;
         const bars = [...document.querySelectorAll('#usage-chart rect')].length;
         return {input: t.input, output: t.output, bars}",
    )
    .await;
    assert_eq!(shown["input"], json!(sum("input_tokens").to_string()));
    assert_eq!(shown["output"], json!(sum("output_tokens").to_string()));
    assert!(
        shown["bars"].as_u64().unwrap() >= 2,
        "the chart has bars: {shown}"
    );
    let rows = eval(
        &b,
        "return [...document.querySelectorAll('#usage-accounts tbody tr')].map(r => r.dataset.name)",
    )
    .await;
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let clients = eval(
        &b,
        "return [...document.querySelectorAll('#usage-clients tbody tr')].map(r => r.dataset.name)",
    )
    .await;
    assert_eq!(clients, json!(["default"]), "attributed to the key's name");
    screenshot(&b, "usage").await;
    let (s, v) = manage(&url, Method::POST, &format!("/accounts/{B}/refresh"), None).await;
    assert_eq!(s, 200, "{v}");
    open(&b, &url, "health").await;
    let health = eval(&b, "return document.getElementById('health').textContent").await;
    assert!(
        health.as_str().unwrap().contains(env!("CARGO_PKG_VERSION")),
        "{health}"
    );
    assert!(
        health
            .as_str()
            .unwrap()
            .contains("sled (this daemon alone)"),
        "the health page names the store backend: {health}"
    );
    let refreshed = eval(
        &b,
        "return [...document.querySelectorAll('#refreshes tbody tr')].map(r => r.dataset.outcome + ' ' + r.cells[1].textContent)",
    )
    .await;
    assert!(
        refreshed
            .as_array()
            .unwrap()
            .contains(&json!(format!("ok {B}"))),
        "the forced refresh is in the history: {refreshed}"
    );
    screenshot(&b, "health").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pages_follow_a_dark_system_theme() {
    let rig = rig(&[(A, 4), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    turn(&url, "conv-d").await;
    let light = browser().await;
    log_in(&light, &url).await;
    let dark = browser_with(&[
        "--force-dark-mode",
        "--blink-settings=preferredColorScheme=0",
    ])
    .await;
    log_in(&dark, &url).await;
    let background = "return getComputedStyle(document.body).backgroundColor";
    let (l, d) = (
        eval(&light, background).await,
        eval(&dark, background).await,
    );
    assert_ne!(l, d, "the theme follows prefers-color-scheme");
    assert_eq!(
        eval(
            &dark,
            "return matchMedia('(prefers-color-scheme: dark)').matches"
        )
        .await,
        json!(true)
    );
    screenshot(&dark, "accounts-dark").await;
    for page in ["usage", "live", "health"] {
        open(&dark, &url, page).await;
        screenshot(&dark, &format!("{page}-dark")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_from_another_origin_is_refused() {
    let rig = rig(&[(A, 100)]).await;
    let url = rig.daemon.url.clone();
    let b = browser().await;
    log_in(&b, &url).await;
    // Another origin on the same machine (the simulator's port): same site, so the browser
    // sends the session cookie along; the daemon must refuse on the Origin.
    b.goto(&format!("{}/sim/state", rig.sim.url()))
        .await
        .unwrap();
    let tried = b
        .execute_async(
            &format!(
                "const done = arguments[0];
                 Promise.allSettled([
                   fetch('{url}/v0/management/accounts/{A}/pause', {{method: 'POST', credentials: 'include', mode: 'no-cors'}}),
                   fetch('{url}/dashboard/logout', {{method: 'POST', credentials: 'include', mode: 'no-cors'}}),
                 ]).then(() => done(true));"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tried, json!(true));
    assert_eq!(accounts(&url).await[0]["paused"], false, "not paused");
    // Still logged in: the logout from the other page was refused too.
    open(&b, &url, "accounts").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_accounts_page_works_from_the_keyboard() {
    let rig = rig(&[(A, 100), (B, 100)]).await;
    let url = rig.daemon.url.clone();
    let b = browser().await;
    log_in(&b, &url).await;
    let target = format!("li[data-account='{B}'] button.pause");
    let mut reached = false;
    for _ in 0..60 {
        let here = eval(
            &b,
            &format!("return document.activeElement.matches(\"{target}\")"),
        )
        .await;
        if here == json!(true) {
            reached = true;
            break;
        }
        b.active_element()
            .await
            .unwrap()
            .send_keys(&fantoccini::key::Key::Tab.to_string())
            .await
            .unwrap();
    }
    assert!(reached, "Tab reaches the pause button of {B}");
    let focus_ring = eval(
        &b,
        "return getComputedStyle(document.activeElement).outlineStyle",
    )
    .await;
    assert_ne!(focus_ring, json!("none"), "the focused control shows it");
    b.active_element()
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .unwrap();
    wait_true(
        &b,
        &format!(
            "return document.querySelector(\"li[data-account='{B}']\").dataset.paused === 'true'"
        ),
        "the account paused from the keyboard",
    )
    .await;
}
