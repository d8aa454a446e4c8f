//! The account half of `ccs claude`: `--auth` (browser or `--headless`, `--add`), `--accounts`,
//! `--use`, `--nickname`, `--logout`. Logins run here; every change goes to the daemon.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::cliproxy::ensure_running;
use crate::client::Client;
use crate::config::{Config, Paths};
use crate::oauth::login::{self, Answer, Attempt, Source};
use crate::oauth::parse_profile;

fn accounts(client: &Client) -> Result<Vec<Value>> {
    Ok(client.get("/v0/management/accounts")?["accounts"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Percent-encodes an account name for a URL path segment.
fn seg(who: &str) -> String {
    url::form_urlencoded::byte_serialize(who.as_bytes()).collect()
}

fn profile_blocking(config: &Config, access: &str) -> Option<crate::oauth::Profile> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .ok()?;
    let v: Value = client
        .get(&config.oauth.profile_url)
        .bearer_auth(access)
        .header("anthropic-beta", crate::oauth::OAUTH_BETA)
        .send()
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .ok()?;
    Some(parse_profile(&v))
}

/// Runs one login's conversation with the person: the callback listener (and, headless, the
/// paste on stdin), the spinner, the timeout, and the page the browser gets. `complete` turns
/// the answer into an account e-mail and whatever the caller needs; `again` is the command to
/// suggest when it times out.
pub(crate) fn interactive<T>(
    config: &Config,
    headless: bool,
    again: &str,
    complete: impl FnOnce(&Attempt, &Answer) -> Result<(String, T)>,
) -> Result<(String, T)> {
    let attempt = Attempt::new(config)?;
    let (tx, rx) = mpsc::channel::<Source>();
    match login::listen(config.oauth.callback_port) {
        Ok(listener) => login::serve_callbacks(listener, tx.clone()),
        Err(e) if headless => eprintln!("note: {e}; waiting for the pasted code only"),
        Err(e) => return Err(e),
    }
    if headless {
        println!(
            "Open this address on any device and sign in:\n\n  {}\n",
            attempt.url
        );
        println!("Then paste the code the page shows (CODE#STATE), or the whole address the browser ended on:");
        login::read_pastes(tx);
    } else {
        let opened = login::open_browser(&attempt.url);
        println!(
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
        if answer.belongs_to(&attempt) {
            break (answer, callback);
        }
        // A stale tab or a forged callback must not end the login in progress.
        match callback {
            Some(cb) => cb.respond(
                false,
                "This answer does not belong to the login in progress (its state does not \
                 match), so it was ignored. Finish the login in the tab ccs opened.",
            ),
            None => eprintln!(
                "that code belongs to another login attempt (its state does not match): paste \
                 the code of the address above"
            ),
        }
    };
    let result = complete(&attempt, &answer);
    if let Some(cb) = callback {
        match &result {
            Ok((email, _)) => cb.respond(true, &format!("Logged in as {email}.")),
            Err(e) => cb.respond(false, &e.to_string()),
        }
    }
    result
}

/// `ccs claude --auth [--add] [--headless]`. Returns the e-mail logged in.
pub fn login(paths: &Paths, config: &Config, add: bool, headless: bool) -> Result<String> {
    let client = ensure_running(paths, config)?;
    let before = accounts(&client)?;
    let (email, reply) = interactive(config, headless, "ccs claude --auth", |attempt, answer| {
        finish(config, &client, attempt, answer)
    })?;
    let nickname = reply["account"]["nickname"].as_str().unwrap_or("");
    if reply["created"] == false {
        println!(
            "Logged in as {email} (nickname {nickname}): credentials refreshed, no new account"
        );
    } else {
        println!("Logged in as {email} (nickname {nickname})");
        if !add && !before.is_empty() {
            println!("It joins the {} account(s) already in the pool; `ccs claude --accounts` lists them.", before.len());
        }
    }
    Ok(email)
}

/// Exchanges the answer for tokens and learns the account's e-mail and profile (token
/// response first, then the profile endpoint).
pub(crate) fn tokens_for(
    config: &Config,
    attempt: &Attempt,
    answer: &Answer,
) -> Result<(String, Value, Option<crate::oauth::Profile>)> {
    let code = login::check(attempt, answer)?;
    let tokens = login::exchange(config, attempt, &code)?;
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let profile = profile_blocking(config, &access);
    let email = tokens["account"]["email_address"]
        .as_str()
        .map(str::to_string)
        .or_else(|| profile.as_ref().and_then(|p| p.email.clone()))
        .context("neither the token response nor the profile endpoint named the account's e-mail; nothing was stored")?;
    Ok((email, tokens, profile))
}

pub(crate) fn finish(
    config: &Config,
    client: &Client,
    attempt: &Attempt,
    answer: &Answer,
) -> Result<(String, Value)> {
    let (email, tokens, profile) = tokens_for(config, attempt, answer)?;
    let body = json!({
        "token_response": tokens,
        "email": email,
        "plan": profile.as_ref().and_then(|p| p.plan.clone()),
        "account_uuid": profile.as_ref().and_then(|p| p.account_uuid.clone()),
        "organization_uuid": profile.as_ref().and_then(|p| p.organization_uuid.clone()),
        "organization_name": profile.as_ref().and_then(|p| p.organization_name.clone()),
    });
    let reply = client
        .post("/v0/management/accounts", &body)
        .context("the daemon did not take the new token")?;
    Ok((email, reply))
}

fn pct(w: &Value) -> String {
    match w["utilization"].as_f64() {
        Some(u) => format!("{:.0}%", u * 100.0),
        None => "-".into(),
    }
}

/// "in 2h 13m" from an RFC 3339 time.
pub fn until(t: &Value) -> String {
    let Some(s) = t.as_str() else {
        return "-".into();
    };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(s) else {
        return s.to_string();
    };
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    super::in_words(ms).unwrap_or_else(|| "now".into())
}

/// `ccs claude --accounts [--json]`.
pub fn list(paths: &Paths, config: &Config, json_out: bool) -> Result<()> {
    let client = ensure_running(paths, config)?;
    let list = accounts(&client)?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"accounts": list}))?
        );
        return Ok(());
    }
    if list.is_empty() {
        println!("No account is logged in. Log one in with `ccs claude --auth` (or `--auth --headless` over SSH).");
        return Ok(());
    }
    println!(
        "  {:<14} {:<30} {:<5} {:<10} {:>5} {:>6}  {:<14} {:>3}",
        "NICKNAME", "EMAIL", "PLAN", "STATE", "5H", "WEEK", "COOLDOWN", "POS"
    );
    let mut fixes = Vec::new();
    for a in &list {
        let state = if a["paused"] == true {
            format!("{} (paused)", a["state"].as_str().unwrap_or("?"))
        } else {
            a["state"].as_str().unwrap_or("?").to_string()
        };
        println!(
            "{} {:<14} {:<30} {:<5} {:<10} {:>5} {:>6}  {:<14} {:>3}",
            if a["default"] == true { "*" } else { " " },
            a["nickname"].as_str().unwrap_or(""),
            a["email"].as_str().unwrap_or(""),
            a["plan"].as_str().unwrap_or("-"),
            state,
            pct(&a["five_hour"]),
            pct(&a["seven_day"]),
            if a["cooldown_until"].is_null() {
                "-".to_string()
            } else {
                until(&a["cooldown_until"])
            },
            a["position"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
        );
        if let Some(f) = a["fix"].as_str() {
            fixes.push(format!("{}: {f}", a["nickname"].as_str().unwrap_or("")));
        }
    }
    for f in fixes {
        println!("\n{f}");
    }
    Ok(())
}

