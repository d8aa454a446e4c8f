//! `ccs pool …` and `ccs cliproxy quota`: shaping which accounts serve, and seeing where each
//! stands.

use anyhow::{bail, Result};

use super::accounts::until;
use super::cliproxy::client;
use crate::api;
use crate::cli::PoolCommand;
use crate::client::Client;

fn members(c: &Client, name: &str) -> Result<Vec<String>> {
    let mut pools = c.pools()?.pools;
    match pools.remove(name) {
        Some(m) => Ok(m),
        None => {
            let names: Vec<&String> = pools.keys().collect();
            bail!(
                "no pool named {name:?}; pools: {}",
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

fn print_pool(name: &str, list: &[String]) {
    outln!(
        "{name}: {}",
        if list.is_empty() {
            "(empty)".to_string()
        } else {
            list.join(" → ")
        }
    );
}

pub fn pool(cmd: PoolCommand) -> Result<()> {
    let c = client()?;
    match cmd {
        PoolCommand::List { json: as_json } => {
            let pools = c.pools()?;
            if as_json {
                outln!("{}", serde_json::to_string(&pools)?);
            } else {
                for (name, m) in &pools.pools {
                    print_pool(name, m);
                }
            }
        }
        PoolCommand::Show { name } => {
            let name = name.unwrap_or_else(|| "claude".into());
            let m = members(&c, &name)?;
            let accounts = c.accounts()?;
            outln!("pool {name} (drain order):");
            for (i, email) in m.iter().enumerate() {
                let state = accounts
                    .iter()
                    .find(|a| a.email.eq_ignore_ascii_case(email))
                    .map(|a| {
                        let mut s = a.state.clone();
                        if a.paused {
                            s.push_str(", paused");
                        }
                        s
                    });
                outln!(
                    "  {}. {email} ({})",
                    i + 1,
                    state.unwrap_or_else(|| "?".into())
                );
            }
        }
        PoolCommand::Create { name, accounts } => {
            if c.pools()?.pools.contains_key(&name) {
                bail!("pool {name:?} exists already: use `ccs pool add` or `ccs pool order`");
            }
            print_pool(&name, &c.set_pool(&name, &accounts)?.accounts);
        }
        PoolCommand::Add { name, account } => {
            let mut m = members(&c, &name)?;
            m.push(account);
            print_pool(&name, &c.set_pool(&name, &m)?.accounts);
        }
        PoolCommand::Remove { name, account } => {
            let email = c
                .accounts()?
                .into_iter()
                .find(|a| {
                    a.email.eq_ignore_ascii_case(&account)
                        || a.nickname.eq_ignore_ascii_case(&account)
                })
                .map(|a| a.email.to_ascii_lowercase());
            let Some(email) = email else {
                bail!("no account {account:?}: see `ccs claude --accounts`")
            };
            let m: Vec<String> = members(&c, &name)?
                .into_iter()
                .filter(|e| !e.eq_ignore_ascii_case(&email))
                .collect();
            print_pool(&name, &c.set_pool(&name, &m)?.accounts);
        }
        PoolCommand::Order { name, order } => {
            members(&c, &name)?;
            let list: Vec<String> = order
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            print_pool(&name, &c.set_pool(&name, &list)?.accounts);
        }
        PoolCommand::Pause { account } => {
            let r = c.set_paused(&account, true)?;
            outln!(
                "{} is paused: logged in and refreshed, but it takes no traffic",
                r.email
            );
        }
        PoolCommand::Resume { account } => {
            let r = c.set_paused(&account, false)?;
            outln!("{} takes traffic again", r.email);
        }
        PoolCommand::Import { name } => super::auth::import(&name)?,
        PoolCommand::Delete { name } => {
            c.delete_pool(&name)?;
            outln!("pool {name} deleted (its accounts stay logged in)");
        }
    }
    Ok(())
}

fn bar(util: f64) -> String {
    let filled = ((util.clamp(0.0, 1.0) * 20.0).round()) as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        util * 100.0
    )
}

fn window(w: Option<&api::WindowView>) -> String {
    let Some(w) = w else {
        return format!("[{}]   ?", " ".repeat(20));
    };
    let reset = match &w.resets_at {
        Some(r) => format!(" resets {}", until(Some(r))),
        None => String::new(),
    };
    format!("{}{reset}", bar(w.utilization))
}

/// `ccs cliproxy quota [--pool NAME] [--json]`: refreshed from the usage endpoint when the
/// data is older than a minute.
pub fn quota(pool: Option<&str>, as_json: bool) -> Result<()> {
    print_quota(&client()?, pool.unwrap_or("claude"), as_json)
}

/// Prints the quota view of `pool` from the daemon behind `c`: its accounts in drain order.
pub fn print_quota(c: &Client, pool: &str, as_json: bool) -> Result<()> {
    members(c, pool)?;
    let mut q = c.quota(pool, Some(60))?;
    q.accounts.sort_by_key(|a| a.position);
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&q)?);
        return Ok(());
    }
    outln!("pool {pool}");
    for a in &q.accounts {
        let mut state = a.state.clone();
        if a.paused {
            state.push_str(", paused");
        }
        if let Some(c) = &a.cooldown_until {
            state.push_str(&format!(", limited, back {}", until(Some(c))));
        }
        outln!("{:>2}. {} ({})", a.position.unwrap_or(0), a.email, state);
        outln!("    5-hour  {}", window(a.five_hour.as_ref()));
        outln!("    weekly  {}", window(a.seven_day.as_ref()));
    }
    match &q.next_for_new_sessions {
        Some(n) => outln!("new sessions go to: {n}"),
        None => outln!("new sessions: none can be served now (all limited, dead or paused)"),
    }
    if let Some(r) = &q.runway {
        outln!("runway: {}", r.text);
    }
    Ok(())
}
