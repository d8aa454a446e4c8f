//! Which daemon the CLI talks to: the local one (started on demand) or a remote one shared by
//! a team, with the keys and the TLS trust to reach it. Precedence, field by field: flags
//! (`--proxy-*`), then the environment (`CCS_PROXY_*`, read by clap with the flags), then
//! `cliproxy_server.remote` in config.yaml, then the defaults.
//!
//! Must not: start a local daemon or run a local OAuth exchange while a remote is in use, or
//! send a key to a server whose certificate was not verified.

mod probe;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::client::Client;
use crate::config::{Config, Paths, Protocol};
use crate::tls::{Fingerprint, Seen, Trust};

pub use probe::{get, healthz, Probe};

/// Why a daemon did not answer its `/healthz`, in the terms of what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// How to trust it could not be set up (a CA file that does not read, …).
    #[error("{0:#}")]
    Trust(anyhow::Error),
    #[error(
        "cannot reach {daemon}: it answers plain HTTP, not HTTPS: use --proxy-protocol http \
         (or protocol: http), or have its owner serve HTTPS (`ccs cliproxy cert`)"
    )]
    PlainHttp { daemon: String },
    #[error(
        "cannot reach {daemon}: nothing listens there. Is its daemon running (`ccs cliproxy \
         status` on the server), and are host and port right?"
    )]
    NothingListens { daemon: String },
    #[error(
        "refusing {url}: {text}. It is not the server you pinned, or its certificate was made \
         anew: check with its owner, then pin the fingerprint `ccs cliproxy cert` printed \
         (--proxy-fingerprint or cliproxy_server.remote.fingerprint)"
    )]
    NotPinned { url: String, text: String },
    #[error(
        "refusing {url}: its certificate is not trusted here ({text}). Pin it with \
         --proxy-fingerprint (or cliproxy_server.remote.fingerprint), or name its CA with \
         --proxy-ca-cert"
    )]
    Untrusted { url: String, text: String },
    #[error("cannot reach {daemon}: {text}")]
    Unreachable {
        daemon: String,
        text: String,
        source: std::io::Error,
    },
}

/// The `--proxy-*` flags (and their `CCS_PROXY_*` variables) of this run, set once by `main`.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Remote daemon (team mode)")]
pub struct ProxyFlags {
    /// Use the ccs daemon on this host instead of a local one (a team's shared server).
    #[arg(long, global = true, env = "CCS_PROXY_HOST", value_name = "HOST")]
    pub proxy_host: Option<String>,
    /// The remote daemon's port [default: 8317].
    #[arg(long, global = true, env = "CCS_PROXY_PORT", value_name = "PORT")]
    pub proxy_port: Option<u16>,
    /// How to reach the remote daemon [default: https].
    #[arg(long, global = true, env = "CCS_PROXY_PROTOCOL", value_enum)]
    pub proxy_protocol: Option<Protocol>,
    /// Your client key for the remote daemon (`ccs cliproxy key add` on the server made it).
    #[arg(
        long,
        global = true,
        env = "CCS_PROXY_AUTH_TOKEN",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub proxy_auth_token: Option<String>,
    /// The remote daemon's management secret, for commands that manage its accounts.
    #[arg(
        long,
        global = true,
        env = "CCS_PROXY_MANAGEMENT_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub proxy_management_key: Option<String>,
    /// Trust the remote daemon's certificate by its SHA-256 fingerprint (from `ccs cliproxy
    /// cert`).
    #[arg(
        long,
        global = true,
        env = "CCS_PROXY_FINGERPRINT",
        value_name = "SHA256"
    )]
    pub proxy_fingerprint: Option<String>,
    /// Trust the remote daemon's certificate through this PEM file (its CA, or itself).
    #[arg(long, global = true, env = "CCS_PROXY_CA_CERT", value_name = "FILE")]
    pub proxy_ca_cert: Option<PathBuf>,
}

static FLAGS: OnceLock<ProxyFlags> = OnceLock::new();

/// Records this run's `--proxy-*` flags (once, from `main`).
pub fn set_flags(flags: ProxyFlags) {
    let _ = FLAGS.set(flags);
}

fn flags() -> ProxyFlags {
    FLAGS.get().cloned().unwrap_or_default()
}

