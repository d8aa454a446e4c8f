//! `ccs statusline`: the command Claude Code runs for its status bar (`statusLine` in its
//! settings). It reads the status JSON Claude Code writes on stdin (`session_id` among it),
//! asks the daemon which account serves that conversation, and prints one short line. It
//! never waits long (`ASK_WITHIN`), never fails loudly (a status line is not the place for an
//! error), and never prints a secret.
//!
//! Also here: the settings `ccs claude` / `ccs run` hand Claude Code, unless the user has a
//! status line of their own.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use crate::api::SessionView;
use crate::config::{Config, Paths};

/// How long the status line waits for the daemon.
const ASK_WITHIN: Duration = Duration::from_millis(400);

#[derive(Deserialize, Default)]
struct StatusInput {
    session_id: Option<String>,
}

/// The line for a conversation the daemon describes as `v`.
pub fn line(v: &SessionView) -> String {
    // The pool's runway once it is under an hour, and the newest alert.
    let tail = v
        .runway
        .as_ref()
        .and_then(|r| r.short())
        .map(|r| format!(" · {r}"))
        .unwrap_or_default()
        + &v.alert
            .as_ref()
            .map(|a| format!(" · ! {a}"))
            .unwrap_or_default();
    let Some(account) = &v.account else {
        return format!("ccs: new conversation{tail}");
    };
    let who = match &v.nickname {
        Some(n) if !n.is_empty() => n.clone(),
        _ => account.clone(),
    };
    let pct = |u: Option<f64>| {
        u.map(|u| format!("{:.0}%", u * 100.0))
            .unwrap_or_else(|| "?".into())
    };
    let mut s = format!(
        "ccs: {who} · 5h {} · week {}",
        pct(v.five_hour),
        pct(v.seven_day)
    );
    if let Some(from) = &v.moved_from {
        s.push_str(&format!(" · moved from {from}"));
        if let Some(n) = v.reread_tokens {
            s.push_str(&format!(" · {} tokens re-read", short_count(n)));
        }
    }
    s + &tail
}

/// A token count as a person reads it: 950, 14k, 142k, 1.2M.
fn short_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{}k", (n + 500) / 1_000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

pub fn run() -> Result<()> {
    let mut input = String::new();
    let _ = std::io::stdin().take(1 << 20).read_to_string(&mut input);
    let session = serde_json::from_str::<StatusInput>(&input)
        .unwrap_or_default()
        .session_id;
    let out = (|| {
        let paths = Paths::from_env().ok()?;
        let config = crate::keys::load(&paths).ok()?;
        let client = crate::endpoint::Endpoint::resolve(&paths, &config)
            .ok()?
            .management_within(&config, ASK_WITHIN)
            .ok()?;
        let Some(id) = session else {
            return Some("ccs".to_string());
        };
        Some(match client.session(&id) {
            Ok(v) => line(&v),
            Err(_) => "ccs: daemon not answering".to_string(),
        })
    })()
    .unwrap_or_else(|| "ccs".to_string());
    outln!("{out}");
    Ok(())
}

fn has_status_line(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("statusLine").is_some())
}

/// Whose status line Claude Code shows, launched by ccs in `cwd`.
#[derive(Clone, Debug, PartialEq)]
pub enum Installed {
    /// ccs's: given at each launch, or set in a settings file to `ccs statusline`.
    Ours,
    /// Turned off in config.yaml (`cliproxy.status_line: false`).
    Off,
    /// A settings file sets another one, which ccs never overwrites.
    Theirs(PathBuf),
}

/// What `ccs doctor` reports of the status line.
pub fn installed(config: &Config, cwd: &Path) -> Installed {
    let theirs = settings_files(cwd).into_iter().find(|f| {
        has_status_line(f) && !std::fs::read_to_string(f).is_ok_and(|t| t.contains("statusline"))
    });
    match (theirs, config.status_line.0) {
        (Some(f), _) => Installed::Theirs(f),
        (None, false) => Installed::Off,
        (None, true) => Installed::Ours,
    }
}

