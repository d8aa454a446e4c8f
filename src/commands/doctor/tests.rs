//! Each judgment, healthy and broken.

use super::*;
use crate::commands::statusline::Installed;

/// What a check saw (the judgments take any error that displays).
fn seen<T>(v: T) -> Result<T, &'static str> {
    Ok(v)
}

fn failed<T>(why: &'static str) -> Result<T, &'static str> {
    Err(why)
}

fn status(version: &str) -> api::Status {
    serde_json::from_value(serde_json::json!({
        "state": "running", "url": "http://127.0.0.1:8317", "version": version, "pid": 42,
        "uptime_secs": 9, "accounts": 1, "by_state": {}, "paused": 0, "requests_last_hour": 0,
        "hops_last_hour": 0, "sessions": 0, "store_notes": [], "store_bytes": 0,
        "refreshes": [
            {"at": "2026-12-04T10:00:00Z", "account": "bob@example.com", "outcome": "transient", "millis": 30000},
            {"at": "2026-12-04T09:00:00Z", "account": "ann@example.com", "outcome": "ok", "millis": 80}
        ],
        "errors": [{"at": "2026-12-04T10:00:01Z", "level": "WARN", "message": "refresh of bob@example.com failed for now"}],
        "store": {"backend": "sled", "redis_url": null, "reachable": null, "daemon": null, "peers": [], "leases": []},
        "continuity": {"fit": true, "learned_reject": [], "fitted": 0, "fitted_after_400": 0},
        "runway": [], "alerts": []
    }))
    .expect("a status")
}

fn account(email: &str, state: &str) -> api::AccountView {
    serde_json::from_value(serde_json::json!({
        "email": email, "nickname": "", "default": false, "state": state, "fix": null,
        "refused_until": null, "paused": false, "plan": null,
        "expires_at": "2026-12-04T18:00:00Z", "position": 1, "pools": ["claude"],
        "five_hour": null, "seven_day": null, "cooldown_until": null,
        "created_at": "2026-12-01T00:00:00Z", "last_used_at": null
    }))
    .expect("an account")
}

#[test]
fn home_missing_open_or_private() {
    let h = Path::new("/h/.ccs");
    assert_eq!(judge_home(h, Some(0o700)).level, Level::Ok);
    let open = judge_home(h, Some(0o755));
    assert_eq!(open.level, Level::Warn);
    assert_eq!(open.fix.as_deref(), Some("chmod 700 /h/.ccs"));
    assert_eq!(judge_home(h, None).level, Level::Warn);
}

#[test]
fn a_readable_config_or_token_file_is_named_with_its_chmod() {
    let fine = [(PathBuf::from("/h/config.yaml"), 0o600)];
    assert_eq!(judge_files(&fine)[0].level, Level::Ok);
    let open = [
        (PathBuf::from("/h/config.yaml"), 0o644),
        (PathBuf::from("/h/auth/claude-a@x.json"), 0o600),
    ];
    let f = judge_files(&open);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].level, Level::Error);
    assert_eq!(f[0].fix.as_deref(), Some("chmod 600 /h/config.yaml"));
}

#[test]
fn the_daemon_up_elsewhere_of_another_version_or_down() {
    let url = "http://127.0.0.1:8317";
    let up = |v: &str| DaemonSeen::Up {
        status: Box::new(status(v)),
    };
    assert_eq!(judge_daemon(&up("0.1.0"), "0.1.0", url).level, Level::Ok);
    let old = judge_daemon(&up("0.0.9"), "0.1.0", url);
    assert_eq!(old.level, Level::Warn);
    assert!(old.text.contains("0.0.9"), "{}", old.text);
    assert!(old.fix.unwrap().starts_with("ccs cliproxy restart"));
    let moved = DaemonSeen::Elsewhere {
        pid: 7,
        url: "http://127.0.0.1:9000".into(),
    };
    assert_eq!(judge_daemon(&moved, "0.1.0", url).level, Level::Warn);
    let down = DaemonSeen::Down {
        why: "port 8317 is taken".into(),
    };
    let d = judge_daemon(&down, "0.1.0", url);
    assert_eq!(d.level, Level::Error);
    assert!(d.text.contains("port 8317 is taken"));
}

