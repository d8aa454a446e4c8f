//! The slow suite: the real Claude Code CLI (from npm, pinned in `.ci/run`) started by
//! `ccs run` against the daemon and the simulator. Offline: telemetry, non-essential traffic
//! and the auto-updater are off, and HOME is a temporary folder.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

struct Setup {
    sim: ccs::sim::SimHandle,
    /// Declared before the folder: fields drop in order, and the daemon must be stopped
    /// while its home (where its pid file is) still exists.
    _stop: StopOnDrop,
    _dir: tempfile::TempDir,
    paths: ccs::config::Paths,
    claude_home: tempfile::TempDir,
}

fn setup(budgets: &[(&str, u64)]) -> Setup {
    setup_on(scenario(budgets), "")
}

/// `setup` over a scenario of the test's own, with `config` appended to config.yaml.
fn setup_on(scenario: ccs::sim::Scenario, config: &str) -> Setup {
    let budgets: Vec<(String, u64)> = scenario
        .users
        .iter()
        .map(|u| (u.email.clone(), u.five_hour))
        .collect();
    let sim = sim(&scenario, false);
    let (dir, paths, _) = home_with_port(&sim.url(), free_port());
    config_line(&paths, &format!("claude_path: {}", claude_code().display()));
    if !config.is_empty() {
        config_line(&paths, config);
    }
    let stop = StopOnDrop(paths.home.clone());
    let (code, out, err) = ccs(&paths.home, &["cliproxy", "start"]);
    assert_eq!(code, 0, "{out}{err}");
    let daemon = configured_url(&paths);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (email, _) in &budgets {
            add_account(&sim.url(), &daemon, email).await;
        }
    });
    Setup {
        sim,
        _dir: dir,
        paths,
        claude_home: tempfile::tempdir().unwrap(),
        _stop: stop,
    }
}

