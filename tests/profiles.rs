//! Native profiles with the real binary: creation through the headless login, isolated
//! launches, shared context groups, and handing a grant over to the pool.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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
}

fn setup() -> Setup {
    let sim = sim(
        &scenario(&[
            ("alice@example.com", 10),
            ("bob@example.com", 10),
            ("carol@example.com", 10),
        ]),
        false,
    );
    let (dir, paths, _) = home_with_port(&sim.url(), free_port());
    let yaml = std::fs::read_to_string(paths.config_file()).unwrap();
    std::fs::write(
        paths.config_file(),
        yaml.replace(
            "oauth:\n",
            &format!("oauth:\n  callback_port: {}\n", free_port()),
        ),
    )
    .unwrap();
    let stop = StopOnDrop(paths.home.clone());
    Setup {
        sim,
        _dir: dir,
        paths,
        _stop: stop,
    }
}

/// `ccs auth create NAME --headless [extra]`, pasting the code as a person would.
fn create(s: &Setup, name: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["auth", "create", name, "--headless"];
    args.extend_from_slice(extra);
    let mut login = Login::start(&s.paths.home, &args);
    let url = login.url();
    let (code, _) = code_from_page(&url);
    login.paste(&code);
    login.finish()
}

/// A stand-in `claude` that records its config folder and what it sees there, then writes a
/// file into `projects/` named after the profile's folder.
fn recorder(dir: &Path) -> PathBuf {
    let p = dir.join("claude");
    std::fs::write(
        &p,
        "#!/bin/sh\nout=\"$CLAUDE_CONFIG_DIR/seen.txt\"\n{ echo \"DIR=$CLAUDE_CONFIG_DIR\"; echo \"BASE=${ANTHROPIC_BASE_URL:-unset}\"; echo \"TOKEN=${ANTHROPIC_AUTH_TOKEN:-unset}\"; ls -a \"$CLAUDE_CONFIG_DIR\"; } > \"$out\"\nmkdir -p \"$CLAUDE_CONFIG_DIR/projects\"\necho hi > \"$CLAUDE_CONFIG_DIR/projects/from-$(basename \"$CLAUDE_CONFIG_DIR\").txt\"\nsleep 0.3\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn launch(s: &Setup, args: &[&str], claude: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ccs"))
        .args(args)
        .env("CCS_HOME", &s.paths.home)
        .env("ANTHROPIC_AUTH_TOKEN", "must-not-reach-a-profile")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", claude.parent().unwrap().display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn inst(s: &Setup, name: &str) -> PathBuf {
    s.paths.instances_dir().join(name)
}

