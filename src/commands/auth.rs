//! `ccs auth …` (native profiles), `ccs NAME [ARGS]` (launch one), and `ccs pool import NAME`.

use std::os::unix::process::CommandExt;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::accounts::interactive;
use super::cliproxy::ensure_running;
use super::now_ms;
use crate::claude_code::find_claude;
use crate::config::{Config, Paths};
use crate::profiles::{self, Meta};

fn human_expiry(ms: u64) -> String {
    super::in_words(ms).unwrap_or_else(|| format!("lapsed {}", crate::store::mirror::rfc3339(ms)))
}

/// Refuses a name that is a pool of the daemon (when one answers).
fn check_not_a_pool(paths: &Paths, config: &Config, name: &str) -> Result<()> {
    if let crate::daemon::Running::Yes { .. } = crate::daemon::running(paths, config) {
        let client = crate::client::Client::new(
            &crate::daemon::configured_url(config),
            &crate::keys::cli_secret(config)?,
        );
        if let Ok(p) = client.pools() {
            if p.pools.contains_key(name) {
                bail!("{name:?} is the name of a pool; choose another profile name");
            }
        }
    }
    Ok(())
}

pub fn create(
    name: &str,
    group: Option<&str>,
    share: bool,
    deeper: bool,
    force: bool,
    headless: bool,
) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    profiles::check_name(name)?;
    check_not_a_pool(&paths, &config, name)?;
    if profiles::dir(&paths, name).exists() && !force {
        bail!("profile {name:?} exists already: use --force to log it in again from scratch");
    }
    let group = group
        .map(str::to_string)
        .or_else(|| (share || deeper).then(|| "default".to_string()));
    let again = format!("ccs auth create {name}");
    let attempt = crate::oauth::login::Attempt::new(&config)?;
    let (email, dir) = interactive(&config, headless, &again, &(&attempt).into(), |answer| {
        let (email, tokens, profile) = crate::oauth::login::complete(&config, &attempt, answer)?;
        let creds = profiles::credentials_json(
            &tokens,
            profile.as_ref().and_then(|p| p.plan.as_deref()),
            now_ms(),
        );
        let meta = Meta {
            email: Some(email.clone()),
            context_group: group.clone(),
            deeper_continuity: deeper,
            created_at: Some(crate::store::mirror::rfc3339(now_ms())),
        };
        let dir = profiles::create(&paths, name, force, &meta, &creds)?;
        Ok((email, dir))
    })?;
    if let Some(g) = &group {
        profiles::join_group(&paths, name, g, deeper)?;
    }
    outln!(
        "Profile {name} is logged in as {email} ({}).",
        dir.display()
    );
    outln!("Claude Code owns this grant's refreshes. Start it with `ccs {name}`.");
    Ok(())
}

/// The profile table: a header, then one line per row behind its mark, every column as wide
/// as its widest value (long e-mails or names never push the next column out of line).
fn table(marks: &[&str], cells: &[[String; 4]]) -> Vec<String> {
    let header = ["PROFILE", "EMAIL", "TOKEN", "CONTEXT GROUP"].map(String::from);
    let width = |i: usize| {
        std::iter::once(&header)
            .chain(cells)
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let line = |mark: &str, c: &[String; 4]| {
        format!(
            "{mark} {:<w0$}  {:<w1$}  {:<w2$}  {}",
            c[0], c[1], c[2], c[3]
        )
        .trim_end()
        .to_string()
    };
    std::iter::once(line(" ", &header))
        .chain(marks.iter().zip(cells).map(|(m, c)| line(m, c)))
        .collect()
}

pub fn list(json_out: bool) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = Config::load(&paths)?;
    let default = std::fs::read_to_string(paths.instances_dir().join(".default")).ok();
    let rows: Vec<serde_json::Value> = profiles::list(&paths)?
        .into_iter()
        .map(|(name, m)| {
            let token = profiles::token_state(&paths, &name);
            json!({
                "name": name,
                "default": default.as_deref().map(str::trim) == Some(name.as_str()),
                "email": m.email,
                "expires_at": token.map(|(ms, _)| crate::store::mirror::rfc3339(ms)),
                "expires": token.map(|(ms, _)| human_expiry(ms)),
                "refreshable": token.map(|(_, r)| r),
                "context_group": m.context_group.or_else(|| config.accounts.get(&name).and_then(|a| a.context_group.clone())),
                "deeper_continuity": m.deeper_continuity,
            })
        })
        .collect();
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"profiles": rows}))?
        );
        return Ok(());
    }
    if rows.is_empty() {
        outln!("No native profile yet. Create one with `ccs auth create NAME`.");
        return Ok(());
    }
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r["name"].as_str().unwrap_or("").to_string(),
                r["email"].as_str().unwrap_or("-").to_string(),
                r["expires"]
                    .as_str()
                    .unwrap_or("no credentials")
                    .to_string(),
                r["context_group"]
                    .as_str()
                    .map(|g| {
                        if r["deeper_continuity"] == true {
                            format!("{g} (deeper)")
                        } else {
                            g.to_string()
                        }
                    })
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let marks: Vec<&str> = rows
        .iter()
        .map(|r| if r["default"] == true { "*" } else { " " })
        .collect();
    for line in table(&marks, &cells) {
        outln!("{line}");
    }
    Ok(())
}