/// `ccs run [args]` as a person would type it, with Claude Code kept offline.
fn ccs_run(s: &Setup, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccs"));
    let out = claude_offline(&mut cmd, s.claude_home.path())
        .arg("run")
        .args(args)
        .env("CCS_HOME", &s.paths.home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn counters(s: &Setup) -> Value {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/sim/counters", s.sim.url()))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Claude Code runs a three-step tool loop (`Bash` with `echo`, which it really runs) with its
/// default model and adaptive thinking; alice's budget runs out after two requests, so the loop
/// moves to bob in its middle. `binding`: what the simulated default model does with alice's
/// thinking blocks on bob's account.
fn tool_loop_through_claude_code(
    binding: ccs::sim::scenario::ThinkingBinding,
    config: &str,
) -> (Setup, i32, String) {
    let s = setup_on(loop_world(binding), config);
    let (code, out, err) = ccs_run(
        &s,
        &[
            "--",
            "-p",
            "Run the simulated loop: sim-tools:3",
            "--allowedTools",
            "Bash",
        ],
    );
    (s, code, format!("{out}{err}"))
}

/// Alice with a budget of two requests, bob with plenty, and Claude Code's default model
/// treating another account's thinking blocks as `binding` says.
fn loop_world(binding: ccs::sim::scenario::ThinkingBinding) -> ccs::sim::Scenario {
    let mut sc = scenario(&[("alice@example.com", 2), ("bob@example.com", 50)]);
    sc.models.insert(
        "claude-opus-5-5".into(),
        ccs::sim::scenario::ModelOverride {
            thinking_binding: Some(binding),
            ..Default::default()
        },
    );
    sc
}

fn received_bodies(s: &Setup) -> Vec<String> {
    let v: Value = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/sim/requests", s.sim.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"].as_str().unwrap_or("").to_string())
        .collect()
}

fn fits(s: &Setup) -> String {
    let out = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/metrics", configured_url(&s.paths)))
        .bearer_auth(SECRET)
        .send()
        .unwrap()
        .text()
        .unwrap();
    out.lines()
        .filter(|l| l.starts_with("ccs_continuity_"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn claude_codes_tool_loop_survives_a_move_on_a_model_that_refuses_foreign_thinking() {
    use ccs::sim::scenario::ThinkingBinding;
    let (s, code, out) = tool_loop_through_claude_code(ThinkingBinding::Reject, "");
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("API Error"), "{out}");
    assert!(out.contains("Served by bob@example.com."), "{out}");
    let bodies = received_bodies(&s);
    assert!(
        bodies.iter().any(|b| b.contains("ccs-sim-step-2")),
        "Claude Code ran the tool and sent its output back"
    );
    assert!(
        bodies.iter().any(|b| b.contains("\"signature\"")),
        "Claude Code sent its thinking blocks back"
    );
    let c = counters(&s);
    assert_eq!(c["alice@example.com"]["messages_ok"], 2, "{c}");
    // ccs's defaults say Opus 5.5 takes foreign blocks, so the first move meets the 400: ccs
    // fits and retries itself (Claude Code never sees it), and fits the next moves up front.
    let refused = c["bob@example.com"]["history_refused"].as_u64().unwrap();
    let f = fits(&s);
    assert!(
        f.contains(&format!("ccs_continuity_fits_after_400_total {refused}")),
        "every 400 about the history was cured by ccs: {c}\n{f}"
    );
    assert!(!f.contains("ccs_continuity_fits_total 0"), "{f}");
}

#[test]
fn without_fitting_the_move_meets_the_400_and_claude_code_throws_its_thinking_away() {
    use ccs::sim::scenario::ThinkingBinding;
    let (s, _code, out) =
        tool_loop_through_claude_code(ThinkingBinding::Reject, "continuity:\n  fit: false");
    // Bob refused the history with the 400; Claude Code 2.1.332 then resent the whole
    // conversation without a single thinking block (its own recovery, which throws away every
    // block, bob's included, where ccs removes only alice's).
    let c = counters(&s);
    assert!(
        c["bob@example.com"]["history_refused"].as_u64().unwrap() >= 1,
        "the move met the 400: {c} {out}"
    );
    let blocks: Vec<usize> = received_bodies(&s)
        .iter()
        .map(|b| b.matches("\"signature\"").count())
        .collect();
    assert!(
        blocks.windows(2).any(|w| w[1] < w[0]),
        "Claude Code's retry threw thinking blocks away: {blocks:?}"
    );
}

#[test]
fn on_models_that_drop_or_accept_claude_codes_bodies_pass_untouched() {
    use ccs::sim::scenario::ThinkingBinding;
    for binding in [ThinkingBinding::Drop, ThinkingBinding::Accept] {
        let (s, code, out) = tool_loop_through_claude_code(binding, "");
        assert_eq!(code, 0, "{binding:?}: {out}");
        assert!(
            out.contains("Served by bob@example.com."),
            "{binding:?}: {out}"
        );
        let f = fits(&s);
        assert!(
            f.contains("ccs_continuity_fits_total 0"),
            "{binding:?}: nothing fitted: {f}"
        );
    }
}

#[test]
fn ccs_run_p_hello_prints_the_simulators_reply() {
    let s = setup(&[("a@example.com", 50)]);
    let (code, out, err) = ccs_run(&s, &["--", "-p", "hello"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Served by a@example.com."), "{out}");
}

#[test]
fn a_resumed_conversation_crosses_account_ones_limit_with_one_session_id() {
    let s = setup(&[("a@example.com", 3), ("b@example.com", 50)]);
    let session = ccs::commands::demo::uuid_v4();
    let mut served = Vec::new();
    for turn in 1..=5 {
        let prompt = format!("turn {turn}");
        let flag = if turn == 1 {
            "--session-id"
        } else {
            "--resume"
        };
        let (code, out, err) = ccs_run(
            &s,
            &[
                "--",
                "-p",
                &prompt,
                flag,
                &session,
                "--output-format",
                "json",
            ],
        );
        assert_eq!(code, 0, "turn {turn}: {out}{err}");
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("turn {turn} JSON ({e}): {out}"));
        assert_eq!(
            v["session_id"],
            session.as_str(),
            "the session id stays the same"
        );
        let text = v["result"].as_str().unwrap_or("").to_string();
        served.push(
            text.split_whitespace()
                .nth(2)
                .unwrap_or("")
                .trim_end_matches('.')
                .to_string(),
        );
    }
    let c = counters(&s);
    assert_eq!(
        c["a@example.com"]["messages_ok"], 3,
        "a served until its budget ran out: {c}"
    );
    assert!(
        c["b@example.com"]["messages_ok"].as_u64().unwrap() >= 2,
        "b served the rest: {c}"
    );
    assert_eq!(
        served.last().map(String::as_str),
        Some("b@example.com"),
        "{served:?}"
    );
    assert!(served.iter().all(|a| !a.is_empty()), "{served:?}");
}

#[test]
fn the_demo_runs_its_turns_through_the_real_claude_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        claude_code().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(["demo", "--claude"])
        .env("CCS_HOME", dir.path())
        .env("PATH", path)
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("--resume  served by bob@example.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("moved alice@example.com → bob@example.com (limited)"),
        "{stdout}"
    );
}

/// A tmux server of the test's own (a private socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("ccs-test-{}-{}", std::process::id(), free_port()),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "ccs"])
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        assert!(self
            .cmd()
            .args(["send-keys", "-t", "ccs"])
            .args(keys)
            .status()
            .unwrap()
            .success());
    }

    /// Waits (a bound for a stuck test, not a speed check) until the screen shows `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the terminal never showed {needle:?}; it shows:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// Claude Code in a terminal of its own (tmux, 160×45), started by `ccs ARGS` in a folder it
/// trusts, as someone who set it up before: no theme picker, no trust dialog. The folder is
/// returned with the terminal (it must outlive it).
fn claude_in_tmux(s: &Setup, args: &str) -> (Tmux, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let work_path = work.path().canonicalize().unwrap();
    // A Claude Code that has been set up before: no theme picker, the folder trusted.
    std::fs::write(
        s.claude_home.path().join(".claude.json"),
        serde_json::json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "projects": {work_path.to_string_lossy(): {"hasTrustDialogAccepted": true}},
        })
        .to_string(),
    )
    .unwrap();
    let t = Tmux::new();
    let script = format!(
        "cd '{}' && HOME='{}' CCS_HOME='{}' DISABLE_TELEMETRY=1 \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
         ANTHROPIC_API_KEY= exec '{}' {args}",
        work_path.display(),
        s.claude_home.path().display(),
        s.paths.home.display(),
        env!("CARGO_BIN_EXE_ccs"),
    );
    assert!(t
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "ccs",
            "-x",
            "160",
            "-y",
            "45",
            &script
        ])
        .status()
        .unwrap()
        .success());
    (t, work)
}

