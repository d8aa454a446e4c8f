//! The account half of `ccs claude`: `--auth` (browser or `--headless`, `--add`), `--accounts`,
//! `--use`, `--nickname`, `--logout`. Logins run here; every change goes to the daemon.

use std::io::IsTerminal;
use std::sync::mpsc;

use anyhow::{bail, Context, Result};

use super::cliproxy::{connect, ensure_running};
use crate::api;
use crate::client::Client;
use crate::config::{Config, Paths};
use crate::endpoint::Endpoint;
use crate::oauth::login::{self, Answer, Attempt, Source};

/// A login begun here (`Attempt::new`) or on a remote daemon (`/login/start`): where to send
/// the browser, and the state its answer must carry.
pub(crate) struct Begun {
    pub url: String,
    pub state: String,
}

impl From<&Attempt> for Begun {
    fn from(a: &Attempt) -> Begun {
        Begun {
            url: a.url.clone(),
            state: a.state.clone(),
        }
    }
}

/// Runs one login's conversation with the person: the callback listener (and, headless, the
/// paste on stdin), the spinner, the timeout, and the page the browser gets. `complete` turns
/// the answer into an account e-mail and whatever the caller needs; `again` is the command to
/// suggest when it times out.
pub(crate) fn interactive<T>(
    config: &Config,
    headless: bool,
    again: &str,
    attempt: &Begun,
    complete: impl FnOnce(&Answer) -> Result<(String, T)>,
) -> Result<(String, T)> {
    let (tx, rx) = mpsc::channel::<Source>();
    match login::listen(config.oauth.callback_port) {
        Ok(listener) => login::serve_callbacks(listener, tx.clone()),
        Err(e) if headless => errln!("note: {e}; waiting for the pasted code only"),
        Err(e) => return Err(e),
    }
    if headless {
        outln!(
            "Open this address on any device and sign in:\n\n  {}\n",
            attempt.url
        );
        outln!("Then paste the code the page shows (CODE#STATE), or the whole address the browser ended on:");
        login::read_pastes(tx);
    } else {
        let opened = login::open_browser(&attempt.url);
        outln!(
            "{} If it does not open, visit:\n\n  {}\n",
            if opened {
                "Opening your browser to log in."
            } else {
                "Open this address in a browser to log in."
            },
            attempt.url
        );
        drop(tx);
    }
    let spinner = !headless && std::io::stderr().is_terminal();
    let deadline = std::time::Instant::now() + login::LOGIN_TIMEOUT;
    let (answer, callback) = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(source) = login::wait(&rx, left, spinner) else {
            bail!(
                "no answer within 5 minutes; nothing was stored. Run `{again}` again, or add \
                 --headless to paste the code by hand (works over SSH)"
            );
        };
        let (answer, callback) = match source {
            Source::Browser(cb) => (cb.answer.clone(), Some(cb)),
            Source::Paste(a) => (a, None),
            Source::StdinClosed => bail!(
                "no code can be pasted here (standard input is closed); nothing was stored. \
                 Run `{again} --headless` in a terminal (it works over SSH) and paste the code \
                 there"
            ),
        };
        if answer.belongs_to(&attempt.state) {
            break (answer, callback);
        }
        // A stale tab or a forged callback must not end the login in progress.
        match callback {
            Some(cb) => cb.respond(
                false,
                "This answer does not belong to the login in progress (its state does not \
                 match), so it was ignored. Finish the login in the tab ccs opened.",
            ),
            None => errln!(
                "that code belongs to another login attempt (its state does not match): paste \
                 the code of the address above"
            ),
        }
    };
    let result = complete(&answer);
    if let Some(cb) = callback {
        match &result {
            Ok((email, _)) => cb.respond(true, &format!("Logged in as {email}.")),
            Err(e) => cb.respond(false, &e.to_string()),
        }
    }
    result
}

/// `ccs claude --auth [--add] [--headless]`. Returns the e-mail logged in. Against a remote
/// daemon the login is the server's: it makes the PKCE pair and exchanges the code, and this
/// CLI only brings the browser's answer (from its callback listener, or pasted) to it.
pub fn login(paths: &Paths, config: &Config, add: bool, headless: bool) -> Result<String> {
    let endpoint = Endpoint::resolve(paths, config)?;
    let client = connect(&endpoint, paths, config)?;
    let before = client.accounts()?;
    let again = "ccs claude --auth";
    let (email, reply) = if endpoint.remote {
        let redirect = format!("http://localhost:{}/callback", config.oauth.callback_port);
        let started = client.start_login(Some(redirect))?;
        let begun = Begun {
            url: started.url,
            state: started.state,
        };
        interactive(config, headless, again, &begun, |answer| {
            let done = client.finish_login(&answer.into())?;
            Ok((done.email, done.added))
        })?
    } else {
        let attempt = Attempt::new(config)?;
        interactive(config, headless, again, &(&attempt).into(), |answer| {
            finish(config, &client, &attempt, answer)
        })?
    };
    let nickname = reply
        .account
        .as_ref()
        .map(|a| a.nickname.as_str())
        .unwrap_or("");
    if !reply.created {
        outln!("Logged in as {email} (nickname {nickname}): credentials refreshed, no new account");
    } else {
        outln!("Logged in as {email} (nickname {nickname})");
        if !add && !before.is_empty() {
            outln!("It joins the {} account(s) already in the pool; `ccs claude --accounts` lists them.", before.len());
        }
    }
    Ok(email)
}

