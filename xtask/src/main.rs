//! `cargo xtask`: the project's tasks, in Rust so they run wherever cargo does.
//!
//! - `cargo xtask test`: installs what the tests drive when it is missing (Debian's chromium,
//!   chromium-driver, tmux, redis-server and systemd; the pinned test clients under `target/test-env`: the `anthropic`
//!   Python SDK in a venv, Claude Code from npm) and cargo-deny, then
//!   runs `cargo fmt --check`, clippy with `-D warnings`, `cargo deny`, and every test of the
//!   workspace with the planted-bug checks and the real-client suites turned on; it fails when
//!   a process the tests started (a browser, a daemon, Redis, tmux, …) outlives them.
//! - `cargo xtask soak [--worlds N] [--seed S]`: explores random simulated worlds in release
//!   mode (`ccs sim soak`), printing any failure as a regression file.
//!
//! - `cargo xtask crash [--cycles N]`: the crash test (`tests/crash.rs`) on the release build
//!   (eight accounts, 1-second tokens, four threads burning CPU beside the load):
//!   SIGKILL the daemon at random moments under load N times (200 by default) and classify
//!   every account lost.
//!
//! - `cargo xtask man [--out DIR]`: the manual pages, one per command, generated from the
//!   command line's definitions (`ccs manual`) by the release build, into `target/man`.
//!
//! Must not: download anything but packages by name from their registries, or touch anything
//! outside the repository and cargo's own folders.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// The real clients the tests drive, pinned so a new release cannot change what they see.
const ANTHROPIC_SDK_VERSION: &str = "2.14.0";
const CLAUDE_CODE_VERSION: &str = "2.1.332";
const CARGO_DENY_VERSION: &str = "0.20.2";

const USAGE: &str = "usage: cargo xtask test             set up the test clients, run every check and test\n\
\x20      cargo xtask soak [ARGS]      explore random simulated worlds (ccs sim soak ARGS)\n\
\x20      cargo xtask crash [--cycles N] SIGKILL the release daemon under load N times (default 200)\n\
\x20      cargo xtask memory [--minutes N] the release daemon under full load N minutes (default 60): RSS report\n\
\x20      cargo xtask man [--out DIR]  write the manual pages (default target/man) from the release build\n\
\x20      cargo xtask help             this";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Task<'a> {
    Help,
    Run(&'a str, &'a [String]),
    Unknown,
}