/// A daemon the CLI can reach, and how.
pub struct Endpoint {
    /// `https://host:port` (no trailing slash).
    pub url: String,
    pub remote: bool,
    /// The client key Claude Code (or any client) sends; empty when none is known.
    pub client_key: String,
    management_key: Option<String>,
    /// How the daemon's certificate is checked; `None` over plain HTTP.
    pub trust: Option<Trust>,
    /// A PEM file of the trusted certificate, when there is one on disk (a CA file, the local
    /// daemon's own certificate).
    ca_file: Option<PathBuf>,
    seen: Arc<Mutex<Seen>>,
}

impl Endpoint {
    /// The daemon this run uses.
    pub fn resolve(paths: &Paths, config: &Config) -> Result<Endpoint> {
        Endpoint::from_parts(paths, config, &flags())
    }

    fn from_parts(paths: &Paths, config: &Config, f: &ProxyFlags) -> Result<Endpoint> {
        let r = &config.cliproxy_server.remote;
        let host = f.proxy_host.clone().or_else(|| {
            r.enabled
                .then(|| r.host.clone())
                .flatten()
                .filter(|h| !h.is_empty())
        });
        let Some(host) = host else {
            return Endpoint::local(paths, config);
        };
        let port = f.proxy_port.unwrap_or(r.port);
        let protocol = f.proxy_protocol.unwrap_or(r.protocol);
        let url = match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("{}://[{host}]:{port}", protocol.scheme()),
            Err(_) => format!("{}://{host}:{port}", protocol.scheme()),
        };
        // How to trust the server is one setting: a flag for either replaces both of config's.
        // A file named on the command line is where the person is; one in config.yaml is
        // under CCS_HOME.
        let (fingerprint, ca) = if f.proxy_fingerprint.is_some() || f.proxy_ca_cert.is_some() {
            let here = std::env::current_dir().unwrap_or_default();
            (
                f.proxy_fingerprint.clone(),
                f.proxy_ca_cert.as_ref().map(|p| here.join(p)),
            )
        } else {
            (
                r.fingerprint.clone(),
                r.ca_cert.as_ref().map(|p| paths.home.join(p)),
            )
        };
        let (trust, ca_file) = match (protocol, fingerprint, ca) {
            (Protocol::Http, _, _) => (None, None),
            (Protocol::Https, Some(fp), _) => {
                let pin = Fingerprint::parse(&fp).with_context(|| {
                    format!(
                        "the fingerprint {fp:?} is not a SHA-256 fingerprint (64 hex digits, \
                         colons allowed, as `ccs cliproxy cert` prints it)"
                    )
                })?;
                (Some(Trust::Pin(pin)), None)
            }
            (Protocol::Https, None, Some(file)) => {
                let certs = crate::tls::read_certs(&file)?;
                (Some(Trust::Ca(certs)), Some(file))
            }
            (Protocol::Https, None, None) => (Some(Trust::Roots), None),
        };
        Ok(Endpoint {
            url,
            remote: true,
            client_key: f
                .proxy_auth_token
                .clone()
                .or_else(|| r.auth_token.clone())
                .unwrap_or_default(),
            management_key: f
                .proxy_management_key
                .clone()
                .or_else(|| r.management_key.clone())
                .filter(|k| !k.is_empty()),
            trust,
            ca_file,
            seen: Arc::default(),
        })
    }

    /// This machine's own daemon, as config.yaml sets it up.
    pub fn local(paths: &Paths, config: &Config) -> Result<Endpoint> {
        let (trust, ca_file) = match local_tls(paths, config)? {
            Some((pin, cert)) => (Some(Trust::Pin(pin)), Some(cert)),
            None => (None, None),
        };
        Ok(Endpoint {
            url: crate::daemon::configured_url(config),
            remote: false,
            client_key: config.client_key().to_string(),
            management_key: crate::keys::cli_secret(config).ok(),
            trust,
            ca_file,
            seen: Arc::default(),
        })
    }

    /// "the remote ccs daemon at URL" or "the ccs daemon at URL", for messages.
    pub fn describe(&self) -> String {
        if self.remote {
            format!("the remote ccs daemon at {}", self.url)
        } else {
            format!("the ccs daemon at {}", self.url)
        }
    }

    /// A management client; an error that says how to give the key when none is known.
    pub fn management(&self, config: &Config) -> Result<Client> {
        self.management_within(config, Duration::from_secs(60))
    }

    /// `management` whose every call gives up after `timeout`.
    pub fn management_within(&self, config: &Config, timeout: Duration) -> Result<Client> {
        let key = match (&self.management_key, self.remote) {
            (Some(k), _) => k.clone(),
            (None, true) => bail!(
                "this command manages {} and needs its management secret: pass \
                 --proxy-management-key, set CCS_PROXY_MANAGEMENT_KEY, or set \
                 cliproxy_server.remote.management_key in config.yaml (ask the server's owner)",
                self.describe()
            ),
            (None, false) => crate::keys::cli_secret(config)?,
        };
        Client::build(&self.url, &key, timeout, self.tls_config()?)
    }

    /// The rustls configuration for this daemon, `None` over plain HTTP.
    pub fn tls_config(&self) -> Result<Option<rustls::ClientConfig>> {
        self.trust
            .as_ref()
            .map(|t| crate::tls::client_config(t, self.seen.clone()))
            .transpose()
    }

    /// `GET /healthz`: the daemon's pid and the round trip (a new connection, with its TLS
    /// handshake), or why it cannot be reached, in words. A remote's certificate is checked
    /// here, before anything is sent to it; this machine's own daemon is only asked whether it
    /// is up (it may still serve a certificate renewed on disk since: its management calls pin).
    pub fn probe(&self) -> std::result::Result<Probe, ProbeError> {
        let tls = match (&self.trust, self.remote) {
            (None, _) => None,
            (Some(_), true) => self.tls_config().map_err(ProbeError::Trust)?,
            (Some(_), false) => Some(crate::tls::liveness_config().map_err(ProbeError::Trust)?),
        };
        probe::healthz(&self.url, tls).map_err(|e| self.unreachable(e))
    }

    /// Why `e` kept the daemon from answering, in the terms of what to do.
    fn unreachable(&self, e: std::io::Error) -> ProbeError {
        let text = e.to_string().replace("unexpected error: ", "");
        let (url, daemon) = (self.url.clone(), self.describe());
        if text.contains("InvalidContentType") || text.contains("corrupt message") {
            ProbeError::PlainHttp { daemon }
        } else if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ProbeError::NothingListens { daemon }
        } else if text.contains("not the pinned") {
            ProbeError::NotPinned { url, text }
        } else if text.contains("certificate") || text.contains("Certificate") {
            ProbeError::Untrusted { url, text }
        } else {
            ProbeError::Unreachable {
                daemon,
                text,
                source: e,
            }
        }
    }

    /// A PEM file Node.js (Claude Code) can take in `NODE_EXTRA_CA_CERTS` to trust this
    /// daemon: the CA file, the local daemon's certificate, or, for a pinned server, the
    /// certificate the last probe verified against the pin (written under `CCS_HOME`).
    /// A `NODE_EXTRA_CA_CERTS` already set is kept: both go into one file.
    pub fn node_ca(&self, paths: &Paths) -> Result<Option<PathBuf>> {
        let ours = match (&self.trust, &self.ca_file) {
            (None, _) | (Some(Trust::Roots), _) => return Ok(None),
            (_, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
            (Some(Trust::Pin(_)), None) => {
                let seen = self.seen.lock().map(|s| s.cert.clone()).ok().flatten();
                let Some(cert) = seen else {
                    bail!("the pinned certificate of {} was not seen yet", self.url);
                };
                crate::tls::pem(&cert)
            }
            (Some(Trust::Ca(_)), None) => return Ok(None),
        };
        let theirs = std::env::var_os("NODE_EXTRA_CA_CERTS")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let dir = paths.home.join("remote");
        crate::fsutil::private_dir(&dir)?;
        let file = dir.join("node-ca.pem");
        crate::fsutil::write_private(&file, format!("{theirs}{ours}").as_bytes())?;
        Ok(Some(file))
    }

    /// The `CCS_PROXY_*` variables that lead another ccs (the status line Claude Code runs) to
    /// this same remote daemon; the management secret is not among them.
    pub fn env_for_children(&self) -> Vec<(&'static str, String)> {
        if !self.remote {
            return vec![];
        }
        let f = flags();
        let mut out = vec![];
        if let Some(h) = f.proxy_host {
            out.push(("CCS_PROXY_HOST", h));
        }
        if let Some(p) = f.proxy_port {
            out.push(("CCS_PROXY_PORT", p.to_string()));
        }
        if let Some(p) = f.proxy_protocol {
            out.push(("CCS_PROXY_PROTOCOL", p.scheme().to_string()));
        }
        if let Some(t) = f.proxy_fingerprint {
            out.push(("CCS_PROXY_FINGERPRINT", t));
        }
        if let Some(c) = f.proxy_ca_cert {
            out.push(("CCS_PROXY_CA_CERT", c.display().to_string()));
        }
        out
    }
}

