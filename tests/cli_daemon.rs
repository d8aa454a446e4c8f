//! The daemon as a person runs it: the real `ccs` binary starting, finding, restarting and
//! stopping the background process in a temporary CCS_HOME, against the simulator.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A simulator with one account, and a CCS_HOME for it on a free port whose daemon is stopped
/// when the test ends.
struct OneAccountHome {
    sim: ccs::sim::SimHandle,
    port: u16,
    paths: ccs::config::Paths,
    /// Before the folder: the daemon is stopped while its home still exists.
    _stop: StopOnDrop,
    _dir: tempfile::TempDir,
}

impl OneAccountHome {
    fn new() -> OneAccountHome {
        let sim = sim(&scenario(&[("a@example.com", 10)]), false);
        let port = free_port();
        let (dir, paths, _config) = home_with_port(&sim.url(), port);
        OneAccountHome {
            _stop: StopOnDrop(paths.home.clone()),
            sim,
            port,
            paths,
            _dir: dir,
        }
    }

    /// Starts the daemon as a user would and logs the account in; the daemon's URL.
    fn started_with_account(&self, rt: &tokio::runtime::Runtime) -> String {
        let url = format!("http://127.0.0.1:{}", self.port);
        let (code, out, err) = ccs(&self.paths.home, &["cliproxy", "start"]);
        assert_eq!(code, 0, "{out}{err}");
        rt.block_on(add_account(&self.sim.url(), &url, "a@example.com"));
        url
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn ask_pool(url: &str, pool: &str) -> reqwest::Response {
    http()
        .post(format!("{url}/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .header("x-ccs-pool", pool)
        .json(&json!({"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}))
        .send()
        .await
        .unwrap()
}

fn account<'a>(list: &'a Value, email: &str) -> &'a Value {
    list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == email)
        .unwrap()
}

#[test]
fn restart_keeps_bindings_and_cooldowns() {
    let sim = sim(
        &scenario(&[
            ("a@example.com", 10),
            ("b@example.com", 10),
            ("c@example.com", 0),
        ]),
        false,
    );
    let port = free_port();
    let (_dir, paths, _config) = home_with_port(&sim.url(), port);
    let _stop = StopOnDrop(paths.home.clone());
    let url = format!("http://127.0.0.1:{port}");

    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&url), "{out}");
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0);
    assert!(out.contains("already runs"), "{out}");
    assert!(!err.contains("starting"), "nothing is started: {err}");

    let rt = rt();
    let (c_cooldown, rejected_before) = rt.block_on(async {
        for who in ["a@example.com", "b@example.com", "c@example.com"] {
            add_account(&sim.url(), &url, who).await;
        }
        // c alone in a pool, with no budget: one 429 benches it.
        manage(
            &url,
            Method::PUT,
            "/pools/p3",
            Some(json!({"accounts": ["c"]})),
        )
        .await;
        let r = ask_pool(&url, "p3").await;
        assert_eq!(r.status(), 429);
        // Session s goes to b while a is paused, then a is back for new sessions.
        manage(&url, Method::POST, "/accounts/a/pause", None).await;
        assert_eq!(
            served_by(ask(&url, Some("s"), false).await).await,
            "b@example.com"
        );
        manage(&url, Method::POST, "/accounts/a/resume", None).await;
        assert_eq!(
            served_by(ask(&url, Some("t"), false).await).await,
            "a@example.com"
        );
        let (_, list) = manage(&url, Method::GET, "/accounts", None).await;
        let cooldown = account(&list, "c@example.com")["cooldown_until"].clone();
        assert!(cooldown.is_string(), "{list}");
        let c: Value = http()
            .get(format!("{}/sim/counters", sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (cooldown, c["c@example.com"]["messages_rejected"].clone())
    });

    let (code, out, err) = ccs(&paths.home, &["cliproxy", "restart"]);
    assert_eq!(code, 0, "{out}{err}");

    rt.block_on(async {
        let (_, list) = manage(&url, Method::GET, "/accounts", None).await;
        assert_eq!(
            account(&list, "c@example.com")["cooldown_until"],
            c_cooldown,
            "cooldown kept"
        );
        assert_eq!(account(&list, "a@example.com")["state"], "fresh");
        assert_eq!(
            served_by(ask(&url, Some("s"), false).await).await,
            "b@example.com",
            "binding kept"
        );
        assert_eq!(
            served_by(ask(&url, Some("t"), false).await).await,
            "a@example.com"
        );
        assert_eq!(
            served_by(ask(&url, Some("new"), false).await).await,
            "a@example.com"
        );
        let r = ask_pool(&url, "p3").await;
        assert_eq!(r.status(), 429, "c is still benched");
        let c: Value = http()
            .get(format!("{}/sim/counters", sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            c["c@example.com"]["messages_rejected"], rejected_before,
            "benched without asking upstream"
        );
    });

    let (code, out, _) = ccs(&paths.home, &["cliproxy", "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("running at"), "{out}");
    assert!(
        out.contains("3 fresh") || out.contains("3 (3 fresh)"),
        "{out}"
    );
    let (_, out, _) = ccs(&paths.home, &["cliproxy", "status", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["accounts"], 3);
    assert_eq!(
        v["requests_last_hour"], 5,
        "two served before the restart (kept), three since"
    );

    let (code, out, _) = ccs(&paths.home, &["cliproxy", "stop"]);
    assert_eq!(code, 0);
    assert!(out.contains("stopped"), "{out}");
    assert!(!paths.pid_file().exists());
    let (_, out, _) = ccs(&paths.home, &["cliproxy", "status"]);
    assert!(out.contains("not running"), "{out}");
}

#[test]
fn a_stale_pid_file_is_recovered() {
    let h = OneAccountHome::new();
    let paths = &h.paths;
    std::fs::create_dir_all(paths.cliproxy()).unwrap();
    std::fs::write(paths.pid_file(), "999999").unwrap();
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let pid: u32 = std::fs::read_to_string(paths.pid_file())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, 999_999);
    let log_dir = paths.logs_dir();
    assert!(
        std::fs::read_dir(&log_dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("ccs.log")),
        "logs in {log_dir:?}"
    );
}

#[test]
fn a_port_taken_by_another_program_is_named_with_the_key_to_change() {
    let sim = sim(&scenario(&[("a@example.com", 10)]), false);
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let (_dir, paths, _config) = home_with_port(&sim.url(), port);
    let _stop = StopOnDrop(paths.home.clone());
    let (code, _out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("cliproxy.port"),
        "{err}"
    );
}

#[test]
fn the_daemon_refuses_a_public_bind_with_default_names_or_weak_keys() {
    for (auth, says) in [
        ("api_key: ccs-internal-managed", "public default"),
        (
            "management_secret: ccs-internal-management",
            "public default",
        ),
        ("api_key: a", "has 1 characters"),
        ("api_keys: [b]", "has 1 characters"),
        ("api_key: aaaaaaaaaaaaaaaaaaaaaaaa", "too guessable"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "cliproxy:\n  host: 0.0.0.0\n  port: {}\n  auth:\n    {auth}\n",
                free_port()
            ),
        )
        .unwrap();
        let (code, _out, err) = ccs(dir.path(), &["daemon", "run"]);
        assert_ne!(code, 0, "{auth}");
        assert!(
            err.contains(says) && err.contains("0.0.0.0"),
            "{auth}: {err}"
        );
    }
}

#[test]
fn a_public_bind_without_tls_is_refused_unless_plain_http_is_accepted() {
    let strong = "0123456789abcdef0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "cliproxy:\n  host: 0.0.0.0\n  port: {}\n  auth:\n    api_key: {strong}\n    \
             management_secret: {strong}x\n",
            free_port()
        ),
    )
    .unwrap();
    // Spawned with a bound: a daemon that did start would otherwise run on.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(["daemon", "run"])
        .env("CCS_HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started on 0.0.0.0 over plain HTTP");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains("plain HTTP") && err.contains("cliproxy.allow_plain_http: true"),
        "{err}"
    );
}

#[test]
fn a_daemon_whose_home_is_deleted_stops_by_itself() {
    // A test that dies before its guard runs, or a user's `rm -rf ~/.ccs`, must not leave a
    // daemon serving from a folder that is gone.
    let sim = sim(&scenario(&[("a@example.com", 10)]), false);
    let port = free_port();
    let (dir, paths, _config) = home_with_port(&sim.url(), port);
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let pid: u32 = std::fs::read_to_string(paths.pid_file())
        .expect("the daemon writes its pid")
        .trim()
        .parse()
        .expect("a pid");
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(), "the daemon runs");
    drop(dir);
    // Bounded wait for the daemon to notice (it looks every 2 s).
    let gone = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !alive()
    });
    if !gone {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(
        gone,
        "daemon {pid} still runs 30 s after its home was deleted"
    );
}

