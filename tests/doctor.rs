//! `ccs doctor` as a person runs it: the real binary on a temporary CCS_HOME against the
//! simulator, healthy first, then each part broken and found with its fix.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::Value;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `ccs doctor --json` with `bin` first on PATH and `home` as HOME (Claude Code's settings);
/// the exit status and the findings.
fn doctor(ccs_home: &Path, bin: &Path, home: &Path) -> (i32, Value) {
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(["doctor", "--json"])
        .env("CCS_HOME", ccs_home)
        .env("HOME", home)
        .env("PATH", path)
        .env("NO_PROXY", "*")
        .current_dir(home)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ccs runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// The findings of `check` that are not ok.
fn trouble<'a>(v: &'a Value, check: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check && f["level"] != "ok")
        .collect()
}

fn private(paths: &ccs::config::Paths) {
    std::fs::set_permissions(&paths.home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(paths.config_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A stand-in `claude` that says its version, in a folder of its own.
fn claude_stand_in(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(&claude, "#!/bin/sh\necho '2.1.332 (Claude Code)'\n").unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_healthy_home_is_clean_and_each_broken_part_is_found_with_its_fix() {
    let sim = sim(&scenario(&[("a@example.com", 50)]), false);
    let port = free_port();
    let (dir, paths, _config) = home_with_port(&sim.url(), port);
    let _stop = StopOnDrop(paths.home.clone());
    private(&paths);
    let user_home = dir.path().join("user");
    std::fs::create_dir_all(&user_home).unwrap();
    let bin = claude_stand_in(dir.path());

    // No account yet: the daemon is started (as any command that needs it does) and the
    // empty pool is the one thing to do.
    let (code, v) = doctor(&paths.home, &bin, &user_home);
    assert_eq!(code, 1, "{v:#}");
    let accounts = trouble(&v, "account");
    assert_eq!(accounts.len(), 1, "{v:#}");
    assert_eq!(accounts[0]["fix"], "ccs claude --auth");

    let url = format!("http://127.0.0.1:{port}");
    rt().block_on(add_account(&sim.url(), &url, "a@example.com"));
    let (code, v) = doctor(&paths.home, &bin, &user_home);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["healthy"], true);
    for check in [
        "home",
        "config",
        "daemon",
        "account",
        "clock",
        "claude_code",
        "disk",
    ] {
        assert!(
            v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["check"] == check),
            "no {check} finding: {v:#}"
        );
    }
    let daemon = &v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "daemon")
        .unwrap();
    assert!(
        daemon["text"]
            .as_str()
            .unwrap()
            .contains(env!("CARGO_PKG_VERSION")),
        "{daemon}"
    );

    // config.yaml readable by others: named, with its chmod.
    std::fs::set_permissions(paths.config_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, v) = doctor(&paths.home, &bin, &user_home);
    assert_eq!(code, 1);
    let open = trouble(&v, "config");
    assert_eq!(open.len(), 1, "{v:#}");
    assert_eq!(
        open[0]["fix"],
        format!("chmod 600 {}", paths.config_file().display())
    );
    private(&paths);

    // Claude Code gone from PATH.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, v) = doctor(&paths.home, &empty, &user_home);
    assert_eq!(code, 1);
    assert_eq!(trouble(&v, "claude_code").len(), 1, "{v:#}");

    // A status line of the user's own in Claude Code's settings: ccs's is not shown.
    std::fs::create_dir_all(user_home.join(".claude")).unwrap();
    std::fs::write(
        user_home.join(".claude/settings.json"),
        r#"{"statusLine":{"type":"command","command":"my-line"}}"#,
    )
    .unwrap();
    let (code, v) = doctor(&paths.home, &bin, &user_home);
    assert_eq!(code, 1);
    let line = trouble(&v, "claude_code");
    assert!(
        line[0]["text"].as_str().unwrap().contains("settings.json"),
        "{v:#}"
    );
    std::fs::remove_file(user_home.join(".claude/settings.json")).unwrap();

    // The account's grant revoked at the authority, and a refresh: dead, with the login to run.
    rt().block_on(async {
        let r = http()
            .post(format!("{}/sim/users/a@example.com/revoke", sim.url()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        manage(
            &url,
            reqwest::Method::POST,
            "/accounts/a@example.com/refresh",
            None,
        )
        .await
    });
    let (code, v) = doctor(&paths.home, &bin, &user_home);
    assert_eq!(code, 1);
    let dead = trouble(&v, "account");
    assert_eq!(dead.len(), 1, "{v:#}");
    assert_eq!(dead[0]["level"], "error");
    assert!(
        dead[0]["fix"]
            .as_str()
            .unwrap()
            .contains("ccs claude --auth"),
        "{v:#}"
    );
}

/// Moves the simulator's manual clock forward by `secs` and returns where it stands, in whole
/// seconds (as its `Date` header says it).
fn advance(sim: &str, secs: u64) -> i64 {
    rt().block_on(async {
        let r = http()
            .post(format!("{sim}/sim/clock/advance"))
            .json(&serde_json::json!({ "secs": secs }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        r.json::<Value>().await.unwrap()["now"].as_i64().unwrap()
    })
}

/// This machine's clock, read as the doctor reads it.
fn local_ms() -> i64 {
    ccs::commands::now_ms() as i64
}

/// Runs the doctor and checks its clock finding against the skew it must have seen: the
/// simulator's clock stands still at `server_secs` while this machine's moves on, so the skew
/// (this machine minus the server, in ms) lies between the local time before and after the run.
/// Returns the skew the doctor reported (0 when it said the clocks agree).
fn doctor_sees_skew(ccs_home: &Path, bin: &Path, home: &Path, server_secs: i64) -> i64 {
    let before = local_ms() - server_secs * 1000;
    let (code, v) = doctor(ccs_home, bin, home);
    let after = local_ms() - server_secs * 1000;
    let clock = trouble(&v, "clock");
    // Within a second the doctor says the clocks agree (the header has whole seconds).
    let (reported, lo, hi) = match clock.as_slice() {
        [] => (0, -1000, 1000),
        [f] => {
            assert_eq!(f["level"], "error", "{v:#}");
            assert_eq!(code, 1, "a skewed clock needs action: {v:#}");
            let text = f["text"].as_str().unwrap();
            let secs: i64 = text
                .split("clock is ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no seconds in {text:?}"));
            if text.contains(" s ahead of ") {
                (secs * 1000, secs * 1000, secs * 1000 + 999)
            } else {
                assert!(text.contains(" s behind "), "{text:?}");
                (-secs * 1000, -secs * 1000 - 999, -secs * 1000)
            }
        }
        _ => panic!("one clock finding at most: {v:#}"),
    };
    assert!(
        lo <= after && before <= hi,
        "the doctor reported {reported} ms, the skew was between {before} and {after} ms: {v:#}"
    );
    reported
}

#[test]
fn a_server_clock_an_hour_ahead_is_a_skewed_clock() {
    let sim = sim(&scenario(&[("a@example.com", 50)]), true);
    let port = free_port();
    let (dir, paths, _config) = home_with_port(&sim.url(), port);
    let _stop = StopOnDrop(paths.home.clone());
    private(&paths);
    let bin = claude_stand_in(dir.path());
    let started = advance(&sim.url(), 0);
    let same = doctor_sees_skew(&paths.home, &bin, dir.path(), started);
    assert!(same >= 0, "the server's clock only stood still: {same} ms");
    let moved = advance(&sim.url(), 3600);
    assert_eq!(moved, started + 3600);
    let skew = doctor_sees_skew(&paths.home, &bin, dir.path(), moved);
    assert!(
        skew <= -3_000_000,
        "an hour ahead is far behind here: {skew} ms"
    );
}