#[test]
fn each_account_with_its_last_refresh_and_error() {
    let s = status("0.1.0");
    let f = judge_accounts(
        &[
            account("ann@example.com", "fresh"),
            account("bob@example.com", "fresh"),
            account("cid@example.com", "dead"),
        ],
        &s,
    );
    assert_eq!(f[0].level, Level::Ok);
    assert!(
        f[0].text.contains("last refresh 2026-12-04T09:00:00Z (ok)"),
        "{}",
        f[0].text
    );
    assert!(f[0].text.contains("token valid until 2026-12-04T18:00:00Z"));
    assert_eq!(f[1].level, Level::Warn, "a failing refresh: {}", f[1].text);
    assert!(f[1]
        .text
        .contains("refresh of bob@example.com failed for now"));
    assert_eq!(f[2].level, Level::Error);
    assert!(f[2].fix.as_deref().unwrap().contains("ccs claude --auth"));
    assert_eq!(judge_accounts(&[], &s)[0].level, Level::Warn);
}

#[test]
fn a_skewed_clock_is_an_error_either_way_and_an_unreachable_authority_a_warning() {
    let base = "https://api.anthropic.com";
    assert_eq!(judge_clock(base, seen(0)).level, Level::Ok);
    assert_eq!(judge_clock(base, seen(29_000)).level, Level::Ok);
    let ahead = judge_clock(base, seen(3_600_000));
    assert_eq!(ahead.level, Level::Error);
    assert!(ahead.text.contains("3600 s ahead of"), "{}", ahead.text);
    assert!(judge_clock(base, seen(-90_000))
        .text
        .contains("90 s behind"));
    assert_eq!(judge_clock(base, failed("refused")).level, Level::Warn);
}

#[test]
fn claude_code_missing_found_and_whose_status_line() {
    assert_eq!(
        judge_claude(&ClaudeSeen::Missing {
            why: "not on PATH".into()
        })[0]
            .level,
        Level::Warn
    );
    let found = |v: Option<&str>, s| ClaudeSeen::Found {
        path: "/usr/bin/claude".into(),
        version: v.map(str::to_string),
        status_line: s,
    };
    let f = judge_claude(&found(Some("2.1.332 (Claude Code)"), Installed::Ours));
    assert!(f.iter().all(|f| f.level == Level::Ok), "{f:?}");
    let f = judge_claude(&found(
        None,
        Installed::Theirs("/h/.claude/settings.json".into()),
    ));
    assert_eq!(f[0].level, Level::Warn);
    assert_eq!(f[1].level, Level::Warn);
    assert!(f[1].text.contains("/h/.claude/settings.json"));
    assert_eq!(
        judge_claude(&found(Some("2"), Installed::Off))[1].level,
        Level::Ok
    );
}

#[test]
fn a_certificate_in_its_last_month_or_past_its_end() {
    let ends = "2027-12-04T00:00:00Z";
    assert_eq!(judge_cert(ends, Some(200)).level, Level::Ok);
    assert_eq!(judge_cert(ends, Some(12)).level, Level::Warn);
    assert_eq!(judge_cert(ends, Some(-1)).level, Level::Error);
    assert!(judge_cert(ends, Some(12))
        .fix
        .unwrap()
        .contains("--self-signed"));
    let in_ten_days =
        crate::store::mirror::rfc3339(crate::commands::now_ms() + 10 * 86_400_000 + 60_000);
    assert_eq!(crate::tls::days_left(&in_ten_days), Some(10));
}

#[test]
fn remote_redis_and_disk() {
    assert_eq!(
        judge_remote("https://s:8317", seen("0.1.0".into())).level,
        Level::Ok
    );
    let pin = judge_remote("https://s:8317", failed("certificate fingerprint differs"));
    assert_eq!(pin.level, Level::Error);
    assert!(pin.text.contains("fingerprint"));
    assert_eq!(judge_redis("redis://r", seen(true)).level, Level::Ok);
    assert_eq!(judge_redis("redis://r", seen(false)).level, Level::Warn);
    assert_eq!(
        judge_redis("redis://r", failed("refused")).level,
        Level::Error
    );
    let h = Path::new("/h");
    assert_eq!(judge_disk(h, Some(DISK_LOW * 10)).level, Level::Ok);
    assert_eq!(judge_disk(h, Some(DISK_LOW - 1)).level, Level::Error);
}
