//! Several daemons, one pool (specs/shared-store.md): three real `ccs daemon run` processes on
//! one real `redis-server`, the simulator as the authority and the Messages API, requests
//! spread round-robin over the daemons. Checks S1 (one refresh call per token generation over
//! all daemons: the simulator counts calls and refuses replays), S3 (a conversation stays on
//! its account whichever daemon answers), S4 (a bench reaches every daemon), the loss of a
//! daemon holding a refresh lease (SIGKILL) and a 10-second Redis outage under load (S5).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ccs::sim::scenario::{FaultKind, FaultSpec};
use common::process::{wait_ready, DaemonProcess};
use common::redis::RedisServer;
use common::*;
use reqwest::Method;
use serde_json::Value;

struct Member {
    url: String,
    home: std::path::PathBuf,
    _dir: tempfile::TempDir,
    process: Option<DaemonProcess>,
}

struct Pool {
    redis: RedisServer,
    sim: ccs::sim::SimHandle,
    daemons: Vec<Member>,
}

/// A simulator with `emails` (tokens living `token_ttl`), a Redis, and `n` daemons sharing
/// one pool (refresh lease `lease`, refresh timeout below it); the accounts are logged in
/// through the first daemon and the others pick them up from Redis.
fn pool(emails: &[&str], n: usize, token_ttl: Duration, lease: Duration) -> Pool {
    let scenario = ccs::sim::Scenario {
        stream_events: 4,
        ..ccs::sim::Scenario::roomy(emails, token_ttl)
    };
    let sim = sim(&scenario, false);
    let redis = RedisServer::start();
    let timeout = lease
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_secs(1));
    let mut daemons = Vec::new();
    for _ in 0..n {
        let port = free_port();
        let (home, paths, _) = home_with_port(&sim.url(), port);
        let yaml = std::fs::read_to_string(paths.config_file())
            .unwrap()
            .replace(
                "oauth:\n",
                &format!("oauth:\n  refresh_timeout: {}ms\n", timeout.as_millis()),
            );
        std::fs::write(paths.config_file(), yaml).unwrap();
        config_line(
            &paths,
            &format!(
                "store:\n  backend: redis\n  redis:\n    url: {}\n    prefix: pool\n    lease: {}ms",
                redis.url(),
                lease.as_millis()
            ),
        );
        let url = format!("http://127.0.0.1:{port}");
        let process = DaemonProcess::start(&paths.home, None);
        assert!(
            wait_ready(&url),
            "daemon {url} did not start:\n{}",
            daemon_log(&paths)
        );
        daemons.push(Member {
            url,
            home: paths.home.clone(),
            _dir: home,
            process: Some(process),
        });
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    for e in emails {
        rt.block_on(add_account(&sim.url(), &daemons[0].url, e));
    }
    let p = Pool {
        redis,
        sim,
        daemons,
    };
    for d in &p.daemons {
        p.wait(
            &format!("{} to know every account", d.url),
            Duration::from_secs(10),
            || accounts(&d.url).len() == emails.len(),
        );
    }
    p
}

impl Pool {
    /// Waits until `done`, `within` being the bound of a stuck run (a panic), not a speed
    /// check; returns how long it took, for the test's printed report only.
    fn wait(&self, what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < within {
            if done() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("waited {within:?} for {what}");
    }

    fn live(&self) -> impl Iterator<Item = &Member> {
        self.daemons.iter().filter(|d| d.process.is_some())
    }
}

fn get(url: &str, path: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (s, v) = rt.block_on(manage(url, Method::GET, path, None));
    assert_eq!(s, 200, "{path}: {v}");
    v
}

/// email → the account's view, as a daemon lists it.
fn accounts(url: &str) -> HashMap<String, Value> {
    get(url, "/accounts")["accounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a["email"].as_str().unwrap_or_default().to_string(), a))
        .collect()
}

/// One request of `session` on `url`: who served it (or the status when not 200).
fn ask_on(rt: &tokio::runtime::Runtime, url: &str, session: &str) -> Result<String, String> {
    rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(10), try_ask(url, Some(session), false))
            .await
        {
            Ok(Ok(r)) if r.status() == 200 => Ok(served_by(r).await),
            Ok(Ok(r)) => Err(format!(
                "{} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 10 s".into()),
        }
    })
}

