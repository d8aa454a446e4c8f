//! `ccs demo`: the whole product on the embedded simulator with nothing set up. A temporary
//! CCS_HOME, a simulator with three accounts whose 5-hour budgets are small, the daemon, three
//! logins through the headless OAuth code path, and one conversation that crosses account 1's
//! limit and carries on with account 2. Leaves nothing running and nothing behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::accounts::finish;
use super::pool::print_quota;
use crate::client::Client;
use crate::config::{Config, Paths, Span};
use crate::daemon::DaemonHandle;
use crate::oauth::login::{parse_paste, Attempt};
use crate::sim::scenario::{Scenario, User};
use crate::sim::{fresh_seed, SimHandle};

const TURNS: usize = 6;
const BUDGET: u64 = 3;
const KEY: &str = "ccs-demo-client-key";
const SECRET: &str = "ccs-demo-management-secret";

/// Removes the demo's CCS_HOME however the demo ends.
struct TempHome(PathBuf);

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn blocking() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Plays the person at the browser: opens the authorize URL and reads the `CODE#STATE` the
/// page shows, exactly what a headless login pastes.
fn paste_from_page(url: &str) -> Result<String> {
    let page = blocking()?.get(url).send()?.text()?;
    let start = page
        .find("<pre id=\"code\">")
        .context("the authorize page shows no code")?
        + 15;
    let end = page[start..]
        .find("</pre>")
        .context("the authorize page shows no code")?;
    Ok(page[start..start + end].to_string())
}

pub fn demo(with_claude: bool, keep: bool) -> Result<()> {
    let home = std::env::temp_dir().join(format!(
        "ccs-demo-{}-{:x}",
        std::process::id(),
        fresh_seed()
    ));
    crate::fsutil::private_dir(&home)?;
    let _cleanup = TempHome(home.clone());
    let paths = Paths::at(&home);

    let scenario = Scenario {
        users: ["alice@example.com", "bob@example.com", "carol@example.com"]
            .into_iter()
            .map(|e| User {
                five_hour: BUDGET,
                seven_day: 100,
                ..User::new(e)
            })
            .collect(),
        stream_events: 4,
        // The demo's daemon asks about benched accounts every few seconds (`DEMO_USAGE_POLL`).
        usage_min_interval: Span(Duration::from_secs(2)),
        ..Scenario::default()
    };
    let sim = SimHandle::start(&scenario, 0, false, fresh_seed())
        .context("cannot start the simulator")?;
    let s = sim.url();
    outln!("ccs demo: everything below runs on this machine against the embedded simulator ({s}).");
    outln!(
        "Three accounts, each with a 5-hour budget of {BUDGET} requests. CCS_HOME is {}.\n",
        home.display()
    );

    let mut config = Config::default();
    config.cliproxy.auth.api_key = Some(KEY.into());
    config.cliproxy.auth.management_secret = Some(SECRET.into());
    config.upstream.api_base = s.clone();
    config.oauth.authorize_url = format!("{s}/oauth/authorize");
    config.oauth.token_url = format!("{s}/v1/oauth/token");
    config.oauth.profile_url = format!("{s}/api/oauth/profile");
    config.oauth.usage_url = format!("{s}/api/oauth/usage");
    config.oauth.usage_poll = Span(DEMO_USAGE_POLL);
    config.oauth.callback_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let daemon = DaemonHandle::start(paths, config.clone(), Arc::new(ccs_actors::SystemClock))?;
    let client = Client::new(&daemon.url, SECRET);
    outln!("daemon  listening on {}", daemon.url);

    for _ in 0..3 {
        let attempt = Attempt::new(&config)?;
        let pasted = paste_from_page(&attempt.url)?;
        let answer = parse_paste(&pasted).context("the page's code does not parse")?;
        let (email, reply) = finish(&config, &client, &attempt, &answer)?;
        outln!(
            "login   {email} (nickname {}), headless flow: pasted CODE#STATE",
            reply.account.map(|a| a.nickname).unwrap_or_default()
        );
    }
    outln!();

    let served = if with_claude {
        claude_turns(&daemon.url, &home)?
    } else {
        api_turns(&daemon.url)?
    };
    let hops = client.events()?;
    if !served.windows(2).any(|w| w[0] != w[1]) {
        bail!("the conversation never changed account: the demo did not show a failover");
    }
    for h in &hops {
        outln!(
            "hop     session {} moved {} → {} ({})",
            h.session,
            h.from,
            h.to,
            h.reason
        );
    }
    outln!();
    print_quota(&client, "claude", false)?;
    if keep {
        keep_running(&home, &daemon.url, &s, &client)?;
    }
    daemon.stop()?;
    sim.stop();
    outln!("\nDone: nothing is left running and the temporary CCS_HOME is removed.");
    outln!("Next: `ccs claude --auth` logs in a real account; `ccs claude` starts Claude Code on the pool.");
    Ok(())
}

