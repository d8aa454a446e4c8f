//! `ccs config`: the effective configuration and the paths, secrets redacted.

use anyhow::Result;
use serde_json::json;

use crate::config::{Config, Paths, DEFAULT_API_KEY, DEFAULT_MANAGEMENT_SECRET};

fn redact(secret: &str, default: &str) -> String {
    if secret == default {
        format!("{default} (default)")
    } else {
        format!("<set, {} chars>", secret.chars().count())
    }
}

pub fn run(json_out: bool) -> Result<()> {
    let paths = Paths::from_env()?;
    let c = Config::load(&paths)?;
    let p = &c.cliproxy;
    let view = json!({
        "ccs_home": paths.home,
        "config_file": paths.config_file(),
        "config_file_exists": paths.config_file().exists(),
        "store": paths.store_dir(),
        "accounts_json": paths.accounts_json(),
        "proxy": format!("http://{}:{}", p.host, p.port),
        "client_key": redact(&p.auth.api_key, DEFAULT_API_KEY),
        "extra_client_keys": p.auth.api_keys.len(),
        "management_secret": redact(&p.auth.management_secret, DEFAULT_MANAGEMENT_SECRET),
        "refresh_lead_secs": p.refresh_lead.0.as_secs(),
        "affinity_ttl_secs": p.affinity_ttl.0.as_secs(),
        "soft_threshold": p.soft_threshold,
        "body_limit_bytes": p.body_limit.0,
        "upstream": c.upstream.api_base,
        "oauth_token_url": c.oauth.token_url,
        "oauth_authorize_url": c.oauth.authorize_url,
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if let Some(obj) = view.as_object() {
        for (k, v) in obj {
            let shown = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            println!("{k:<22} {shown}");
        }
    }
    if c.exposes_defaults() {
        println!("\nwarning: the proxy host is not loopback but a default key or secret is set;");
        println!("the daemon will refuse to start until cliproxy.auth.api_key and");
        println!(
            "cliproxy.auth.management_secret are changed in {}",
            paths.config_file().display()
        );
    }
    Ok(())
}