/// `ccs claude --use <nickname or email>`.
pub fn use_account(paths: &Paths, config: &Config, who: &str) -> Result<()> {
    let client = ensure_running(paths, config)?;
    let r = client.post(
        &format!("/v0/management/accounts/{}/default", seg(who)),
        &json!({}),
    )?;
    println!(
        "{} is now the default account",
        r["default"].as_str().unwrap_or(who)
    );
    Ok(())
}

fn default_account(client: &Client) -> Result<String> {
    accounts(client)?
        .iter()
        .find(|a| a["default"] == true)
        .and_then(|a| a["email"].as_str().map(str::to_string))
        .context("no account is logged in: run `ccs claude --auth`")
}

/// `ccs claude --nickname NEW [--account X]`.
pub fn nickname(paths: &Paths, config: &Config, new: &str, account: Option<&str>) -> Result<()> {
    let client = ensure_running(paths, config)?;
    let who = match account {
        Some(a) => a.to_string(),
        None => default_account(&client)?,
    };
    let r = client.post(
        &format!("/v0/management/accounts/{}/rename", seg(&who)),
        &json!({"nickname": new}),
    )?;
    println!(
        "{} is now called {}",
        r["email"].as_str().unwrap_or(&who),
        r["nickname"].as_str().unwrap_or(new)
    );
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
        accounts(&client)?
            .iter()
            .filter_map(|a| a["email"].as_str().map(str::to_string))
            .collect()
    } else {
        vec![match account {
            Some(a) => a.to_string(),
            None => default_account(&client)?,
        }]
    };
    if targets.is_empty() {
        println!("No account is logged in.");
        return Ok(());
    }
    if all && !yes && std::io::stdin().is_terminal() {
        eprint!(
            "Log out all {} accounts ({})? [y/N] ",
            targets.len(),
            targets.join(", ")
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            println!("Nothing changed.");
            return Ok(());
        }
    }
    for who in targets {
        let r = client.delete(&format!("/v0/management/accounts/{}", seg(&who)))?;
        println!(
            "Logged out {} (token and token file removed)",
            r["removed"].as_str().unwrap_or(&who)
        );
    }
    Ok(())
}
