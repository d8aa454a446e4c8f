//! `ccs cliproxy cert [--self-signed HOST…]`: the daemon's TLS certificate, made or shown, with
//! the fingerprint the clients pin.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::config::Paths;
use crate::tls::{self, Fingerprint};

/// Where `--self-signed` writes, relative to `CCS_HOME` (as config.yaml names them).
const CERT: &str = "tls/cert.pem";
const KEY: &str = "tls/key.pem";

pub fn cert(hosts: &[String], force: bool, json_out: bool) -> Result<()> {
    let paths = Paths::from_env()?;
    if hosts.is_empty() {
        return show(&paths, json_out);
    }
    let (cert, key) = (paths.home.join(CERT), paths.home.join(KEY));
    if (cert.exists() || key.exists()) && !force {
        bail!(
            "{} already holds a certificate: the clients pinned its fingerprint. Make a new one \
             with --force (then give every client the new fingerprint)",
            cert.display()
        );
    }
    let made = tls::self_signed(hosts)?;
    crate::fsutil::private_dir(&paths.home)?;
    crate::fsutil::private_dir(&paths.home.join("tls"))?;
    crate::fsutil::write_private(&key, made.key_pem.as_bytes())
        .with_context(|| format!("cannot write {}", key.display()))?;
    crate::fsutil::write_private(&cert, made.cert_pem.as_bytes())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "cert": cert, "key": key, "hosts": hosts,
                "fingerprint": made.fingerprint.to_string(),
            }))?
        );
        return Ok(());
    }
    outln!(
        "Wrote a private key and a self-signed certificate for {}:",
        hosts.join(", ")
    );
    outln!("  {}\n  {}\n", cert.display(), key.display());
    outln!(
        "Serve it: put these lines in {}",
        paths.config_file().display()
    );
    outln!("\n  cliproxy:\n    tls:\n      cert: {CERT}\n      key: {KEY}\n");
    outln!("then `ccs cliproxy restart`. Its SHA-256 fingerprint, for the clients to pin:\n");
    outln!("  {}\n", made.fingerprint);
    outln!(
        "On each client: ccs --proxy-host {} --proxy-fingerprint {} --proxy-auth-token KEY …",
        hosts[0],
        made.fingerprint
    );
    outln!("(or the same in cliproxy_server.remote of its config.yaml; make KEY with `ccs cliproxy key add NAME`).");
    Ok(())
}

fn show(paths: &Paths, json_out: bool) -> Result<()> {
    let config = crate::config::Config::load(paths)?;
    let Some(t) = &config.cliproxy.tls else {
        bail!(
            "this daemon serves plain HTTP (no cliproxy.tls in {}): make a certificate with \
             `ccs cliproxy cert --self-signed HOST…`",
            paths.config_file().display()
        );
    };
    let file = paths.home.join(&t.cert);
    let certs = tls::read_certs(&file)?;
    let fp = Fingerprint::of(&certs[0]);
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"cert": file, "fingerprint": fp.to_string()}))?
        );
    } else {
        outln!("certificate  {}", file.display());
        outln!("fingerprint  {fp}");
    }
    Ok(())
}