pub(crate) fn finish(
    config: &Config,
    client: &Client,
    attempt: &Attempt,
    answer: &Answer,
) -> Result<(String, api::Added)> {
    let (email, tokens, profile) = login::complete(config, attempt, answer)?;
    let body = api::AddAccount::from_login(&email, tokens, profile.as_ref());
    let reply = client
        .add_account(&body)
        .context("the daemon did not take the new token")?;
    Ok((email, reply))
}

fn pct(w: Option<&api::WindowView>) -> String {
    match w {
        Some(w) => format!("{:.0}%", w.utilization * 100.0),
        None => "-".into(),
    }
}

/// "in 2h 13m" from an RFC 3339 time.
pub fn until(t: Option<&str>) -> String {
    let Some(s) = t else {
        return "-".into();
    };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(s) else {
        return s.to_string();
    };
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    super::in_words(ms).unwrap_or_else(|| "now".into())
}

/// "3m ago" (or "2h 13m ago", "just now") from an RFC 3339 time to now; "never" without one.
fn ago(t: Option<&str>) -> String {
    let Some(s) = t else {
        return "never".into();
    };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(s) else {
        return s.to_string();
    };
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    match super::now_ms().checked_sub(ms) {
        Some(d) if d >= 60_000 => format!(
            "{} ago",
            crate::config::words(std::time::Duration::from_millis(d))
        ),
        _ => "just now".into(),
    }
}

/// `ccs claude --accounts [--json]`.
pub fn list(paths: &Paths, config: &Config, json_out: bool) -> Result<()> {
    let client = ensure_running(paths, config)?;
    let list = client.accounts()?;
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&api::Accounts { accounts: list })?
        );
        return Ok(());
    }
    if list.is_empty() {
        outln!("No account is logged in. Log one in with `ccs claude --auth` (or `--auth --headless` over SSH).");
        return Ok(());
    }
    outln!(
        "  {:<14} {:<30} {:<5} {:<10} {:>5} {:>6}  {:<14} {:>3}  {}",
        "NICKNAME",
        "EMAIL",
        "PLAN",
        "STATE",
        "5H",
        "WEEK",
        "COOLDOWN",
        "POS",
        "LAST USED"
    );
    let mut fixes = Vec::new();
    for a in &list {
        let state = if a.paused {
            format!("{} (paused)", a.state)
        } else {
            a.state.clone()
        };
        outln!(
            "{} {:<14} {:<30} {:<5} {:<10} {:>5} {:>6}  {:<14} {:>3}  {}",
            if a.default { "*" } else { " " },
            a.nickname,
            a.email,
            a.plan.as_deref().unwrap_or("-"),
            state,
            pct(a.five_hour.as_ref()),
            pct(a.seven_day.as_ref()),
            until(a.cooldown_until.as_deref()),
            a.position
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            ago(a.last_used_at.as_deref()),
        );
        if let Some(f) = &a.fix {
            fixes.push(format!("{}: {f}", a.nickname));
        }
    }
    for f in fixes {
        outln!("\n{f}");
    }
    Ok(())
}

/// `ccs claude --use <nickname or email>`.
pub fn use_account(paths: &Paths, config: &Config, who: &str) -> Result<()> {
    let client = ensure_running(paths, config)?;
    let r = client.set_default(who)?;
    outln!("{} is now the default account", r.default);
    Ok(())
}

fn default_account(client: &Client) -> Result<String> {
    client
        .accounts()?
        .into_iter()
        .find(|a| a.default)
        .map(|a| a.email)
        .context("no account is logged in: run `ccs claude --auth`")
}

/// `ccs claude --nickname NEW [--account X]`.
pub fn nickname(paths: &Paths, config: &Config, new: &str, account: Option<&str>) -> Result<()> {
    let client = ensure_running(paths, config)?;
    let who = match account {
        Some(a) => a.to_string(),
        None => default_account(&client)?,
    };
    let r = client.rename(&who, new)?;
    outln!("{} is now called {}", r.email, r.nickname);
    Ok(())
}

/// `ccs claude --logout [--account X | --all] [--yes]`.
pub fn logout(
    paths: &Paths,
    config: &Config,
    account: Option<&str>,
    all: bool,
    yes: bool,
) -> Result<()> {
    let client = ensure_running(paths, config)?;
    let targets: Vec<String> = if all {
        client.accounts()?.into_iter().map(|a| a.email).collect()
    } else {
        vec![match account {
            Some(a) => a.to_string(),
            None => default_account(&client)?,
        }]
    };
    if targets.is_empty() {
        outln!("No account is logged in.");
        return Ok(());
    }
    if all && !yes && std::io::stdin().is_terminal() {
        err!(
            "Log out {} ({})? [y/N] ",
            match targets.len() {
                1 => "the 1 account".to_string(),
                n => format!("all {n} accounts"),
            },
            targets.join(", ")
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            outln!("Nothing changed.");
            return Ok(());
        }
    }
    for who in targets {
        let r = client.remove_account(&who)?;
        outln!("Logged out {} (token and token file removed)", r.removed);
    }
    Ok(())
}