#[test]
fn the_status_line_in_claude_codes_terminal_names_the_account_and_the_hop() {
    let s = setup(&[("alice@example.com", 2), ("bob@example.com", 100)]);
    let (t, _work) = claude_in_tmux(&s, "run");
    t.wait_for("ccs: new conversation");
    t.keys(&["say hello", "Enter"]);
    let screen = t.wait_for("ccs: alice");
    assert!(screen.contains("5h "), "{screen}");
    let mut hopped = String::new();
    for turn in 0..4 {
        if t.screen().contains("moved from alice@example.com") {
            hopped = t.screen();
            break;
        }
        t.keys(&[&format!("turn {turn}"), "Enter"]);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    if hopped.is_empty() {
        hopped = t.wait_for("moved from alice@example.com");
    }
    assert!(hopped.contains("ccs: bob"), "{hopped}");
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("statusline.txt"), &hopped).unwrap();
    for secret in [CLIENT_KEY, SECRET] {
        assert!(!hopped.contains(secret), "no secret on screen");
    }
    t.keys(&["C-c"]);
    t.keys(&["C-c"]);
}

#[test]
fn in_its_terminal_claude_codes_tool_loop_moves_on_a_refusing_model_with_no_api_error() {
    // The same loop as above, typed into the real Claude Code started by `ccs claude` in a
    // terminal: the answer after the move is on the screen, no API error, and the status line
    // says what the move cost.
    use ccs::sim::scenario::ThinkingBinding;
    let s = setup_on(loop_world(ThinkingBinding::Reject), "");
    let (t, _work) = claude_in_tmux(&s, "claude --allowedTools Bash");
    t.wait_for("ccs: new conversation");
    t.keys(&["Run the simulated loop: sim-tools:3", "Enter"]);
    let screen = t.wait_for("Served by bob@example.com.");
    assert!(!screen.contains("API Error"), "{screen}");
    let bodies = received_bodies(&s);
    assert!(
        bodies.iter().any(|b| b.contains("ccs-sim-step-2")),
        "Claude Code ran the tool and sent its output back"
    );
    let c = counters(&s);
    assert!(
        c["alice@example.com"]["messages_ok"].as_u64().unwrap() >= 1,
        "{c}"
    );
    let f = fits(&s);
    assert!(
        !f.contains("ccs_continuity_blocks_removed_total 0"),
        "the move carried alice's thinking blocks and ccs removed them: {f}"
    );
    let screen = t.wait_for("tokens re-read");
    assert!(screen.contains("moved from alice@example.com"), "{screen}");
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("tool-loop-move.txt"), &screen).unwrap();
    t.keys(&["C-c"]);
    t.keys(&["C-c"]);
}

