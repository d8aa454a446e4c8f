//! `ccs pool …` and `ccs cliproxy quota`: shaping which accounts serve, and seeing where each
//! stands.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::accounts::until;
use super::cliproxy::ensure_running;
use crate::cli::PoolCommand;
use crate::client::Client;
use crate::config::Paths;

fn client() -> Result<Client> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    ensure_running(&paths, &config)
}

fn members(c: &Client, name: &str) -> Result<Vec<String>> {
    let pools = c.get("/v0/management/pools")?;
    match pools["pools"][name].as_array() {
        Some(m) => Ok(m
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()),
        None => {
            let names: Vec<String> = pools["pools"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            bail!("no pool named {name:?}; pools: {}", names.join(", "))
        }
    }
}

fn set(c: &Client, name: &str, accounts: &[String]) -> Result<Value> {
    c.put(
        &format!("/v0/management/pools/{name}"),
        &json!({"accounts": accounts}),
    )
}

fn print_pool(name: &str, r: &Value) {
    let list: Vec<&str> = r["accounts"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
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
            let pools = c.get("/v0/management/pools")?;
            if as_json {
                println!("{pools}");
            } else if let Some(o) = pools["pools"].as_object() {
                for (name, m) in o {
                    print_pool(name, &json!({"accounts": m}));
                }
            }
        }
        PoolCommand::Show { name } => {
            let name = name.unwrap_or_else(|| "claude".into());
            let m = members(&c, &name)?;
            let accounts = c.get("/v0/management/accounts")?;
            println!("pool {name} (drain order):");
            for (i, email) in m.iter().enumerate() {
                let a = accounts["accounts"].as_array().and_then(|l| {
                    l.iter().find(|a| {
                        a["email"]
                            .as_str()
                            .is_some_and(|e| e.eq_ignore_ascii_case(email))
                    })
                });
                let state = a.map(|a| {
                    let mut s = a["state"].as_str().unwrap_or("?").to_string();
                    if a["paused"] == true {
                        s.push_str(", paused");
                    }
                    s
                });
                println!(
                    "  {}. {email} ({})",
                    i + 1,
                    state.unwrap_or_else(|| "?".into())
                );
            }
        }
        PoolCommand::Create { name, accounts } => {
            if c.get("/v0/management/pools")?["pools"][&name].is_array() {
                bail!("pool {name:?} exists already: use `ccs pool add` or `ccs pool order`");
            }
            print_pool(&name, &set(&c, &name, &accounts)?);
        }
        PoolCommand::Add { name, account } => {
            let mut m = members(&c, &name)?;
            m.push(account);
            print_pool(&name, &set(&c, &name, &m)?);
        }
        PoolCommand::Remove { name, account } => {
            let all = c.get("/v0/management/accounts")?;
            let email = all["accounts"]
                .as_array()
                .and_then(|l| {
                    l.iter().find(|a| {
                        a["email"]
                            .as_str()
                            .is_some_and(|e| e.eq_ignore_ascii_case(&account))
                            || a["nickname"]
                                .as_str()
                                .is_some_and(|n| n.eq_ignore_ascii_case(&account))
                    })
                })
                .and_then(|a| a["email"].as_str().map(str::to_ascii_lowercase));
            let Some(email) = email else {
                bail!("no account {account:?}: see `ccs claude --accounts`")
            };
            let m: Vec<String> = members(&c, &name)?
                .into_iter()
                .filter(|e| !e.eq_ignore_ascii_case(&email))
                .collect();
            print_pool(&name, &set(&c, &name, &m)?);
        }
        PoolCommand::Order { name, order } => {
            members(&c, &name)?;
            let list: Vec<String> = order
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            print_pool(&name, &set(&c, &name, &list)?);
        }
        PoolCommand::Pause { account } => {
            let r = c.post(
                &format!("/v0/management/accounts/{account}/pause"),
                &json!({}),
            )?;
            println!(
                "{} is paused: logged in and refreshed, but it takes no traffic",
                r["email"].as_str().unwrap_or(&account)
            );
        }
        PoolCommand::Resume { account } => {
            let r = c.post(
                &format!("/v0/management/accounts/{account}/resume"),
                &json!({}),
            )?;
            println!(
                "{} takes traffic again",
                r["email"].as_str().unwrap_or(&account)
            );
        }
        PoolCommand::Import { name } => super::auth::import(&name)?,
        PoolCommand::Delete { name } => {
            c.delete(&format!("/v0/management/pools/{name}"))?;
            println!("pool {name} deleted (its accounts stay logged in)");
        }
    }
    Ok(())
}

fn bar(util: Option<f64>) -> String {
    let Some(u) = util else {
        return format!("[{}]   ?", " ".repeat(20));
    };
    let filled = ((u.clamp(0.0, 1.0) * 20.0).round()) as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        u * 100.0
    )
}

fn window(w: &Value) -> String {
    let reset = if w["resets_at"].is_null() {
        String::new()
    } else {
        format!(" resets {}", until(&w["resets_at"]))
    };
    format!("{}{reset}", bar(w["utilization"].as_f64()))
}

/// `ccs cliproxy quota [--pool NAME] [--json]`: refreshed from the usage endpoint when the
/// data is older than a minute.
pub fn quota(pool: Option<&str>, as_json: bool) -> Result<()> {
    print_quota(&client()?, pool.unwrap_or("claude"), as_json)
}

/// Prints the quota view of `pool` from the daemon behind `c`.
pub fn print_quota(c: &Client, pool: &str, as_json: bool) -> Result<()> {
    let m = members(c, pool)?;
    let q = c.get(&format!("/v0/management/quota?max_age=60&pool={pool}"))?;
    let accounts: Vec<Value> = q["accounts"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|a| super::member_of(a, &m))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"pool": pool, "accounts": accounts, "next_for_new_sessions": q["next_for_new_sessions"]})
            )?
        );
        return Ok(());
    }
    println!("pool {pool}");
    for a in &accounts {
        let mut state = a["state"].as_str().unwrap_or("?").to_string();
        if a["paused"] == true {
            state.push_str(", paused");
        }
        if !a["cooldown_until"].is_null() {
            state.push_str(&format!(", limited, back {}", until(&a["cooldown_until"])));
        }
        println!(
            "{:>2}. {} ({})",
            a["position"].as_u64().unwrap_or(0),
            a["email"].as_str().unwrap_or(""),
            state
        );
        println!("    5-hour  {}", window(&a["five_hour"]));
        println!("    weekly  {}", window(&a["seven_day"]));
    }
    match q["next_for_new_sessions"].as_str() {
        Some(n) => println!("new sessions go to: {n}"),
        None => println!("new sessions: none can be served now (all limited, dead or paused)"),
    }
    Ok(())
}