#[test]
fn two_profiles_at_once_see_separate_config_folders() {
    let s = setup();
    assert_eq!(create(&s, "work", &[]).0, 0);
    assert_eq!(create(&s, "home", &[]).0, 0);
    assert_eq!(ccs::fsutil::mode(&inst(&s, "work")).unwrap(), 0o700);
    let creds: Value = serde_json::from_str(
        &std::fs::read_to_string(inst(&s, "work").join(".credentials.json")).unwrap(),
    )
    .unwrap();
    assert!(creds["claudeAiOauth"]["accessToken"]
        .as_str()
        .unwrap()
        .starts_with("sk-ant-oat01-"));
    assert!(creds["claudeAiOauth"]["refreshToken"]
        .as_str()
        .unwrap()
        .starts_with("sk-ant-ort01-"));
    assert!(creds["claudeAiOauth"]["expiresAt"].as_u64().unwrap() > 1_700_000_000_000);

    let bin = tempfile::tempdir().unwrap();
    let claude = recorder(bin.path());
    let a = launch(&s, &["work", "--some-claude-flag"], &claude);
    let b = launch(&s, &["run", "home", "--", "-p", "x"], &claude);
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seen_work = std::fs::read_to_string(inst(&s, "work").join("seen.txt")).unwrap();
    let seen_home = std::fs::read_to_string(inst(&s, "home").join("seen.txt")).unwrap();
    assert!(
        seen_work.contains(&format!("DIR={}", inst(&s, "work").display())),
        "{seen_work}"
    );
    assert!(
        seen_home.contains(&format!("DIR={}", inst(&s, "home").display())),
        "{seen_home}"
    );
    assert!(seen_work.contains(".credentials.json") && seen_home.contains(".credentials.json"));
    assert!(
        seen_work.contains("TOKEN=unset"),
        "no proxy key for a profile: {seen_work}"
    );
    assert!(
        seen_work.contains(&format!("BASE={}", s.sim.url())),
        "the configured upstream, never the proxy: {seen_work}"
    );
    assert!(
        !inst(&s, "home").join("projects/from-work.txt").exists(),
        "no sharing without a group"
    );
    let w: Value = serde_json::from_str(
        &std::fs::read_to_string(inst(&s, "work").join(".credentials.json")).unwrap(),
    )
    .unwrap();
    let h: Value = serde_json::from_str(
        &std::fs::read_to_string(inst(&s, "home").join(".credentials.json")).unwrap(),
    )
    .unwrap();
    assert_ne!(
        w["claudeAiOauth"]["refreshToken"],
        h["claudeAiOauth"]["refreshToken"]
    );

    let (code, out, _) = ccs(&s.paths.home, &["auth", "list", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["home", "work"]);
    assert_eq!(v["profiles"][1]["email"], "alice@example.com");
    assert_eq!(v["profiles"][0]["email"], "bob@example.com");
}

#[cfg(feature = "external-clients")]
#[test]
fn the_real_claude_code_runs_on_a_profiles_own_credentials() {
    let s = setup();
    assert_eq!(create(&s, "work", &[]).0, 0);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccs"));
    let out = claude_offline(&mut cmd, home.path())
        .args(["work", "-p", "hello"])
        .env("CCS_HOME", &s.paths.home)
        .env(
            "PATH",
            format!(
                "{}:/usr/bin:/bin",
                claude_code().parent().unwrap().display()
            ),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Served by alice@example.com."), "{stdout}");
}

#[test]
fn context_groups_share_history_and_leaving_keeps_it() {
    let s = setup();
    // History written before joining is merged, not lost.
    assert_eq!(create(&s, "a", &[]).0, 0);
    std::fs::create_dir_all(inst(&s, "a").join("projects/p1")).unwrap();
    std::fs::write(inst(&s, "a").join("projects/p1/old.jsonl"), "a's history").unwrap();
    assert_eq!(create(&s, "b", &["--context-group", "team"]).0, 0);
    let bin = tempfile::tempdir().unwrap();
    let claude = recorder(bin.path());
    let out = launch(&s, &["a", "--context-group", "team"], &claude)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a's launch wrote projects/from-a.txt; b sees it, and a's older history too.
    assert_eq!(
        std::fs::read_to_string(inst(&s, "b").join("projects/from-a.txt")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(inst(&s, "b").join("projects/p1/old.jsonl")).unwrap(),
        "a's history"
    );
    assert!(std::fs::symlink_metadata(inst(&s, "a").join("projects"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        !inst(&s, "b").join("todos").exists(),
        "todos are shared only with deeper continuity"
    );
    // The group is remembered for the next launch.
    let (_, out, _) = ccs(&s.paths.home, &["auth", "list", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["context_group"] == "team"),
        "{v}"
    );

    // Deeper continuity shares the session folders too.
    assert_eq!(
        create(&s, "c", &["--context-group", "team", "--deeper-continuity"]).0,
        0
    );
    let out = launch(&s, &["b", "--deeper-continuity"], &claude)
        .wait_with_output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(inst(&s, "c").join("todos/t.json"), "[]").unwrap();
    assert_eq!(
        std::fs::read_to_string(inst(&s, "b").join("todos/t.json")).unwrap(),
        "[]"
    );
    assert!(
        !inst(&s, "a").join("todos").exists(),
        "a did not ask for deeper continuity"
    );

    // Leaving keeps a private copy; the group keeps its data.
    let (code, out, err) = ccs(&s.paths.home, &["auth", "leave-group", "b"]);
    assert_eq!(code, 0, "{out}{err}");
    let projects = inst(&s, "b").join("projects");
    assert!(!std::fs::symlink_metadata(&projects)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(projects.join("from-a.txt")).unwrap(),
        "hi\n"
    );
    std::fs::write(projects.join("private.txt"), "b only").unwrap();
    assert!(!inst(&s, "a").join("projects/private.txt").exists());
    assert!(inst(&s, "a").join("projects/from-a.txt").exists());
}

#[test]
fn names_are_checked_force_recreates_and_remove_is_local() {
    let s = setup();
    for bad in ["../evil", "a/b", "claude", ".x"] {
        let (code, out, err) = ccs(&s.paths.home, &["auth", "create", bad, "--headless"]);
        assert_ne!(code, 0, "{bad} accepted: {out}");
        assert!(err.contains("profile name"), "{bad}: {err}");
    }
    assert!(!s.paths.instances_dir().join("evil").exists());
    assert_eq!(create(&s, "work", &[]).0, 0);
    assert_eq!(create(&s, "other", &[]).0, 0);
    let (code, _, err) = ccs(&s.paths.home, &["auth", "create", "work", "--headless"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("exists already") && err.contains("--force"),
        "{err}"
    );
    let before = std::fs::read_to_string(inst(&s, "work").join(".credentials.json")).unwrap();
    std::fs::write(inst(&s, "work").join("note.txt"), "x").unwrap();
    assert_eq!(create(&s, "work", &["--force"]).0, 0);
    let after = std::fs::read_to_string(inst(&s, "work").join(".credentials.json")).unwrap();
    assert_ne!(before, after, "a new login");
    assert!(
        !inst(&s, "work").join("note.txt").exists(),
        "re-created from scratch"
    );
    let (code, _, _) = ccs(&s.paths.home, &["auth", "remove", "work"]);
    assert_eq!(code, 0);
    assert!(!inst(&s, "work").exists());
    assert!(
        inst(&s, "other").join(".credentials.json").exists(),
        "only that instance"
    );
    let (code, _, err) = ccs(&s.paths.home, &["nosuch", "-p", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("neither a ccs command nor a profile"), "{err}");
}

#[test]
fn import_moves_refresh_ownership_to_the_daemon() {
    let s = setup();
    assert_eq!(create(&s, "work", &[]).0, 0);
    let creds: Value = serde_json::from_str(
        &std::fs::read_to_string(inst(&s, "work").join(".credentials.json")).unwrap(),
    )
    .unwrap();
    let old_refresh = creds["claudeAiOauth"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, err) = ccs(&s.paths.home, &["pool", "import", "work"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("the daemon now refreshes its grant"), "{out}");
    // The daemon refreshed the grant: the old refresh token is dead at the authority.
    assert!(!s.sim.model.refresh_token_is_current(&old_refresh));
    let counters = s.sim.model.counters();
    let alice = &counters
        .iter()
        .find(|(e, _)| e == "alice@example.com")
        .unwrap()
        .1;
    assert_eq!(alice.refresh_ok, 1);
    // The instance holds no usable refresh token any more.
    assert!(!inst(&s, "work").join(".credentials.json").exists());
    let retired: Value = serde_json::from_str(
        &std::fs::read_to_string(inst(&s, "work").join(".credentials.json.imported")).unwrap(),
    )
    .unwrap();
    assert!(retired["claudeAiOauth"]["refreshToken"].is_null());
    // The account is in the pool and serves.
    let (code, out, _) = ccs(&s.paths.home, &["claude", "--accounts", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accounts"][0]["email"], "alice@example.com");
    assert_eq!(v["accounts"][0]["state"], "fresh");
}