/// S1 for `email`: every refresh call answered, no replay, one generation per call.
fn one_refresh_per_generation(sim: &ccs::sim::SimHandle, email: &str) -> (u64, u64) {
    let counters = sim
        .model
        .counters()
        .into_iter()
        .find(|(e, _)| e == email)
        .unwrap()
        .1;
    let lineage = sim.model.lineage(email).unwrap();
    assert_eq!(
        counters.refresh_replays, 0,
        "{email}: a refresh token was replayed"
    );
    assert_eq!(
        lineage.issued,
        1 + counters.refresh_ok,
        "{email}: generations issued vs refreshes answered"
    );
    (counters.refresh_calls, counters.refresh_ok)
}

#[test]
fn three_daemons_keep_conversations_on_their_accounts_and_refresh_once_per_generation() {
    let emails = ["a@example.com", "b@example.com", "c@example.com"];
    // 6-second tokens: refreshed every 3 s, so the run crosses several generations.
    let p = pool(&emails, 3, Duration::from_secs(6), Duration::from_secs(4));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sessions: Vec<String> = (0..12).map(|i| format!("conv-{i}")).collect();
    let mut owner: HashMap<String, String> = HashMap::new();
    // A conversation that starts with a failure on the first account ends up on another one
    // on daemon 0; daemons 1 and 2 would put a new conversation on the first account, so they
    // keep it only if they learn daemon 0's binding.
    p.sim.model.add_fault(FaultSpec {
        kind: FaultKind::CloseBeforeHeaders,
        account: Some(emails[0].to_string()),
        count: Some(1),
        ms: None,
        after_events: None,
    });
    let detour = ask_on(&rt, &p.daemons[0].url, "detour").expect("served after the failure");
    assert_ne!(detour, emails[0]);
    owner.insert("detour".into(), detour);
    sessions.push("detour".into());
    // Requests round-robin over the daemons for 14 s of 6-second tokens (a load phase of the
    // scenario, not a speed check): several generations are crossed.
    let (mut n, started) = (0usize, Instant::now());
    while started.elapsed() < Duration::from_secs(14) {
        for s in &sessions {
            let d = &p.daemons[n % 3];
            n += 1;
            let who = ask_on(&rt, &d.url, s).unwrap_or_else(|e| panic!("{s} on {}: {e}", d.url));
            let first = owner.entry(s.clone()).or_insert_with(|| who.clone());
            assert_eq!(
                *first, who,
                "{s} moved from {first} to {who} on {} (S3)",
                d.url
            );
        }
    }
    let mut calls = 0;
    for e in emails {
        let (c, ok) = one_refresh_per_generation(&p.sim, e);
        assert!(ok >= 3, "{e}: only {ok} refreshes of 6-second tokens");
        assert_eq!(c, ok, "{e}: a refresh call was not answered");
        calls += c;
    }
    println!("S1/S3: {n} requests over 3 daemons, {} sessions, {calls} refresh calls, each its own generation", sessions.len());

    // S4: a bench on one daemon reaches the others.
    let victim = owner["conv-0"].clone();
    p.sim.model.set_budget(&victim, Some(0), None);
    let moved = ask_on(&rt, &p.daemons[0].url, "conv-0").expect("moved to another account");
    assert_ne!(moved, victim);
    let benched = Instant::now();
    for d in &p.daemons[1..] {
        p.wait(
            &format!("{victim}'s bench to reach {}", d.url),
            Duration::from_secs(5),
            || !accounts(&d.url)[&victim]["cooldown_until"].is_null(),
        );
    }
    println!(
        "S4: the bench reached both other daemons {:?} after the 429",
        benched.elapsed()
    );
    // And the conversation that moved stays where it went, on every daemon.
    for d in &p.daemons {
        assert_eq!(
            ask_on(&rt, &d.url, "conv-0").unwrap(),
            moved,
            "conv-0 on {}",
            d.url
        );
    }
    // A pause and a new drain order made on one daemon reach the others.
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (s, v) = rt2.block_on(manage(
        &p.daemons[1].url,
        Method::POST,
        &format!("/accounts/{}/pause", emails[2]),
        None,
    ));
    assert_eq!(s, 200, "{v}");
    let order = serde_json::json!({"accounts": [emails[2], emails[1], emails[0]]});
    let (s, v) = rt2.block_on(manage(
        &p.daemons[1].url,
        Method::PUT,
        "/pools/claude",
        Some(order),
    ));
    assert_eq!(s, 200, "{v}");
    for d in [&p.daemons[0], &p.daemons[2]] {
        p.wait(
            &format!("the pause and the order to reach {}", d.url),
            Duration::from_secs(5),
            || {
                let pools = get(&d.url, "/pools");
                accounts(&d.url)[emails[2]]["paused"] == true
                    && pools.to_string().contains(&format!(
                        "[\"{}\",\"{}\",\"{}\"]",
                        emails[2], emails[1], emails[0]
                    ))
            },
        );
    }
    // An account removed on one daemon leaves the pool on all of them.
    let (s, v) = rt2.block_on(manage(
        &p.daemons[1].url,
        Method::DELETE,
        &format!("/accounts/{}", emails[2]),
        None,
    ));
    assert_eq!(s, 200, "{v}");
    for d in &p.daemons {
        p.wait(
            &format!("the removal to reach {}", d.url),
            Duration::from_secs(5),
            || !accounts(&d.url).contains_key(emails[2]),
        );
    }
    // Logged in again (on another daemon), it is the pool's again, everywhere.
    rt2.block_on(add_account(&p.sim.url(), &p.daemons[2].url, emails[2]));
    for d in &p.daemons {
        p.wait(
            &format!("the new login to reach {}", d.url),
            Duration::from_secs(5),
            || accounts(&d.url).contains_key(emails[2]),
        );
    }
    // Every daemon shows the pool's usage: what all three served (the authority's count).
    let served: u64 = p
        .sim
        .model
        .counters()
        .iter()
        .map(|(_, c)| c.messages_ok)
        .sum();
    for d in &p.daemons {
        p.wait(
            &format!("{} to count the pool's {served} requests", d.url),
            Duration::from_secs(12),
            || get(&d.url, "/usage?span=24h")["total"]["requests"] == served,
        );
    }
    // Status shows the backend and the three peers.
    let status = get(&p.daemons[2].url, "/status");
    assert_eq!(status["store"]["backend"], "redis");
    assert_eq!(
        status["store"]["peers"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    drop(p.redis);
}

#[test]
fn a_daemon_killed_holding_the_refresh_lease_loses_no_account() {
    let email = "a@example.com";
    // The first refresh call (added once the account is logged in) hangs 20 s and then fails
    // (the authority rotates nothing): the daemon that sent it holds the lease meanwhile, and
    // is killed.
    let hang = vec![
        FaultSpec {
            kind: FaultKind::TokenSlow,
            account: None,
            count: Some(1),
            ms: Some(20_000),
            after_events: None,
        },
        FaultSpec {
            kind: FaultKind::TokenDown,
            account: None,
            count: Some(1),
            ms: None,
            after_events: None,
        },
    ];
    let lease = Duration::from_secs(4);
    let mut p = pool(&[email], 3, Duration::from_secs(20), lease);
    for f in hang {
        p.sim.model.add_fault(f);
    }
    // Who takes the lease at the refresh point (10 s in)?
    let mut holder = String::new();
    p.wait(
        "a daemon to take the refresh lease",
        Duration::from_secs(20),
        || {
            let leases = get(&p.daemons[0].url, "/status")["store"]["leases"].clone();
            holder = leases[0]["daemon"].as_str().unwrap_or_default().to_string();
            !holder.is_empty()
        },
    );
    let victim = p
        .daemons
        .iter()
        .position(|d| get(&d.url, "/status")["store"]["daemon"] == holder.as_str())
        .expect("the holder is one of the three");
    p.daemons[victim].process.take().unwrap().kill();
    let killed = Instant::now();
    // Another daemon refreshes once the lease is over; no account is lost.
    p.wait("another daemon to refresh", lease * 4, || {
        p.sim.model.lineage(email).unwrap().issued == 2
    });
    let took_over = killed.elapsed();
    let (calls, ok) = one_refresh_per_generation(&p.sim, email);
    assert_eq!(
        (calls, ok),
        (2, 1),
        "the killed daemon's call, then one that was answered"
    );
    assert!(
        p.sim.model.grant_alive(email),
        "the account's grant survives"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    for d in p.live() {
        p.wait(
            &format!("{} to hold the new token", d.url),
            Duration::from_secs(5),
            || accounts(&d.url)[email]["state"] == "fresh",
        );
        assert_eq!(ask_on(&rt, &d.url, "after").unwrap(), email);
    }
    println!("kill -9 of the lease holder: another daemon refreshed {took_over:?} after the kill (lease {lease:?}); 0 accounts lost");
}

#[test]
fn redis_down_for_10_s_under_load_fails_no_request_and_refreshes_nothing() {
    let emails = ["a@example.com", "b@example.com"];
    // 30-second tokens: due for refresh 15 s in, in the middle of the outage.
    let mut p = pool(&emails, 3, Duration::from_secs(30), Duration::from_secs(4));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let issued_at = Instant::now();
    let calls = |p: &Pool| -> u64 {
        p.sim
            .model
            .counters()
            .iter()
            .map(|(_, c)| c.refresh_calls)
            .sum()
    };
    let (mut served, mut n) = (0u64, 0usize);
    // The scenario is laid out on the tokens' clock (not a speed check): load until 7 s after
    // issue, Redis away from 7 s to 17 s (the refresh falls due at 15 s, inside the outage),
    // load again until 29 s.
    let mut load = |p: &Pool, until: Duration| {
        while issued_at.elapsed() < until {
            let d = &p.daemons[n % 3];
            let s = format!("conv-{}", n % 8);
            n += 1;
            ask_on(&rt, &d.url, &s).unwrap_or_else(|e| panic!("{s} on {}: {e}", d.url));
            served += 1;
        }
    };
    load(&p, Duration::from_secs(7));
    p.redis.stop();
    let before = calls(&p);
    load(&p, Duration::from_secs(17));
    let during = calls(&p) - before;
    let status = get(&p.daemons[0].url, "/status");
    assert_eq!(
        status["store"]["reachable"], false,
        "status tells of the outage: {status}"
    );
    p.redis.resume();
    // Back: the refresh that fell due meanwhile happens (once per account), and every daemon
    // ends on the same token.
    load(&p, Duration::from_secs(29));
    p.wait(
        "a refresh of every account after the outage",
        Duration::from_secs(20),
        || {
            emails
                .iter()
                .all(|e| p.sim.model.lineage(e).unwrap().issued >= 2)
        },
    );
    for e in emails {
        one_refresh_per_generation(&p.sim, e);
        p.wait(
            &format!("the daemons to agree on {e}'s token"),
            Duration::from_secs(5),
            || {
                let seen: Vec<Value> = p
                    .live()
                    .map(|d| accounts(&d.url)[e]["expires_at"].clone())
                    .collect();
                seen.windows(2).all(|w| w[0] == w[1])
            },
        );
    }
    assert_eq!(
        during, 0,
        "a refresh was sent while Redis was away (no lease)"
    );
    println!(
        "Redis outage: {served} requests over 3 daemons, 0 failed; {during} refresh calls during the 10 s; \
         status during the outage said reachable={}",
        status["store"]["reachable"]
    );
}

#[test]
fn a_daemon_started_while_redis_is_down_serves_its_own_copy_and_joins_when_redis_returns() {
    let email = "a@example.com";
    // Hour-long tokens, and daemon 0 refreshes when told to, once daemon 1 is down: a refresh
    // that came by the clock could come before the kill on a loaded machine, and daemon 1 would
    // then hold the newer token already.
    let mut p = pool(
        &[email],
        2,
        Duration::from_secs(3600),
        Duration::from_secs(4),
    );
    // Listed is not enough before the kill: a peer writes the account's record before its
    // token, and its token file (the mirror) only once the token is on disk.
    let token_file = ccs::config::Paths::at(&p.daemons[1].home)
        .auth_dir()
        .join(ccs::store::mirror::token_file_name(email));
    p.wait(
        "daemon 1 to hold the token on disk",
        Duration::from_secs(10),
        || token_file.exists(),
    );
    p.daemons[1].process.take().unwrap().kill();
    assert_eq!(p.sim.model.lineage(email).unwrap().issued, 1);
    // Views give expiry to the second: the newer token must expire in a later one.
    std::thread::sleep(Duration::from_millis(1100));
    let (s, v) = tokio::runtime::Runtime::new().unwrap().block_on(manage(
        &p.daemons[0].url,
        Method::POST,
        &format!("/accounts/{email}/refresh"),
        None,
    ));
    assert!(s == 200 || s == 202, "forced refresh: {s} {v}");
    p.wait("daemon 0 to refresh", Duration::from_secs(20), || {
        p.sim.model.lineage(email).unwrap().issued == 2
    });
    let newest = accounts(&p.daemons[0].url)[email]["expires_at"].clone();
    p.redis.stop();
    // Daemon 1 starts with Redis away: it serves with the (older, still valid) token it holds.
    let process = DaemonProcess::start(&p.daemons[1].home, None);
    p.daemons[1].process = Some(process);
    let url = p.daemons[1].url.clone();
    assert!(wait_ready(&url), "a daemon must start while Redis is away");
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(ask_on(&rt, &url, "while-away").unwrap(), email);
    let status = get(&url, "/status");
    assert_eq!(status["store"]["reachable"], false, "{status}");
    assert_ne!(
        accounts(&url)[email]["expires_at"],
        newest,
        "it still holds its own copy"
    );
    // Redis returns: daemon 1 joins, takes the newer token daemon 0 wrote, and refreshes nothing.
    p.redis.resume();
    p.wait(
        "daemon 1 to join and adopt the newer token",
        Duration::from_secs(10),
        || accounts(&url)[email]["expires_at"] == newest,
    );
    p.wait(
        "daemon 1 to show up as a peer",
        Duration::from_secs(10),
        || {
            get(&p.daemons[0].url, "/status")["store"]["peers"]
                .as_array()
                .map(Vec::len)
                == Some(2)
        },
    );
    assert_eq!(ask_on(&rt, &url, "after-join").unwrap(), email);
    let (calls, ok) = one_refresh_per_generation(&p.sim, email);
    assert_eq!((calls, ok), (1, 1), "one refresh, by daemon 0");
}

/// Issue 32 item 2: a fresh daemon of a shared pool started while Redis is unreachable knows
/// no account yet; it says so with a status clients retry, not a 401 (which Claude Code takes
/// for bad credentials).
#[test]
fn a_daemon_that_has_not_joined_says_so_with_a_503_not_a_401() {
    let sim = sim(&scenario(&[("a@example.com", 10)]), false);
    let port = free_port();
    let (_dir, paths, _) = home_with_port(&sim.url(), port);
    // Nothing listens there.
    config_line(
        &paths,
        &format!(
            "store:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:{}/0",
            free_port()
        ),
    );
    let _daemon = DaemonProcess::start(&paths.home, None);
    let url = format!("http://127.0.0.1:{port}");
    assert!(wait_ready(&url), "{}", daemon_log(&paths));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(ask(&url, Some("s"), false));
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let text = rt.block_on(r.text()).unwrap();
    assert!(text.contains("not joined"), "{text}");
    assert!(
        !text.contains("127.0.0.1"),
        "no server address in the answer: {text}"
    );
}

/// Issue 32 item 1, the probe's recipe on real processes: Redis stopped, an account benched
/// on daemon 0 (a request to a pool whose only account has no budget), Redis back, and then no
/// request at all: the bench still reaches Redis and daemon 1.
#[test]
fn a_bench_made_while_redis_is_away_reaches_the_peers_with_no_further_request() {
    let emails = ["a@example.com", "b@example.com"];
    let mut p = pool(
        &emails,
        2,
        Duration::from_secs(3600),
        Duration::from_secs(4),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s, v) = rt.block_on(manage(
        &p.daemons[0].url,
        Method::PUT,
        "/pools/only2",
        Some(serde_json::json!({"accounts": [emails[1]]})),
    ));
    assert_eq!(s, 200, "{v}");
    p.sim.model.set_budget(emails[1], Some(0), None);
    p.redis.stop();
    let r = rt.block_on(async {
        http()
            .post(format!("{}/pool/only2/v1/messages", p.daemons[0].url))
            .bearer_auth(CLIENT_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(r.status(), 429, "the only account has no budget");
    assert!(!accounts(&p.daemons[0].url)[emails[1]]["cooldown_until"].is_null());
    // Away long enough for every write to have been tried and kept.
    std::thread::sleep(Duration::from_secs(3));
    p.redis.resume();
    p.wait(
        "the bench kept during the outage to reach daemon 1, with no request after it",
        Duration::from_secs(15),
        || !accounts(&p.daemons[1].url)[emails[1]]["cooldown_until"].is_null(),
    );
}