/// `--keep`: writes a config.yaml so `CCS_HOME=… ccs config` (and every other command) finds
/// this daemon, prints the dashboard's login link, and drives a conversation every few seconds
/// (raising the simulated budgets when every account is spent) until Ctrl-C.
fn keep_running(home: &std::path::Path, url: &str, sim: &str, client: &Client) -> Result<()> {
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .context("the daemon's address has no port")?;
    let yaml = format!(
        "# Written by `ccs demo --keep` for its own daemon and simulator.\n\
         cliproxy:\n  port: {port}\n  auth:\n    api_key: {KEY}\n    management_secret: {SECRET}\n\
         upstream:\n  api_base: {sim}\n\
         oauth:\n  authorize_url: {sim}/oauth/authorize\n  token_url: {sim}/v1/oauth/token\n  \
         profile_url: {sim}/api/oauth/profile\n  usage_url: {sim}/api/oauth/usage\n  \
         usage_poll: {}s\n",
        DEMO_USAGE_POLL.as_secs()
    );
    crate::fsutil::write_private(&Paths::at(home).config_file(), yaml.as_bytes())?;
    let link = client.login_link()?;
    outln!("\nThe daemon and the simulator keep running (Ctrl-C ends them and removes the home).");
    outln!(
        "Dashboard, logged in (the link works once, within 2 minutes):\n\n  {}\n",
        link.url
    );
    outln!(
        "Or from another terminal: CCS_HOME={} ccs config",
        home.display()
    );
    outln!(
        "A turn goes through the proxy every {} s; watch the Live page for hops.\n",
        KEEP_EVERY.as_secs()
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (u, s, flag) = (url.to_string(), sim.to_string(), stop.clone());
    let traffic = std::thread::spawn(move || keep_traffic(&u, &s, &flag));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tokio::signal::ctrl_c())?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = traffic.join();
    outln!();
    Ok(())
}

/// How often the demo's daemon asks about a benched account: its top-ups show within seconds.
const DEMO_USAGE_POLL: Duration = Duration::from_secs(5);

/// How often `--keep` sends a turn.
const KEEP_EVERY: Duration = Duration::from_secs(5);

fn keep_traffic(url: &str, sim: &str, stop: &std::sync::atomic::AtomicBool) {
    let Ok(http) = blocking() else { return };
    let session = format!("demo-live-{:08x}", fresh_seed() as u32);
    let mut budget = BUDGET;
    let mut last: Option<String> = None;
    let mut waiting = false;
    let mut turn = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        turn += 1;
        if turn % (KEEP_EVERY.as_millis() / 250) as u64 != 0 {
            continue;
        }
        let r = http
            .post(format!("{url}/v1/messages?beta=true"))
            .bearer_auth(KEY)
            .header("x-claude-code-session-id", &session)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                "messages": [{"role": "user", "content": "keep going"}]}))
            .send();
        let Ok(r) = r else { continue };
        if r.status().as_u16() == 429 {
            if waiting {
                // Topped up already: the daemon notices at its next question.
                continue;
            }
            // Every account is spent: the simulated windows get more room, and the daemon
            // finds out from the usage endpoint, hours before the announced resets.
            waiting = true;
            budget += BUDGET;
            for e in ["alice@example.com", "bob@example.com", "carol@example.com"] {
                let _ = http
                    .post(format!("{sim}/sim/users/{e}/budget"))
                    .json(&json!({"five_hour": budget, "seven_day": budget.max(100)}))
                    .send();
            }
            outln!(
                "all three accounts are spent: the simulator gives each {BUDGET} more requests \
                 (the daemon asks the usage endpoint every {} s to notice)",
                DEMO_USAGE_POLL.as_secs()
            );
            continue;
        }
        if r.status().is_success() && std::mem::take(&mut waiting) {
            outln!("back    the daemon noticed the top-up before the announced resets");
        }
        let text = r
            .json::<Value>()
            .ok()
            .and_then(|b| b["content"][0]["text"].as_str().map(str::to_string))
            .unwrap_or_default();
        let who = account_of(&text);
        if last.as_ref().is_some_and(|l| *l != who) {
            outln!("hop     the conversation moved to {who}");
        }
        last = Some(who);
    }
}

