//! `ccs config`: the dashboard (opened logged in through a one-time link, or printed), and
//! `ccs config show`: the effective configuration and the paths, secrets redacted.

use anyhow::Result;
use serde_json::json;

use super::cliproxy::connect;
use crate::config::{Config, Paths, DEFAULT_API_KEY, DEFAULT_MANAGEMENT_SECRET};
use crate::endpoint::Endpoint;
use crate::oauth::login::open_browser;

/// How a key is set, never the key itself (a public default name is not a secret).
fn redact(secret: Option<&str>, default: &str, paths: &Paths) -> String {
    match secret {
        Some(s) if s == default => format!("{default} (the public default, named in config)"),
        Some(s) => format!("<set in config, {} chars>", s.chars().count()),
        None => format!("<generated, in {}>", paths.keys_file().display()),
    }
}

/// Whether a browser can be opened here: not over SSH, and on Linux only with a display.
fn can_open_browser() -> bool {
    let ssh = std::env::var_os("SSH_CONNECTION").is_some() || std::env::var_os("SSH_TTY").is_some();
    let display = cfg!(target_os = "macos")
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some();
    !ssh && display
}

/// `ccs config [--print] [--json]`.
pub fn dashboard(print_only: bool, json_out: bool) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    let endpoint = Endpoint::resolve(&paths, &config)?;
    let client = connect(&endpoint, &paths, &config)?;
    let mut link = client.login_link()?;
    // The daemon names its own listening address; a remote one may listen on 0.0.0.0 or
    // another name than the one this machine reaches it by.
    if let Some(i) = link.url.find("/dashboard") {
        link.url = format!("{}{}", endpoint.url, &link.url[i..]);
    }
    let url = format!("{}/dashboard", endpoint.url);
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"dashboard": url, "login_link": link.url}))?
        );
        return Ok(());
    }
    let opened = !print_only && can_open_browser() && open_browser(&link.url);
    if opened {
        outln!("Opened the dashboard in your browser: {url}");
    } else {
        outln!("Dashboard: {url}");
        outln!(
            "Log in once with this link (it works once, within 2 minutes):\n\n  {}\n",
            link.url
        );
        if !endpoint.remote {
            outln!(
            "Over SSH, forward the port first (ssh -L {p}:127.0.0.1:{p} HOST), or log in with the \
             management secret (`ccs config show` says where it is).",
            p = config.cliproxy.port
        );
        }
    }
    Ok(())
}

/// `ccs config show [--json]`.
pub fn show(json_out: bool) -> Result<()> {
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
        "dashboard": format!("http://{}:{}/dashboard", p.host, p.port),
        "client_key": redact(p.auth.api_key.as_deref(), DEFAULT_API_KEY, &paths),
        "extra_client_keys": p.auth.api_keys.len(),
        "management_secret": if p.auth.management_secret_argon2.is_some() {
            format!("<an argon2 hash in config; the CLI reads {}>", crate::keys::SECRET_ENV)
        } else {
            redact(
                p.auth.management_secret.as_deref(),
                DEFAULT_MANAGEMENT_SECRET,
                &paths,
            )
        },
        "client_keys_named": p.auth.clients.len(),
        "allow_plain_http": p.allow_plain_http,
        "metrics_key": if p.auth.metrics_key.is_some() { "<set in config>" } else { "<none: /metrics takes the management secret>" },
        "refresh_lead_secs": p.refresh_lead.0.as_secs(),
        "affinity_ttl_secs": p.affinity_ttl.0.as_secs(),
        "soft_threshold": p.soft_threshold,
        "body_limit_bytes": p.body_limit.0,
        "status_line": c.status_line.0,
        "upstream": c.upstream.api_base,
        "oauth_token_url": c.oauth.token_url,
        "oauth_authorize_url": c.oauth.authorize_url,
    });
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if let Some(obj) = view.as_object() {
        for (k, v) in obj {
            let shown = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            outln!("{k:<22} {shown}");
        }
    }
    Ok(())
}