/// A laptop's `ccs claude -p` on a team's server over TLS: only the flags, a named client key
/// and the pinned fingerprint (no management secret, so no local checks and no login); Claude
/// Code trusts the self-signed server through the certificate ccs verified against the pin.
#[test]
fn claude_code_on_a_laptop_works_through_the_teams_server_and_crosses_a_limit_there() {
    use common::remote::*;
    let sim = sim(
        &scenario(&[("a@example.com", 2), ("b@example.com", 50)]),
        false,
    );
    let server = Server::start(&sim.url());
    let admin = Client::new(
        &server,
        &format!(
            "    fingerprint: \"{}\"\n    management_key: {SECRET}\n",
            server.fingerprint
        ),
    );
    admin.login(&[]);
    admin.login(&["--add"]);
    let key = server.key("laptop");
    let laptop = tempfile::tempdir().unwrap();
    std::fs::write(
        laptop.path().join("config.yaml"),
        format!("claude_path: {}\n", claude_code().display()),
    )
    .unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    let session = ccs::commands::demo::uuid_v4();
    let port = server.port.to_string();
    let mut served = vec![];
    for turn in 1..=4 {
        let flag = if turn == 1 {
            "--session-id"
        } else {
            "--resume"
        };
        let prompt = format!("turn {turn}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccs"));
        let out = claude_offline(&mut cmd, claude_home.path())
            .args(["--proxy-host", SERVER_HOST, "--proxy-port", &port])
            .args(["--proxy-fingerprint", &server.fingerprint])
            .args(["--proxy-auth-token", &key])
            .args(["claude", "-p", &prompt, flag, &session])
            .env("CCS_HOME", laptop.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "turn {turn}: {stdout}{stderr}");
        served.push(
            stdout
                .split_whitespace()
                .nth(2)
                .unwrap_or("")
                .trim_end_matches('.')
                .to_string(),
        );
    }
    assert_eq!(
        served.first().map(String::as_str),
        Some("a@example.com"),
        "{served:?}"
    );
    assert_eq!(
        served.last().map(String::as_str),
        Some("b@example.com"),
        "{served:?}"
    );
    let usage = ccs_json(&admin.home, &["cliproxy", "usage", "--json"]);
    let rows = usage["usage"]["by_client"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["name"] == "laptop"), "{usage}");
    assert!(
        !laptop.path().join("cliproxy/daemon.pid").exists()
            && !laptop.path().join("cliproxy/logs").exists(),
        "a local daemon was started on the laptop"
    );
}
