//! `ccs cliproxy key add NAME | list | revoke NAME`: the daemon's named client keys; and
//! `ccs cliproxy hash-secret`: the management secret as an argon2 hash for config.yaml.

use anyhow::Result;

use super::cliproxy::client;

pub fn add(key: &crate::api::AddClientKey, json_out: bool) -> Result<()> {
    let made = client()?.add_client_key(key)?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&made)?);
        return Ok(());
    }
    outln!(
        "Client key {:?} made. It is shown this once (the daemon keeps only its SHA-256):\n",
        made.name
    );
    outln!("  {}\n", made.key);
    outln!(
        "Give it to its user: Claude Code takes it as ANTHROPIC_AUTH_TOKEN, the SDKs as api_key. \
         Revoke it with `ccs cliproxy key revoke {}`.",
        made.name
    );
    Ok(())
}

pub fn list(json_out: bool) -> Result<()> {
    let keys = client()?.client_keys()?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    outln!(
        "{:<24} {:<12} {:<22} {:<20} {:>9}  SHA-256",
        "NAME",
        "SET IN",
        "MADE",
        "LIMITS",
        "IN FLIGHT"
    );
    for k in keys {
        let pools = (!k.pools.is_empty()).then(|| format!("pools {}", k.pools.join(" ")));
        let limits = match (k.requests_per_minute, k.concurrent, &pools) {
            (None, None, None) => "-".to_string(),
            (r, c, p) => [
                r.map(|r| format!("{r}/min")),
                c.map(|c| format!("{c} at once")),
                p.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
        };
        outln!(
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
    outln!("Client key {:?} revoked: refused from now on.", r.revoked);
    Ok(())
}

/// Reads one line from standard input; on a terminal, without echoing it.
fn read_secret() -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let saved = if tty {
        err!("Management secret (not shown): ");
        let _ = std::io::stderr().flush();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(mut quiet) = saved.clone() {
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ =
                rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
        }
        saved
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
        errln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn hash_secret() -> Result<()> {
    let secret = read_secret()?;
    if secret.chars().count() < crate::config::MIN_PUBLIC_KEY_CHARS {
        anyhow::bail!(
            "the secret has {} characters; use at least {} (e.g. `openssl rand -hex 32`)",
            secret.chars().count(),
            crate::config::MIN_PUBLIC_KEY_CHARS
        );
    }
    let bits = crate::config::entropy_bits(&secret);
    if bits < crate::config::MIN_PUBLIC_KEY_BITS {
        anyhow::bail!(
            "the secret is too guessable (about {bits:.0} bits, {:.0} needed: repeated or few \
             distinct characters); use a random one (e.g. `openssl rand -hex 32`)",
            crate::config::MIN_PUBLIC_KEY_BITS
        );
    }
    let phc = crate::keys::hash_secret(&secret)?;
    outln!("# under cliproxy.auth in config.yaml, instead of management_secret:");
    outln!("management_secret_argon2: '{phc}'");
    errln!(
        "Then give the CLI the secret itself in the environment: {}=…",
        crate::keys::SECRET_ENV
    );
    Ok(())
}