/// Claude Code's settings files that apply in `cwd` (user, project, local project).
fn settings_files(cwd: &Path) -> Vec<PathBuf> {
    let user_dir = std::env::var_os("CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".claude")));
    let mut files: Vec<PathBuf> = user_dir
        .into_iter()
        .map(|d| d.join("settings.json"))
        .collect();
    files.push(cwd.join(".claude/settings.json"));
    files.push(cwd.join(".claude/settings.local.json"));
    files
}

/// The `--settings` JSON that gives Claude Code ccs's status line, or `None` when it is
/// turned off, when Claude Code runs without its terminal interface (`-p`/`--print`: no status
/// bar, and the arguments then go through exactly as typed), when the arguments bring settings
/// of their own, or when a settings file of the user's already sets a status line (never
/// overwritten).
pub fn settings_for(config: &Config, args: &[String], cwd: &Path) -> Option<String> {
    if !config.status_line.0 {
        return None;
    }
    let print_mode = args.iter().any(|a| a == "-p" || a == "--print");
    let own = args
        .iter()
        .any(|a| a == "--settings" || a.starts_with("--settings="));
    if print_mode || own {
        return None;
    }
    if settings_files(cwd).iter().any(|f| has_status_line(f)) {
        return None;
    }
    let me = std::env::current_exe().ok()?;
    let command = format!("{} statusline", shell_quote(&me.to_string_lossy()));
    Some(
        serde_json::json!({"statusLine": {"type": "command", "command": command, "padding": 0}})
            .to_string(),
    )
}

/// Quotes a path for `sh -c` (Claude Code runs the status line command through a shell).
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_account_its_use_and_a_recent_move() {
        let mut v = SessionView {
            account: Some("bob@example.com".into()),
            nickname: Some("bob".into()),
            five_hour: Some(0.424),
            seven_day: Some(0.1),
            moved_from: None,
            reread_tokens: None,
            runway: None,
            alert: None,
        };
        assert_eq!(line(&v), "ccs: bob · 5h 42% · week 10%");
        v.moved_from = Some("alice@example.com".into());
        assert_eq!(
            line(&v),
            "ccs: bob · 5h 42% · week 10% · moved from alice@example.com"
        );
        v.reread_tokens = Some(142_380);
        assert_eq!(
            line(&v),
            "ccs: bob · 5h 42% · week 10% · moved from alice@example.com · 142k tokens re-read"
        );
        v.account = None;
        assert_eq!(line(&v), "ccs: new conversation");
    }

    #[test]
    fn the_pools_runway_shows_once_it_is_under_an_hour() {
        use crate::api::RunwayState::{Dry, DryAt, Lasts};
        let runway = |state, seconds: Option<u64>| crate::api::Runway {
            pool: "claude".into(),
            state,
            dry_at: seconds.map(|_| "2026-12-03T17:05:00Z".into()),
            seconds,
            requests_per_hour: Some(120.0),
            freed: None,
            text: String::new(),
        };
        let mut v = SessionView {
            account: Some("bob@example.com".into()),
            nickname: None,
            five_hour: Some(0.9),
            seven_day: Some(0.2),
            moved_from: None,
            reread_tokens: None,
            runway: Some(runway(DryAt, Some(42 * 60 - 30))),
            alert: None,
        };
        assert_eq!(
            line(&v),
            "ccs: bob@example.com · 5h 90% · week 20% · pool 42m"
        );
        v.runway = Some(runway(DryAt, Some(3600)));
        assert_eq!(line(&v), "ccs: bob@example.com · 5h 90% · week 20%");
        v.runway = Some(runway(Dry, Some(0)));
        assert!(line(&v).ends_with(" · pool dry"), "{}", line(&v));
        v.runway = Some(crate::api::Runway {
            pool: "work".into(),
            ..runway(DryAt, Some(600))
        });
        assert!(line(&v).ends_with(" · pool work 10m"), "{}", line(&v));
        v.runway = Some(runway(Lasts, None));
        assert!(!line(&v).contains("pool"), "{}", line(&v));
        v.alert = Some("carol@example.com needs a login".into());
        assert_eq!(
            line(&v),
            "ccs: bob@example.com · 5h 90% · week 20% · ! carol@example.com needs a login"
        );
    }

    #[test]
    fn a_status_line_of_the_users_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let none: Vec<String> = vec![];
        assert!(settings_for(&config, &none, dir.path()).is_some());
        assert!(
            settings_for(&config, &["--settings".into(), "x.json".into()], dir.path()).is_none()
        );
        assert!(settings_for(&config, &["-p".into(), "hi".into()], dir.path()).is_none());
        std::fs::create_dir_all(dir.path().join(".claude")).unwrap();
        std::fs::write(
            dir.path().join(".claude/settings.local.json"),
            r#"{"statusLine":{"type":"command","command":"mine"}}"#,
        )
        .unwrap();
        assert!(settings_for(&config, &none, dir.path()).is_none());
        let off = Config {
            status_line: crate::config::On(false),
            ..Config::default()
        };
        assert!(settings_for(&off, &none, tempfile::tempdir().unwrap().path()).is_none());
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/usr/bin/ccs"), "/usr/bin/ccs");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