pub fn show(name: &str) -> Result<()> {
    let paths = Paths::from_env()?;
    let m = profiles::read_meta(&paths, name)?;
    outln!("profile         {name}");
    outln!("folder          {}", profiles::dir(&paths, name).display());
    outln!("email           {}", m.email.as_deref().unwrap_or("-"));
    match profiles::token_state(&paths, name) {
        Some((ms, refreshable)) => outln!(
            "token           expires {}{}",
            human_expiry(ms),
            if refreshable {
                ""
            } else {
                " (no refresh token)"
            }
        ),
        None => outln!("token           none (imported into the pool, or never logged in)"),
    }
    outln!(
        "context group   {}{}",
        m.context_group.as_deref().unwrap_or("-"),
        if m.deeper_continuity {
            " (deeper continuity)"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn remove(name: &str) -> Result<()> {
    let paths = Paths::from_env()?;
    profiles::remove(&paths, name)?;
    outln!("profile {name} removed (shared context groups keep their data)");
    Ok(())
}

pub fn leave_group(name: &str) -> Result<()> {
    let paths = Paths::from_env()?;
    let mut meta = profiles::read_meta(&paths, name)?;
    let Some(group) = meta.context_group.take() else {
        bail!("profile {name} is in no context group");
    };
    profiles::leave_group(&paths, name)?;
    meta.deeper_continuity = false;
    profiles::write_meta(&paths, name, &meta)?;
    outln!(
        "profile {name} left context group {group}; it keeps a private copy of the shared history"
    );
    Ok(())
}

pub fn set_default(name: &str) -> Result<()> {
    let paths = Paths::from_env()?;
    if !profiles::exists(&paths, name) {
        bail!("no profile {name:?} (see `ccs auth list`)");
    }
    crate::fsutil::write_private(&paths.instances_dir().join(".default"), name.as_bytes())?;
    outln!("{name} is the default profile");
    Ok(())
}

/// `ccs NAME [--share-context | --context-group G | --deeper-continuity] [ARGS…]`: applies and
/// remembers the sharing flags, warns about a lapsed token, then becomes Claude Code in the
/// profile's own config folder, with no proxy.
pub fn launch(name: &str, args: &[String]) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    let mut meta = profiles::read_meta(&paths, name)?;
    let mut rest = args;
    let mut changed = false;
    loop {
        match rest.first().map(String::as_str) {
            Some("--share-context") => {
                meta.context_group
                    .get_or_insert_with(|| "default".to_string());
                rest = &rest[1..];
            }
            Some("--deeper-continuity") => {
                meta.deeper_continuity = true;
                meta.context_group
                    .get_or_insert_with(|| "default".to_string());
                rest = &rest[1..];
            }
            Some("--context-group") => {
                let g = rest.get(1).context("--context-group needs a group name")?;
                meta.context_group = Some(g.clone());
                rest = &rest[2..];
            }
            _ => break,
        }
        changed = true;
    }
    if changed {
        profiles::write_meta(&paths, name, &meta)?;
    }
    let group = meta.context_group.clone().or_else(|| {
        config
            .accounts
            .get(name)
            .and_then(|a| a.context_group.clone())
    });
    if let Some(g) = &group {
        profiles::join_group(&paths, name, g, meta.deeper_continuity)?;
    }
    match profiles::token_state(&paths, name) {
        None => errln!("warning: profile {name} has no credentials (imported into the pool?): log it in with `ccs auth create {name} --force`"),
        Some((ms, false)) if ms <= now_ms() => errln!("warning: profile {name}'s token lapsed and it has no refresh token: run `ccs auth create {name} --force`"),
        Some((ms, true)) if ms <= now_ms() => errln!("note: profile {name}'s token lapsed; Claude Code refreshes it on start. If it cannot, run `ccs auth create {name} --force`"),
        _ => {}
    }
    let claude = find_claude(&config)?;
    let mut cmd = std::process::Command::new(&claude);
    cmd.args(rest)
        .env("CLAUDE_CONFIG_DIR", profiles::dir(&paths, name))
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("ANTHROPIC_API_KEY");
    // Only a non-default upstream (a simulator, a gateway) is handed on; the proxy never is.
    if config.upstream.api_base != crate::config::Upstream::default().api_base {
        cmd.env("ANTHROPIC_BASE_URL", &config.upstream.api_base);
    } else {
        cmd.env_remove("ANTHROPIC_BASE_URL");
    }
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot start {}", claude.display()))
}

/// `ccs pool import NAME`: the daemon takes over the profile's grant.
pub fn import(name: &str) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    let meta = profiles::read_meta(&paths, name)?;
    let creds = profiles::read_credentials(&paths, name)?;
    let o = &creds["claudeAiOauth"];
    let refresh = o["refreshToken"].as_str().filter(|r| !r.is_empty()).with_context(|| format!("profile {name} holds no refresh token: it cannot be imported; log it in with `ccs claude --auth --add` instead"))?;
    let email = meta.email.clone().context(
        "the profile does not know its e-mail; log it in again with `ccs auth create --force`",
    )?;
    let expires_in = o["expiresAt"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(now_ms())
        / 1000;
    let client = ensure_running(&paths, &config)?;
    client.add_account(&crate::api::AddAccount {
        token_response: crate::oauth::TokenResponse {
            access_token: o["accessToken"].as_str().unwrap_or_default().to_string(),
            refresh_token: Some(refresh.to_string()),
            expires_in: Some(expires_in),
            account: Some(crate::oauth::TokenAccount {
                uuid: None,
                email_address: Some(email.clone()),
            }),
            organization: None,
            scope: None,
        },
        email: Some(email.clone()),
        plan: o["subscriptionType"].as_str().map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }),
        account_uuid: None,
        organization_uuid: None,
        organization_name: None,
    })?;
    profiles::retire_credentials(&paths, name)?;
    // Refresh now, through the daemon: from here on it is the grant's only refresher, and the
    // rotation makes any copy of the old refresh token worthless.
    match client.refresh(&email) {
        Ok(r) => {
            outln!("Imported {email} from profile {name} into the pool; the daemon now refreshes its grant.");
            if let Some(waiting) = r.waiting {
                outln!("Its first refresh is still out: {waiting}");
            }
            outln!("The profile's credential file is retired: start it again only after `ccs auth create {name} --force`.");
            Ok(())
        }
        Err(e) => bail!("imported {email}, but its grant could not be refreshed yet: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_table_lines_up_whatever_the_lengths() {
        let row = |a: &str, b: &str| [a, b, "in 2h 00m", "-"].map(String::from);
        let lines = table(
            &["*", " "],
            &[
                row("w", "a@example.com"),
                row(
                    "a-very-long-profile-name",
                    "someone.with.a.long.address@example.com",
                ),
            ],
        );
        let token_at: Vec<usize> = lines
            .iter()
            .map(|l| l.find("TOKEN").or_else(|| l.find("in 2h")).unwrap())
            .collect();
        assert!(token_at.windows(2).all(|w| w[0] == w[1]), "{lines:#?}");
        assert!(lines[1].starts_with("* w "), "{lines:#?}");
    }
}