#[test]
fn a_second_daemon_on_the_same_home_leaves_the_first_ones_files_alone() {
    let h = OneAccountHome::new();
    let (paths, port) = (&h.paths, h.port);
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let pid = std::fs::read_to_string(paths.pid_file()).unwrap();
    // The user edits the port while the first daemon runs, then starts another.
    let yaml = std::fs::read_to_string(paths.config_file()).unwrap();
    let edited = yaml.replace(&format!("port: {port}"), &format!("port: {}", free_port()));
    std::fs::write(paths.config_file(), &edited).unwrap();
    let (code, _out, err) = ccs(&paths.home, &["daemon", "run"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("pid {}", pid.trim())) && err.contains("already runs on"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(paths.pid_file()).unwrap(),
        pid,
        "the pid file is the first daemon's still"
    );
    assert!(paths.lock_file().exists(), "the lock file is still there");
    assert!(
        ccs::daemon::healthz(&format!("http://127.0.0.1:{port}")).is_some(),
        "the first daemon still answers"
    );
    std::fs::write(paths.config_file(), &yaml).unwrap();
}

#[test]
fn the_log_has_a_line_per_request_no_token_no_colour_and_no_flood() {
    let h = OneAccountHome::new();
    let (sim, paths, port) = (&h.sim, &h.paths, h.port);
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let url = format!("http://127.0.0.1:{port}");
    let rt = rt();
    let token = rt.block_on(async {
        let tokens = login(&sim.url(), "a@example.com").await;
        let (s, v) = manage(
            &url,
            reqwest::Method::POST,
            "/accounts",
            Some(serde_json::json!({ "token_response": tokens })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let r = ask(&url, Some("sess-log-1"), true).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
        tokens
    });
    // A flood of requests the HTTP layer cannot parse: each used to write an ERROR line.
    for _ in 0..300 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            .unwrap();
        let _ = s.read(&mut [0u8; 256]);
    }
    // The log is written off the request path: wait for the request line.
    let log_dir = paths.logs_dir();
    let mut log = String::new();
    for _ in 0..200 {
        log = daemon_log(paths);
        if log.contains("sess-log-1") && log.contains("stream error") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let line = log
        .lines()
        .find(|l| l.contains("ccs::request") && l.contains("sess-log-1"))
        .unwrap_or_else(|| panic!("no request line:\n{log}"));
    for field in [
        "account=\"a@example.com\"",
        "model=\"claude-sonnet-4-5\"",
        "status=200",
        "latency_ms=",
        "bytes_in=",
        "bytes_out=",
        "end=\"complete\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    for t in ["access_token", "refresh_token"] {
        let secret = token[t].as_str().unwrap();
        assert!(!log.contains(secret), "the {t} is in the log:\n{log}");
    }
    assert!(!log.contains("sk-ant-"), "no token in the log:\n{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in the file");
    let parse_errors = log.lines().filter(|l| l.contains("stream error")).count();
    assert!(
        (1..=ccs::logging::ERRORS_PER_WINDOW as usize).contains(&parse_errors),
        "{parse_errors} parse-error lines for 300 bad requests"
    );
    // The background daemon writes its log once: daemon.out stays empty of it.
    let out = std::fs::read_to_string(log_dir.join("daemon.out")).unwrap();
    assert!(
        !out.contains("daemon ready"),
        "daemon.out repeats the log:\n{out}"
    );
}

#[test]
fn a_daemon_whose_port_was_changed_since_is_found_stopped_and_moved() {
    let h = OneAccountHome::new();
    let (paths, port) = (&h.paths, h.port);
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let pid: u32 = std::fs::read_to_string(paths.pid_file())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let moved = free_port();
    let yaml = std::fs::read_to_string(paths.config_file()).unwrap();
    std::fs::write(
        paths.config_file(),
        yaml.replace(&format!("port: {port}"), &format!("port: {moved}")),
    )
    .unwrap();
    let old_url = format!("http://127.0.0.1:{port}");

    let (code, out, _) = ccs(&paths.home, &["cliproxy", "status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&old_url) && out.contains(&format!("pid {pid}")) && out.contains("restart"),
        "status names the daemon where it is: {out}"
    );
    let (code, out, _) = ccs(&paths.home, &["cliproxy", "status", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "elsewhere", "{v}");
    assert_eq!(v["url"], old_url.as_str());
    let (code, _, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_ne!(code, 0, "start does not start a second one beside it");
    assert!(err.contains("ccs cliproxy restart"), "{err}");

    let (code, out, err) = ccs(&paths.home, &["cliproxy", "stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopped"), "{out}");
    assert!(!ccs::daemon::pid_alive(pid), "the daemon is gone");
    assert!(!paths.pid_file().exists() && !paths.lock_file().exists());

    // And restart from the same situation moves it to the new port.
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ccs::daemon::healthz(&format!("http://127.0.0.1:{moved}")).is_some());
    std::fs::write(paths.config_file(), &yaml).unwrap();
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "restart"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ccs::daemon::healthz(&old_url).is_some(), "{out}");
    assert!(ccs::daemon::healthz(&format!("http://127.0.0.1:{moved}")).is_none());
}

#[test]
fn starts_at_once_all_succeed_on_one_daemon() {
    // Several `ccs claude` started at once in terminal panes each start the daemon: every one
    // succeeds and names the one daemon that runs. Three rounds of twelve, stopped between.
    let h = OneAccountHome::new();
    let (paths, port) = (&h.paths, h.port);
    let url = format!("http://127.0.0.1:{port}");
    for round in 0..3 {
        let gate = std::sync::Arc::new(std::sync::Barrier::new(12));
        let starts: Vec<_> = (0..12)
            .map(|_| {
                let (home, gate) = (paths.home.clone(), gate.clone());
                std::thread::spawn(move || {
                    gate.wait();
                    ccs(&home, &["cliproxy", "start"])
                })
            })
            .collect();
        for s in starts {
            let (code, out, err) = s.join().unwrap();
            assert_eq!(code, 0, "round {round}: {out}{err}");
            assert!(out.contains(&url), "each names the daemon that runs: {out}");
        }
        let pid = ccs::daemon::healthz(&url).expect("one daemon runs");
        assert_eq!(
            std::fs::read_to_string(paths.pid_file()).unwrap().trim(),
            pid.to_string()
        );
        let (code, out, err) = ccs(&paths.home, &["cliproxy", "stop"]);
        assert_eq!(code, 0, "{out}{err}");
    }
}

#[test]
fn a_clean_stop_keeps_the_latest_figures() {
    // Utilization and last use are written down at most once a minute while the daemon runs;
    // a clean stop writes the rest, so the next start shows what the last answer said.
    let h = OneAccountHome::new();
    let paths = &h.paths;
    let rt = rt();
    let url = h.started_with_account(&rt);
    let before = rt.block_on(async {
        assert_eq!(ask(&url, None, false).await.status(), 200);
        // A second later (last use is kept to the second), two more answers.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(ask(&url, None, false).await.status(), 200);
        assert_eq!(ask(&url, None, false).await.status(), 200);
        let (_, list) = manage(&url, Method::GET, "/accounts", None).await;
        account(&list, "a@example.com").clone()
    });
    assert!(
        before["five_hour"]["utilization"].as_f64().unwrap() > 0.25,
        "{before}"
    );
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let after = rt.block_on(async {
        let (_, list) = manage(&url, Method::GET, "/accounts", None).await;
        account(&list, "a@example.com").clone()
    });
    assert_eq!(
        after["five_hour"]["utilization"], before["five_hour"]["utilization"],
        "{after}"
    );
    assert_eq!(after["last_used_at"], before["last_used_at"], "{after}");
}

#[test]
fn the_account_list_says_when_each_account_last_served() {
    let h = OneAccountHome::new();
    let paths = &h.paths;
    let rt = rt();
    let url = h.started_with_account(&rt);
    let (code, out, _) = ccs(&paths.home, &["claude", "--accounts"]);
    assert_eq!(code, 0);
    assert!(out.contains("LAST USED") && out.contains("never"), "{out}");
    rt.block_on(async { assert_eq!(ask(&url, None, false).await.status(), 200) });
    let (code, out, _) = ccs(&paths.home, &["claude", "--accounts"]);
    assert_eq!(code, 0);
    assert!(out.contains("just now"), "{out}");
}
