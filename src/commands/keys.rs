//! `ccs cliproxy key add NAME | list | revoke NAME`: the daemon's named client keys.

use anyhow::Result;

use super::cliproxy::ensure_running;
use crate::config::Paths;

fn client() -> Result<crate::client::Client> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    ensure_running(&paths, &config)
}

pub fn add(name: &str, rpm: Option<u32>, concurrent: Option<u32>, json_out: bool) -> Result<()> {
    let made = client()?.add_client_key(name, rpm, concurrent)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&made)?);
        return Ok(());
    }
    println!(
        "Client key {:?} made. It is shown this once (the daemon keeps only its SHA-256):\n",
        made.name
    );
    println!("  {}\n", made.key);
    println!(
        "Give it to its user: Claude Code takes it as ANTHROPIC_AUTH_TOKEN, the SDKs as api_key. \
         Revoke it with `ccs cliproxy key revoke {}`.",
        made.name
    );
    Ok(())
}

pub fn list(json_out: bool) -> Result<()> {
    let keys = client()?.client_keys()?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<12} {:<22} {:<20} {:>9}  SHA-256",
        "NAME", "SET IN", "MADE", "LIMITS", "IN FLIGHT"
    );
    for k in keys {
        let limits = match (k.requests_per_minute, k.concurrent) {
            (None, None) => "-".to_string(),
            (r, c) => [
                r.map(|r| format!("{r}/min")),
                c.map(|c| format!("{c} at once")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
        };
        println!(
            "{:<24} {:<12} {:<22} {:<20} {:>9}  {}…",
            k.name,
            if k.from_config { "config.yaml" } else { "ccs" },
            k.created_at.unwrap_or_else(|| "-".into()),
            limits,
            k.in_flight,
            k.key_sha256_prefix
        );
    }
    Ok(())
}

pub fn revoke(name: &str) -> Result<()> {
    let r = client()?.revoke_client_key(name)?;
    println!("Client key {:?} revoked: refused from now on.", r.revoked);
    Ok(())
}
