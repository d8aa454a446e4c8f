//! `ccs config`: the effective configuration and the paths, secrets redacted.

use anyhow::Result;
use serde_json::json;

use crate::config::{Config, Paths, DEFAULT_API_KEY, DEFAULT_MANAGEMENT_SECRET};

/// How a key is set, never the key itself (a public default name is not a secret).
fn redact(secret: Option<&str>, default: &str, paths: &Paths) -> String {
    match secret {
        Some(s) if s == default => format!("{default} (the public default, named in config)"),
        Some(s) => format!("<set in config, {} chars>", s.chars().count()),
        None => format!("<generated, in {}>", paths.keys_file().display()),
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
        "client_key": redact(p.auth.api_key.as_deref(), DEFAULT_API_KEY, &paths),
        "extra_client_keys": p.auth.api_keys.len(),
        "management_secret": redact(
            p.auth.management_secret.as_deref(),
            DEFAULT_MANAGEMENT_SECRET,
            &paths
        ),
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
    Ok(())
}
