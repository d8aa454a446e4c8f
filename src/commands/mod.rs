//! One file per command group. Each returns `anyhow::Result` with messages for people.

pub mod accounts;
pub mod alerts;
pub mod auth;
pub mod cert;
pub mod cliproxy;
pub mod completions;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod keys;
pub mod pool;
pub mod run;
pub mod service;
pub mod sim;
pub mod statusline;
pub mod usage;

use anyhow::Result;

/// Whether an account of the management API (`{"email": …}`) is one of a pool's members
/// (pools list lower-cased e-mails; accounts keep the case they logged in with).
pub fn member_of(email: &str, members: &[String]) -> bool {
    members.iter().any(|m| m.eq_ignore_ascii_case(email))
}

/// Milliseconds since the epoch, by the wall clock (the CLI's only clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// "in 2h 13m" (or "in 3d 4h", "in 5m") from now to `ms`; `None` when `ms` has passed.
pub fn in_words(ms: u64) -> Option<String> {
    let left = ms.checked_sub(now_ms()).filter(|l| *l > 0)?;
    Some(format!(
        "in {}",
        crate::config::words(std::time::Duration::from_millis(left))
    ))
}

use crate::cli::ClaudeArgs;
use crate::config::Paths;

/// `ccs claude …`: account flags manage accounts; anything else launches Claude Code.
pub fn claude(a: ClaudeArgs) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    if a.auth {
        accounts::login(&paths, &config, a.add, a.headless)?;
        return Ok(());
    }
    if a.accounts {
        return accounts::list(&paths, &config, a.json);
    }
    if let Some(who) = &a.use_account {
        return accounts::use_account(&paths, &config, who);
    }
    if let Some(new) = &a.nickname {
        return accounts::nickname(&paths, &config, new, a.account.as_deref());
    }
    if a.logout {
        return accounts::logout(&paths, &config, a.account.as_deref(), a.all, a.yes);
    }
    run::launch_pool(&paths, &config, "claude", &a.args, a.headless, a.force)
}

/// `ccs NAME [ARGS…]`: a native profile by name.
pub fn profile(argv: Vec<String>) -> Result<()> {
    let Some((name, args)) = argv.split_first() else {
        anyhow::bail!("no command given: see `ccs --help`");
    };
    let paths = Paths::from_env()?;
    if !crate::profiles::exists(&paths, name) {
        anyhow::bail!(
            "{name:?} is neither a ccs command nor a profile: see `ccs --help`, `ccs auth list`, \
             or create it with `ccs auth create {name}`"
        );
    }
    auth::launch(name, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_membership_ignores_the_case_of_the_email() {
        let members = vec!["bob@example.com".to_string()];
        assert!(member_of("Bob@Example.com", &members));
        assert!(!member_of("alice@example.com", &members));
        assert!(!member_of("", &members));
    }
}