fn task(args: &[String]) -> Task<'_> {
    match args.first().map(String::as_str) {
        None => Task::Unknown,
        Some("help" | "--help" | "-h") => Task::Help,
        Some(t @ ("test" | "soak" | "crash" | "memory" | "man")) => Task::Run(t, &args[1..]),
        Some(_) => Task::Unknown,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let result = match task(&args) {
        Task::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Task::Unknown => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        Task::Run("test", _) => test(),
        Task::Run("soak", rest) => soak(rest),
        Task::Run("crash", rest) => crash(rest),
        Task::Run("memory", rest) => memory(rest),
        Task::Run(_, rest) => man(rest),
    };
    let secs = started.elapsed().as_secs();
    match result {
        Ok(()) => {
            println!("xtask: done in {}m{:02}s", secs / 60, secs % 60);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: {e} (after {}m{:02}s)", secs / 60, secs % 60);
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    // xtask/ sits in the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a command in the repository root; an error names it and its exit status.
fn run(step: &str, cmd: &mut Command) -> Result<(), String> {
    println!("== {step}");
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("{step}: cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn test() -> Result<(), String> {
    let env = root().join("target/test-env");
    system_packages()?;
    python_sdk(&env)?;
    claude_code(&env)?;
    run("format", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "ccs/planted,ccs/external-clients",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    supply_chain()?;
    let before = processes();
    let tests = run(
        "tests (every suite, planted-bug checks and real clients included)",
        cargo()
            .args([
                "test",
                "--workspace",
                "--features",
                "ccs/planted,ccs/external-clients",
            ])
            .env("CCS_TEST_PYTHON", env.join("venv/bin/python"))
            .env(
                "CCS_TEST_CLAUDE",
                env.join("claude/node_modules/.bin/claude"),
            ),
    );
    let left = left_behind(&before);
    tests?;
    left
}

/// What the tests start, by a piece of its command line: browsers, drivers, daemons and
/// simulators of ours, Redis, tmux, Claude Code.
const STARTED_BY_TESTS: [&str; 8] = [
    "chromium",
    "chromedriver",
    "redis-server",
    "tmux",
    "target/debug/ccs",
    "target/release/ccs",
    "claude/node_modules",
    "test-env/venv",
];

/// Every process now: pid and command line.
fn processes() -> std::collections::BTreeMap<u32, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if !cmd.trim().is_empty() {
                out.insert(pid, cmd.trim().to_string());
            }
        }
    }
    out
}

/// Fails when a process the tests started outlives them (a few seconds' grace for ones that
/// are ending): the tests clean up after themselves, a failing one included.
fn left_behind(before: &std::collections::BTreeMap<u32, String>) -> Result<(), String> {
    let stray = || -> Vec<(u32, String)> {
        processes()
            .into_iter()
            .filter(|(pid, cmd)| {
                !before.contains_key(pid)
                    && *pid != std::process::id()
                    && STARTED_BY_TESTS.iter().any(|p| cmd.contains(p))
            })
            .collect()
    };
    for _ in 0..10 {
        if stray().is_empty() {
            println!("== no process the tests started is left");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let left = stray();
    Err(format!(
        "{} processes the tests started are still running: {}",
        left.len(),
        left.iter()
            .map(|(pid, cmd)| format!("{pid} {}", cmd.chars().take(120).collect::<String>()))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// Debian's packages the tests drive: Chromium and its WebDriver (the dashboard's browser
/// tests; no browser is downloaded), tmux (Claude Code's terminal, for its status line) and
/// redis-server (the shared store's tests start their own, on a free loopback port).
fn system_packages() -> Result<(), String> {
    let wanted = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
        ("/usr/bin/tmux", "tmux"),
        ("/usr/bin/redis-server", "redis-server"),
        // systemd-analyze, which checks the service's unit files (tests/service.rs).
        ("/usr/bin/systemd-analyze", "systemd"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        println!(
            "== system packages: chromium, chromium-driver, tmux, redis-server, systemd already \
             installed"
        );
        return Ok(());
    }
    // As root directly, else through sudo when there is one.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    if !root && !have("sudo", "--version") {
        return Err(format!(
            "the tests need {}: install them (apt-get install {}) and run cargo xtask test again",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&missing);
    let step = format!("system packages: apt-get install {}", missing.join(" "));
    if run(&step, &mut apt(&install)).is_err() {
        run(
            "system packages: apt-get update",
            &mut apt(&["update", "-qq"]),
        )?;
        run(&step, &mut apt(&install))?;
    }
    Ok(())
}

/// The official `anthropic` SDK in a venv of its own.
fn python_sdk(env: &Path) -> Result<(), String> {
    let python = env.join("venv/bin/python");
    let check = format!(
        "import anthropic, sys; sys.exit(anthropic.__version__ != '{ANTHROPIC_SDK_VERSION}')"
    );
    if Command::new(&python)
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("== test clients: anthropic {ANTHROPIC_SDK_VERSION} (Python) already installed");
        return Ok(());
    }
    run(
        "test clients: a Python venv",
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(env.join("venv")),
    )?;
    run(
        &format!("test clients: anthropic {ANTHROPIC_SDK_VERSION} (Python)"),
        Command::new(env.join("venv/bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("anthropic=={ANTHROPIC_SDK_VERSION}"),
        ]),
    )
}

/// The Claude Code CLI from npm (its native binary is an optional dependency of the package).
fn claude_code(env: &Path) -> Result<(), String> {
    let prefix = env.join("claude");
    let bin = prefix.join("node_modules/.bin/claude");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CLAUDE_CODE_VERSION));
    if installed {
        println!("== test clients: Claude Code {CLAUDE_CODE_VERSION} already installed");
        return Ok(());
    }
    if !have("npm", "--version") {
        return Err("npm is not installed: install Node.js and npm (apt-get install nodejs npm), then run cargo xtask test again".into());
    }
    std::fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
    run(
        &format!("test clients: Claude Code {CLAUDE_CODE_VERSION} (npm)"),
        Command::new("npm")
            .args(["install", "--prefix"])
            .arg(&prefix)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .arg(format!("@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}")),
    )
}

/// cargo-deny: bans, licenses and sources always; advisories where the RustSec database can be
/// had (it is fetched from a git host, which some machines cannot reach).
fn supply_chain() -> Result<(), String> {
    let installed = cargo()
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_DENY_VERSION));
    if !installed {
        run(
            &format!("install cargo-deny {CARGO_DENY_VERSION} (once)"),
            cargo().args([
                "install",
                "--locked",
                "--version",
                CARGO_DENY_VERSION,
                "cargo-deny",
            ]),
        )?;
    }
    run(
        "supply chain: cargo deny check bans licenses sources",
        cargo().args(["deny", "check", "bans", "licenses", "sources"]),
    )?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let db = home.map(|h| h.join("advisory-dbs"));
    let have_db = db
        .as_ref()
        .and_then(|d| std::fs::read_dir(d).ok())
        .is_some_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_dir())));
    if have_db {
        run(
            "supply chain: cargo deny check advisories (local database)",
            cargo().args(["deny", "check", "--disable-fetch", "advisories"]),
        )
    } else {
        println!(
            "== supply chain: advisories SKIPPED: no RustSec database under {} and it cannot be \
             fetched from this machine; the accepted advisories are listed in deny.toml",
            db.map(|d| d.display().to_string()).unwrap_or_default()
        );
        Ok(())
    }
}

