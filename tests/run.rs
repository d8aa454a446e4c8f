//! `ccs run`, `ccs claude ARGS`, pools and the quota view with the real binary; Claude Code
//! is a stand-in script that records what it was given (the real one is in
//! `claude_code_e2e.rs`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

struct Setup {
    sim: ccs::sim::SimHandle,
    /// Declared before the folder: fields drop in order, and the daemon must be stopped
    /// while its home (where its pid file is) still exists.
    _stop: StopOnDrop,
    _dir: tempfile::TempDir,
    paths: ccs::config::Paths,
    url: String,
    record: std::path::PathBuf,
}

/// A stand-in `claude` that writes its environment and arguments to `record`, then exits
/// with `$STANDIN_EXIT` (default 0).
fn standin(dir: &std::path::Path, record: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("claude");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n{{ echo \"BASE=$ANTHROPIC_BASE_URL\"; echo \"TOKEN=$ANTHROPIC_AUTH_TOKEN\"; echo \"APIKEY=${{ANTHROPIC_API_KEY:-unset}}\"; for a in \"$@\"; do echo \"ARG=$a\"; done; }} > {}\nexit ${{STANDIN_EXIT:-0}}\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn setup(budgets: &[(&str, u64)], log_in: bool) -> Setup {
    let sim = sim(&scenario(budgets), false);
    let port = free_port();
    let (dir, paths, _) = home_with_port(&sim.url(), port);
    let record = dir.path().join("record.txt");
    let claude = standin(dir.path(), &record);
    config_line(&paths, &format!("claude_path: {}", claude.display()));
    // A callback port of its own, so parallel tests never race for 54545.
    let yaml = std::fs::read_to_string(paths.config_file()).unwrap();
    let yaml = yaml.replace(
        "oauth:\n",
        &format!("oauth:\n  callback_port: {}\n", free_port()),
    );
    std::fs::write(paths.config_file(), yaml).unwrap();
    let stop = StopOnDrop(paths.home.clone());
    let url = format!("http://127.0.0.1:{port}");
    if log_in {
        let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
        assert_eq!(code, 0, "{out}{err}");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for (email, _) in budgets {
                add_account(&sim.url(), &url, email).await;
            }
        });
    }
    Setup {
        sim,
        _dir: dir,
        paths,
        url,
        record,
        _stop: stop,
    }
}

fn run_ccs(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccs"));
    cmd.args(args)
        .env("CCS_HOME", &s.paths.home)
        .env("ANTHROPIC_API_KEY", "a-real-key-that-must-not-leak")
        .env_remove("DISPLAY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn record(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(&s.record)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn ccs_claude_passes_every_argument_through_and_keeps_the_exit_code() {
    let s = setup(&[("a@example.com", 10)], true);
    let (code, out, err) = run_ccs(
        &s,
        &[
            "claude",
            "explain this code",
            "-p",
            "--model",
            "claude-opus-4-1",
            "--resume",
            "abc",
        ],
        &[("STANDIN_EXIT", "7")],
    );
    assert_eq!(code, 7, "{out}{err}");
    let r = record(&s);
    assert_eq!(r[0], format!("BASE={}", s.url));
    assert_eq!(r[1], format!("TOKEN={CLIENT_KEY}"));
    assert_eq!(
        r[2], "APIKEY=unset",
        "the user's own API key is not handed to Claude Code"
    );
    assert_eq!(
        &r[3..],
        [
            "ARG=explain this code",
            "ARG=-p",
            "ARG=--model",
            "ARG=claude-opus-4-1",
            "ARG=--resume",
            "ARG=abc"
        ]
    );

    let (code, _, _) = run_ccs(&s, &["run", "--", "-p", "hi there"], &[]);
    assert_eq!(code, 0);
    assert_eq!(&record(&s)[3..], ["ARG=-p", "ARG=hi there"]);
}

#[test]
fn a_missing_claude_gives_the_install_hint() {
    let s = setup(&[("a@example.com", 10)], true);
    let yaml = std::fs::read_to_string(s.paths.config_file()).unwrap();
    let yaml: String = yaml
        .lines()
        .filter(|l| !l.starts_with("claude_path"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(s.paths.config_file(), yaml).unwrap();
    let (code, _, err) = run_ccs(&s, &["run"], &[("PATH", "/nonexistent")]);
    assert_ne!(code, 0);
    assert!(
        err.contains("npm install -g @anthropic-ai/claude-code"),
        "{err}"
    );
}

#[test]
fn a_named_pool_launch_points_claude_at_that_pool() {
    let s = setup(&[("a@example.com", 10), ("b@example.com", 10)], true);
    let (code, out, err) = run_ccs(&s, &["pool", "create", "work", "b"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("work: b@example.com"), "{out}");
    let (code, _, err) = run_ccs(&s, &["run", "work"], &[]);
    assert_eq!(code, 0, "{err}");
    let base = record(&s)[0].clone();
    assert_eq!(base, format!("BASE={}/pool/work", s.url));
    // Requests on that base URL go to the pool's members only.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let who = rt.block_on(async {
        let r = http()
            .post(format!("{}/pool/work/v1/messages?beta=true", s.url))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}))
            .send()
            .await
            .unwrap();
        served_by(r).await
    });
    assert_eq!(who, "b@example.com");
    let (code, _, err) = run_ccs(&s, &["run", "nope"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("no pool named \"nope\""), "{err}");
}