/// The conversation as raw Messages API calls with a fixed session id.
fn api_turns(url: &str) -> Result<Vec<String>> {
    let http = blocking()?;
    let session = format!("demo-{:016x}", fresh_seed());
    let mut messages: Vec<Value> = Vec::new();
    let mut served = Vec::new();
    for turn in 1..=TURNS {
        messages.push(json!({"role": "user", "content": format!("turn {turn}: keep going")}));
        let r = http
            .post(format!("{url}/v1/messages?beta=true"))
            .bearer_auth(KEY)
            .header("x-claude-code-session-id", &session)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages}))
            .send()?;
        let status = r.status();
        let body: Value = r.json()?;
        if !status.is_success() {
            bail!("turn {turn} failed with {status}: {body}");
        }
        let text = body["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let who = account_of(&text);
        if served.last().is_some_and(|prev: &String| *prev != who) {
            outln!(
                "        ↪ {} is out of 5-hour quota; the conversation continues on {who}",
                served.last().map(String::as_str).unwrap_or("")
            );
        }
        outln!("turn {turn}  served by {who}");
        messages.push(json!({"role": "assistant", "content": text}));
        served.push(who);
    }
    Ok(served)
}

fn account_of(text: &str) -> String {
    text.strip_prefix("Served by ")
        .and_then(|r| {
            r.split_once(". ")
                .map(|(e, _)| e)
                .or_else(|| r.strip_suffix('.'))
        })
        .unwrap_or(text)
        .trim_end_matches('.')
        .to_string()
}

/// The conversation through the real Claude Code CLI: `-p` with one session id, resumed.
fn claude_turns(url: &str, home: &std::path::Path) -> Result<Vec<String>> {
    let claude =
        crate::claude_code::find_claude(&Config::load(&Paths::from_env()?).unwrap_or_default())?;
    let session = uuid_v4();
    let claude_home = home.join("claude-home");
    std::fs::create_dir_all(&claude_home)?;
    let mut served = Vec::new();
    for turn in 1..=TURNS {
        let mut cmd = std::process::Command::new(&claude);
        cmd.arg("-p").arg(format!("turn {turn}: keep going"));
        if turn == 1 {
            cmd.args(["--session-id", &session]);
        } else {
            cmd.args(["--resume", &session]);
        }
        let out = cmd
            .env("ANTHROPIC_BASE_URL", url)
            .env("ANTHROPIC_AUTH_TOKEN", KEY)
            .env_remove("ANTHROPIC_API_KEY")
            .env("HOME", &claude_home)
            .env("DISABLE_TELEMETRY", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", claude.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "claude failed on turn {turn}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let who = account_of(&text);
        if served.last().is_some_and(|prev: &String| *prev != who) {
            outln!(
                "        ↪ {} is out of 5-hour quota; the conversation continues on {who}",
                served.last().map(String::as_str).unwrap_or("")
            );
        }
        outln!(
            "turn {turn}  claude -p … {}  served by {who}",
            if turn == 1 {
                "--session-id"
            } else {
                "--resume"
            }
        );
        served.push(who);
    }
    Ok(served)
}

/// A random UUID (version 4) for Claude Code's `--session-id`.
pub fn uuid_v4() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    crate::sim::uuid_from(b)
}