fn soak(args: &[String]) -> Result<(), String> {
    run(
        "soak: ccs sim soak (release)",
        cargo()
            .args(["run", "--release", "--quiet", "--", "sim", "soak"])
            .args(args),
    )
}

fn memory(args: &[String]) -> Result<(), String> {
    let minutes = match args {
        [] => "60".to_string(),
        [flag, n] if flag == "--minutes" && n.parse::<u64>().is_ok_and(|n| n > 0) => n.clone(),
        _ => return Err("usage: cargo xtask memory [--minutes N]".into()),
    };
    run(
        &format!("memory: {minutes} min of full load on the release daemon"),
        cargo()
            .args(["bench", "--bench", "memory"])
            .env("MEMORY_MINUTES", &minutes),
    )
}

fn crash(args: &[String]) -> Result<(), String> {
    let cycles = match args {
        [] => "200".to_string(),
        [flag, n] if flag == "--cycles" && n.parse::<u64>().is_ok() => n.clone(),
        _ => return Err("usage: cargo xtask crash [--cycles N]".into()),
    };
    run(
        &format!("crash: {cycles} SIGKILLs of the release daemon under load"),
        // The campaign's shape: eight accounts on 1-second tokens, the machine loaded.
        cargo()
            .args(["test", "--release", "--test", "crash", "--", "--nocapture"])
            .env("CCS_CRASH_CYCLES", &cycles)
            .env("CCS_CRASH_ACCOUNTS", "8")
            .env("CCS_CRASH_TOKEN_MS", "1000")
            .env("CCS_CRASH_BURN", "4"),
    )
}

fn man(args: &[String]) -> Result<(), String> {
    let out = match args {
        [] => root().join("target/man"),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => return Err("usage: cargo xtask man [--out DIR]".into()),
    };
    run(
        &format!("man: the manual pages into {}", out.display()),
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "--bin",
                "ccs",
                "--",
                "manual",
            ])
            .arg(&out),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_a_task_and_an_unknown_word_is_not() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for h in ["help", "--help", "-h"] {
            assert_eq!(task(&words(&[h])), Task::Help);
        }
        let crash = words(&["crash", "--cycles", "5"]);
        assert_eq!(task(&crash), Task::Run("crash", &crash[1..]));
        assert_eq!(task(&words(&["tset"])), Task::Unknown);
        assert_eq!(task(&[]), Task::Unknown);
    }

    #[test]
    fn a_process_the_tests_left_running_fails_the_run() {
        let before = processes();
        // A stand-in for a leftover browser: `sleep` named as one.
        let mut child = Command::new("bash")
            .args(["-c", "exec -a chromium-left-behind sleep 30"])
            .spawn()
            .unwrap();
        // Until it has become the stand-in, its command line is still this test's.
        let named = format!("/proc/{}/cmdline", child.id());
        for _ in 0..200 {
            if std::fs::read(&named).is_ok_and(|c| String::from_utf8_lossy(&c).contains("chromium"))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let err = left_behind(&before).expect_err("a stray browser is found");
        assert!(
            err.contains(&child.id().to_string()) && err.contains("chromium"),
            "{err}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(left_behind(&before), Ok(()));
    }
}
