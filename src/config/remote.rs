//! The settings of a shared daemon: `cliproxy.tls` (the daemon serves HTTPS) and
//! `cliproxy_server.remote` (this machine's `ccs` uses a daemon on another machine). Relative
//! paths are under `CCS_HOME`.

use std::path::PathBuf;

use serde::Deserialize;

/// `cliproxy.tls`: the daemon's certificate chain and private key, PEM files.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `cliproxy_server`: where the daemon this machine uses runs.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyServer {
    pub remote: Remote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// `cliproxy_server.remote`: a daemon on another machine, shared by a team. While enabled, no
/// local daemon is started and no local OAuth happens; the flags `--proxy-*` and the
/// environment `CCS_PROXY_*` override each field.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Remote {
    pub enabled: bool,
    pub host: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    /// The client key the server's owner made for this person (`ccs cliproxy key add`).
    pub auth_token: Option<String>,
    /// The server's management secret, for the commands that manage accounts.
    pub management_key: Option<String>,
    /// A PEM file of the certificate (or its CA) the server presents.
    pub ca_cert: Option<PathBuf>,
    /// Or the SHA-256 fingerprint of the server's certificate, as `ccs cliproxy cert` printed it.
    pub fingerprint: Option<String>,
}

impl Default for Remote {
    fn default() -> Self {
        Remote {
            enabled: false,
            host: None,
            port: 8317,
            protocol: Protocol::Https,
            auth_token: None,
            management_key: None,
            ca_cert: None,
            fingerprint: None,
        }
    }
}