/// The local daemon's certificate fingerprint and file, when config.yaml has it serve HTTPS.
pub fn local_tls(paths: &Paths, config: &Config) -> Result<Option<(Fingerprint, PathBuf)>> {
    let Some(tls) = &config.cliproxy.tls else {
        return Ok(None);
    };
    let file = paths.home.join(&tls.cert);
    let certs = crate::tls::read_certs(&file)?;
    Ok(Some((Fingerprint::of(&certs[0]), file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path().to_path_buf());
        (dir, paths)
    }

    fn config(yaml: &str) -> Config {
        Config::parse(yaml, std::path::Path::new("/x/config.yaml")).unwrap()
    }

    const PIN: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    #[test]
    fn flags_beat_the_config_field_by_field_and_the_defaults_fill_the_rest() {
        let (_d, paths) = home();
        let c = config(&format!(
            "cliproxy_server:\n  remote:\n    enabled: true\n    host: team.example\n    \
             auth_token: from-config\n    management_key: m-config\n    fingerprint: \"{PIN}\"\n"
        ));
        let e = Endpoint::from_parts(&paths, &c, &ProxyFlags::default()).unwrap();
        assert!(e.remote);
        assert_eq!(e.url, "https://team.example:8317");
        assert_eq!(e.client_key, "from-config");
        assert!(matches!(e.trust, Some(Trust::Pin(_))));
        let f = ProxyFlags {
            proxy_host: Some("127.0.0.2".into()),
            proxy_port: Some(9000),
            proxy_auth_token: Some("from-flag".into()),
            ..Default::default()
        };
        let e = Endpoint::from_parts(&paths, &c, &f).unwrap();
        assert_eq!(e.url, "https://127.0.0.2:9000");
        assert_eq!(e.client_key, "from-flag");
        assert_eq!(e.management_key.as_deref(), Some("m-config"));
        assert!(
            matches!(e.trust, Some(Trust::Pin(_))),
            "config's pin still holds"
        );
        // A CA file given by flag replaces config's pin (one trust setting, not a mix).
        let ca = crate::tls::self_signed(&["h".into()]).unwrap();
        std::fs::write(paths.home.join("ca.pem"), &ca.cert_pem).unwrap();
        let f = ProxyFlags {
            proxy_ca_cert: Some(paths.home.join("ca.pem")),
            ..f
        };
        let e = Endpoint::from_parts(&paths, &c, &f).unwrap();
        assert!(matches!(e.trust, Some(Trust::Ca(_))));
    }

    #[test]
    fn a_remote_is_used_only_when_enabled_or_named_by_a_flag() {
        let (_d, paths) = home();
        let off =
            config("cliproxy_server:\n  remote:\n    enabled: false\n    host: team.example\n");
        let e = Endpoint::from_parts(&paths, &off, &ProxyFlags::default()).unwrap();
        assert!(!e.remote);
        assert_eq!(e.url, "http://127.0.0.1:8317");
        let f = ProxyFlags {
            proxy_host: Some("::1".into()),
            proxy_protocol: Some(Protocol::Http),
            ..Default::default()
        };
        let e = Endpoint::from_parts(&paths, &off, &f).unwrap();
        assert!(e.remote && e.trust.is_none());
        assert_eq!(e.url, "http://[::1]:8317");
        let err = e.management(&off).err().expect("no management key");
        assert!(err.to_string().contains("--proxy-management-key"), "{err}");
    }

    #[test]
    fn a_bad_fingerprint_flag_is_refused_with_what_is_expected() {
        let (_d, paths) = home();
        let f = ProxyFlags {
            proxy_host: Some("h".into()),
            proxy_fingerprint: Some("12:34".into()),
            ..Default::default()
        };
        let err = Endpoint::from_parts(&paths, &Config::default(), &f)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