#[test]
fn pool_order_and_pause_change_who_serves_new_sessions() {
    let s = setup(&[("a@example.com", 10), ("b@example.com", 10)], true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let serve = |session: &str| {
        rt.block_on(async { served_by(ask(&s.url, Some(session), false).await).await })
    };
    assert_eq!(serve("s1"), "a@example.com");
    let (code, out, err) = run_ccs(&s, &["pool", "order", "claude", "b,a"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(serve("s2"), "b@example.com");
    assert_eq!(
        serve("s1"),
        "a@example.com",
        "an existing session keeps its account"
    );
    let (code, _, _) = run_ccs(&s, &["pool", "pause", "b"], &[]);
    assert_eq!(code, 0);
    assert_eq!(serve("s2"), "a@example.com", "pause takes b out at once");
    let (_, out, _) = run_ccs(&s, &["pool", "show"], &[]);
    assert!(
        out.contains("1. b@example.com (fresh, paused)")
            && out.contains("2. a@example.com (fresh)"),
        "{out}"
    );
    run_ccs(&s, &["pool", "resume", "b"], &[]);
    assert_eq!(serve("s3"), "b@example.com");
}

#[test]
fn quota_json_matches_the_simulator() {
    let s = setup(&[("a@example.com", 4), ("b@example.com", 10)], true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for _ in 0..3 {
            served_by(ask(&s.url, Some("q"), false).await).await;
        }
    });
    let (code, out, err) = run_ccs(&s, &["cliproxy", "quota", "--json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let a = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == "a@example.com")
        .unwrap()
        .clone();
    let state: Value = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/sim/state", s.sim.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let sim_a = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "a@example.com")
        .unwrap()
        .clone();
    let used = sim_a["five_hour"]["used"].as_f64().unwrap();
    let budget = sim_a["five_hour"]["budget"].as_f64().unwrap();
    assert!(
        (a["five_hour"]["utilization"].as_f64().unwrap() - used / budget).abs() < 1e-3,
        "{a} vs {sim_a}"
    );
    assert_eq!(v["next_for_new_sessions"], "a@example.com");
    let (_, out, _) = run_ccs(&s, &["cliproxy", "quota"], &[]);
    assert!(
        out.contains("75%") && out.contains("new sessions go to: a@example.com"),
        "{out}"
    );
}

#[test]
fn all_limited_says_when_and_starts_only_with_force() {
    let s = setup(&[("a@example.com", 1)], true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        served_by(ask(&s.url, None, false).await).await;
    });
    let (code, _, err) = run_ccs(&s, &["run"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("a@example.com resets first") && err.contains("`ccs claude --force …`"),
        "{err}"
    );
    assert!(record(&s).is_empty(), "claude was not started");
    let (code, _, err) = run_ccs(&s, &["run", "--force"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!record(&s).is_empty());
}

#[test]
fn a_dead_account_off_a_terminal_prints_the_command() {
    let s = setup(&[("a@example.com", 10), ("b@example.com", 10)], true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        http()
            .post(format!("{}/sim/users/a@example.com/revoke", s.sim.url()))
            .send()
            .await
            .unwrap();
        served_by(ask(&s.url, None, false).await).await;
    });
    let (code, _, err) = run_ccs(&s, &["run"], &[]);
    assert_eq!(code, 0, "b still serves: {err}");
    assert!(
        err.contains("a@example.com") && err.contains("ccs claude --auth --add"),
        "{err}"
    );
}

#[test]
fn first_run_logs_in_headless_then_launches() {
    let s = setup(&[("a@example.com", 10)], false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(["claude", "--headless", "-p", "hello"])
        .env("CCS_HOME", &s.paths.home)
        .env_remove("DISPLAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::{BufRead, BufReader, Write};
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(u) = line.trim().strip_prefix("http") {
            url = format!("http{u}");
            break;
        }
        line.clear();
    }
    assert!(!url.is_empty(), "no login URL printed");
    let page = reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&url)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let start = page.find("<pre id=\"code\">").unwrap() + 15;
    let code = &page[start..start + page[start..].find("</pre>").unwrap()];
    writeln!(child.stdin.as_mut().unwrap(), "{code}").unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("Logged in as a@example.com"), "{rest}");
    assert_eq!(
        &record(&s)[3..],
        ["ARG=-p", "ARG=hello"],
        "then Claude Code started with the arguments"
    );
}

#[test]
fn the_demo_exits_zero_and_shows_the_hop() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = ccs(dir.path(), &["demo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("turn 3  served by alice@example.com"), "{out}");
    assert!(out.contains("turn 4  served by bob@example.com"), "{out}");
    assert!(
        out.contains("moved alice@example.com → bob@example.com (limited)"),
        "{out}"
    );
    assert!(
        out.contains("new sessions go to: carol@example.com"),
        "{out}"
    );
}

/// `ccs demo --keep` serves for as long as it runs: once every account is spent, the
/// simulator's top-up is noticed from the usage endpoint, long before the announced resets.
#[test]
fn the_kept_demo_serves_again_after_every_account_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(["demo", "--keep"])
        .env("CCS_HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let (mut seen, mut spent, mut back) = (Vec::new(), false, false);
    while !back {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                spent |= line.contains("all three accounts are spent");
                back |= spent && line.starts_with("back ");
                seen.push(line);
            }
            Err(_) => break,
        }
    }
    // Ctrl-C: the demo stops its daemon and simulator and removes its home.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let stopped = child.wait().unwrap();
    assert!(
        back,
        "never served again after the top-up:\n{}",
        seen.join("\n")
    );
    assert!(stopped.success(), "{stopped:?}");
}

#[test]
fn a_home_without_keys_gets_random_ones_that_the_cli_and_claude_code_use_unseen() {
    let s = setup(&[("a@example.com", 10)], false);
    // A config.yaml that names no key: ccs makes them at first use.
    let yaml = std::fs::read_to_string(s.paths.config_file()).unwrap();
    let yaml: String = yaml
        .lines()
        .filter(|l| !l.contains("api_key:") && !l.contains("management_secret:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("  auth:\n", "");
    std::fs::write(s.paths.config_file(), yaml).unwrap();
    let (code, out, err) = run_ccs(&s, &["cliproxy", "start"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(s.paths.keys_file()).unwrap()).unwrap();
    let secret = keys["management_secret"].as_str().unwrap();
    let key = keys["client_key"].as_str().unwrap();
    assert!(key.len() >= 64 && secret.len() >= 64);
    // The CLI manages the daemon with the generated secret, without being told it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tokens = login(&s.sim.url(), "a@example.com").await;
        let r = http()
            .post(format!("{}/v0/management/accounts", s.url))
            .bearer_auth(secret)
            .json(&json!({"token_response": tokens}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let (code, out, err) = run_ccs(&s, &["claude", "--accounts", "--json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("a@example.com"), "{out}");
    // Claude Code is handed the generated key, and the proxy takes it.
    let (code, out, err) = run_ccs(&s, &["claude", "-p", "hi"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        record(&s).contains(&format!("TOKEN={key}")),
        "{:?}",
        record(&s)
    );
    let status = rt.block_on(async {
        http()
            .post(format!("{}/v1/messages", s.url))
            .bearer_auth(key)
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 1, "messages": []}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
}

#[test]
fn a_first_run_with_stdin_closed_fails_at_once_naming_the_headless_login() {
    let s = setup(&[("a@example.com", 10)], false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(["claude", "-p", "hi"])
        .env("CCS_HOME", &s.paths.home)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A bound for a stuck test (the login used to wait five minutes for a paste).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still waiting for a paste that cannot come");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("standard input is closed") && err.contains("--auth --headless"),
        "{err}"
    );
    assert!(record(&s).is_empty(), "Claude Code was not started");
    // Refused before anything started: no login link nobody can open, no daemon left behind.
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(!out.contains("oauth/authorize"), "{out}");
    assert!(!s.paths.pid_file().exists(), "a daemon was started");
    assert!(
        ccs::daemon::healthz(&configured_url(&s.paths)).is_none(),
        "a daemon answers"
    );
}

#[test]
fn use_makes_the_default_account_where_new_conversations_start() {
    let s = setup(&[("a@example.com", 10), ("b@example.com", 10)], true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let serve = |session: &str| {
        rt.block_on(async { served_by(ask(&s.url, Some(session), false).await).await })
    };
    assert_eq!(serve("s1"), "a@example.com");
    let (code, out, err) = run_ccs(&s, &["claude", "--use", "b"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        serve("s2"),
        "b@example.com",
        "a new conversation starts on b"
    );
    assert_eq!(serve("s1"), "a@example.com", "a running one stays");
    let default = |s: &Setup| {
        let (_, out, _) = run_ccs(s, &["claude", "--accounts", "--json"], &[]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["default"] == true)
            .map(|a| a["email"].as_str().unwrap().to_string())
    };
    assert_eq!(default(&s).as_deref(), Some("b@example.com"));
    // Reordering the default pool moves the default with its head.
    let (code, out, err) = run_ccs(&s, &["pool", "order", "claude", "a,b"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(default(&s).as_deref(), Some("a@example.com"));
    assert_eq!(serve("s3"), "a@example.com");
}

#[test]
fn an_account_that_served_shows_when_in_the_cli_and_in_accounts_json() {
    let s = setup(&[("a@example.com", 10)], true);
    let last_used = |s: &Setup| {
        let (_, out, _) = run_ccs(s, &["claude", "--accounts", "--json"], &[]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["accounts"][0]["last_used_at"].clone()
    };
    assert_eq!(last_used(&s), Value::Null, "never used yet");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { served_by(ask(&s.url, Some("s1"), false).await).await });
    assert!(last_used(&s).is_string(), "{}", last_used(&s));
    // The mirror file of the replaced tool says it too (written off the request's thread).
    let mut mirrored = Value::Null;
    for _ in 0..200 {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(s.paths.accounts_json()).unwrap())
                .unwrap();
        mirrored = v["providers"]["claude"]["accounts"]["a@example.com"]["lastUsedAt"].clone();
        if mirrored.is_string() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        mirrored.is_string(),
        "lastUsedAt in accounts.json: {mirrored}"
    );
}

#[test]
fn an_interactive_launch_gets_the_status_line_unless_the_user_has_one() {
    let s = setup(&[("a@example.com", 10)], true);
    let user = tempfile::tempdir().unwrap();
    let config_dir = user.path().join(".claude");
    let env = [
        ("HOME", user.path().to_str().unwrap()),
        ("CLAUDE_CONFIG_DIR", config_dir.to_str().unwrap()),
    ];
    let (code, out, err) = run_ccs(&s, &["claude", "--model", "claude-opus-4-1"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let r = record(&s);
    assert_eq!(r[3], "ARG=--settings", "{r:?}");
    let settings: serde_json::Value =
        serde_json::from_str(r[4].strip_prefix("ARG=").unwrap()).unwrap();
    assert_eq!(settings["statusLine"]["type"], "command");
    assert!(
        settings["statusLine"]["command"]
            .as_str()
            .unwrap()
            .ends_with(" statusline"),
        "{settings}"
    );
    assert_eq!(
        &r[5..],
        ["ARG=--model", "ARG=claude-opus-4-1"],
        "the user's arguments follow untouched"
    );

    // A status line of the user's own is never replaced.
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("settings.json"),
        r#"{"statusLine": {"type": "command", "command": "my-own-line"}}"#,
    )
    .unwrap();
    let (code, _, _) = run_ccs(&s, &["claude", "--model", "claude-opus-4-1"], &env);
    assert_eq!(code, 0);
    assert_eq!(&record(&s)[3..], ["ARG=--model", "ARG=claude-opus-4-1"]);

    // Turned off in config.yaml.
    std::fs::remove_file(config_dir.join("settings.json")).unwrap();
    config_line(&s.paths, "status_line: false");
    let (code, _, _) = run_ccs(&s, &["claude", "--model", "claude-opus-4-1"], &env);
    assert_eq!(code, 0);
    assert_eq!(&record(&s)[3..], ["ARG=--model", "ARG=claude-opus-4-1"]);
}
