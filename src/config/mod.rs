//! `CCS_HOME` and every path under it, and `config.yaml`.
//!
//! Owns the defaults (proxy on 127.0.0.1:8317, the real Anthropic URLs, generous but finite
//! upstream timeouts) and the loading rules: a missing file means defaults, a malformed one is an
//! error that names the file and the line. Must not: create or write anything; commands decide
//! when folders come into being.

mod paths;
mod remote;
mod store;
mod validate;
mod values;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use paths::Paths;
pub use remote::{Protocol, ProxyServer, Remote, Tls};
pub use store::{redact_url, Backend, Redis, Store};
pub use values::{words, On, Size, Span};

/// The client key the tool we replace uses by default (specs/anthropic.md §6). Public, so
/// accepted only when config.yaml names it explicitly (unset keys are generated: `keys.rs`).
pub const DEFAULT_API_KEY: &str = "ccs-internal-managed";
/// The management secret of the tool we replace, public in the same way.
pub const DEFAULT_MANAGEMENT_SECRET: &str = "ccs-internal-management";
/// The shortest key or secret accepted when the daemon listens beyond loopback.
pub const MIN_PUBLIC_KEY_CHARS: usize = 24;
/// The least estimated entropy (`entropy_bits`) of such a key: a random 24 characters of
/// letters and digits has about 100 bits, 24 `a`s none, a short word repeated few.
pub const MIN_PUBLIC_KEY_BITS: f64 = 80.0;

/// An estimate of the entropy of a key a person chose, in bits: its length times the Shannon
/// entropy of its characters' frequencies. It cannot see a dictionary word, but it sees
/// repetition and small alphabets, which is what a too-weak key mostly is.
pub fn entropy_bits(key: &str) -> f64 {
    let mut counts: std::collections::HashMap<char, usize> = std::collections::HashMap::new();
    for c in key.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let n = key.chars().count() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let per_char: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_char * n
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{path}: line {line}: {message}\n  fix the line or move the file away to use the defaults"
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find a home folder: set CCS_HOME to the folder ccs should use")]
    NoHome,
}
/// `config.yaml`. Every field has a default; unknown keys are refused so typos surface.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub cliproxy: Proxy,
    pub upstream: Upstream,
    pub oauth: OAuth,
    /// Native profiles (`ccs auth`), by name.
    pub accounts: std::collections::BTreeMap<String, AccountConfig>,
    /// Where Claude Code is, when it is not on PATH.
    pub claude_path: Option<PathBuf>,
    /// `ccs claude` and `ccs run` give Claude Code a status line (`ccs statusline`) naming the
    /// account serving the conversation, unless the user has a status line of their own.
    pub status_line: On,
    /// A daemon on another machine to use instead of a local one.
    pub cliproxy_server: ProxyServer,
    /// Where the pool's state lives: sled here, or Redis shared by several daemons.
    pub store: Store,
    /// What a move between accounts does to a conversation's thinking blocks
    /// (specs/continuity.md).
    pub continuity: Continuity,
    /// Who hears about events worth a person's attention (`src/alerts/`).
    pub alerts: Alerts,
}

/// `alerts:` in config.yaml.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerts {
    /// A JSON POST per alert, signed (`X-Ccs-Signature`), with a Slack-compatible `text`.
    pub webhook: Option<Webhook>,
    /// Desktop notifications for a daemon on this machine: `auto` (`notify-send`, or
    /// `osascript` on macOS, where it exists), `off`, or a program called as
    /// `PROGRAM TITLE BODY`.
    pub desktop: String,
    /// A pool whose runway drops under this is worth an alert.
    pub runway_below: Span,
    /// The same alert (event and subject) at most this often, however often its state flaps.
    pub min_interval: Span,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            webhook: None,
            desktop: "auto".into(),
            runway_below: Span(Duration::from_secs(30 * 60)),
            min_interval: Span(Duration::from_secs(10 * 60)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// The HMAC-SHA256 key the receiver checks `X-Ccs-Signature` with.
    pub secret: String,
}

/// `continuity:` in config.yaml.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Continuity {
    /// Remove, on a move, the thinking blocks a model would refuse from another account
    /// (`off` sends every body as the client sent it, and relays the 400s that follow).
    pub fit: On,
    /// Per model id prefix, what the model does with another account's thinking blocks:
    /// `reject`, `drop` or `accept`, over the defaults of specs/anthropic.md §9.
    pub models: std::collections::BTreeMap<String, crate::proxy::continuity::Binding>,
}

impl Default for Continuity {
    fn default() -> Self {
        Continuity {
            fit: On(true),
            models: Default::default(),
        }
    }
}
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    pub host: IpAddr,
    pub port: u16,
    pub auth: ProxyAuth,
    /// Refresh a token this long before it expires.
    pub refresh_lead: Span,
    /// Forget a session's account binding after this long idle.
    pub affinity_ttl: Span,
    /// New sessions avoid accounts at or above this 5-hour utilization (0..1).
    pub soft_threshold: f64,
    /// Largest request body the proxy accepts.
    pub body_limit: Size,
    /// Most bytes of request bodies held at once, over all requests; beyond it a new request
    /// gets 503 with `retry-after`, so memory stays bounded whatever clients send.
    pub bodies_in_flight: Size,
    /// Longest time a client may take to send a request body.
    pub body_timeout: Span,
    /// How long a stopping daemon lets answers in flight finish; a stream still running then
    /// ends with an SSE `error` event.
    pub stop_grace: Span,
    /// Host names (beyond IP literals and `localhost`) the daemon answers to in `Host`.
    /// Anything else is refused, which stops DNS-rebinding pages.
    pub allowed_hosts: Vec<String>,
    /// Serve plain HTTP beyond loopback, where the keys would cross the network in clear text
    /// (refused unless this is set; a warning names the risk when it is).
    pub allow_plain_http: bool,
    /// Serve HTTPS with this certificate and key (PEM files, read at each start).
    pub tls: Option<Tls>,
    /// How often the accounts' quota is sampled for the runway forecast; the forecast needs
    /// five samples' worth of history (five minutes by default).
    pub runway_sample: Span,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyAuth {
    /// The client key Claude Code sends (`ANTHROPIC_AUTH_TOKEN`); generated at first use
    /// when unset (`keys.rs`).
    pub api_key: Option<String>,
    /// More accepted client keys, e.g. one per machine.
    pub api_keys: Vec<String>,
    /// Guards `/v0/management/*` and the dashboard; generated at first use when unset.
    pub management_secret: Option<String>,
    /// The management secret stored hashed instead (an argon2 PHC string, from
    /// `ccs cliproxy hash-secret`): the daemon checks against it, and the CLI reads the secret
    /// from `CCS_MANAGEMENT_KEY`.
    pub management_secret_argon2: Option<String>,
    /// A key that reads `/metrics` only (for a Prometheus scraper), besides the management
    /// secret; unset: only the secret reads it.
    pub metrics_key: Option<String>,
    /// Named client keys, one per person or machine: requests are attributed to the name in
    /// the live feed, usage and metrics. Keys made with `ccs cliproxy key add` are kept by the
    /// daemon (hashed) and need no entry here.
    pub clients: Vec<ClientEntry>,
}

/// A client key's name: 1–40 letters, digits, '-', '_' or '.' (it shows in metrics labels).
pub fn valid_client_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One named client key in config.yaml: the key itself, or its SHA-256 in hex.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientEntry {
    pub name: String,
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    /// The key's own limit on requests started per minute (a 429 that says it is this
    /// daemon's limit, not Anthropic's).
    pub requests_per_minute: Option<u32>,
    /// The key's own limit on requests in flight at once.
    pub concurrent: Option<u32>,
    /// The pools it may draw from (none: any).
    pub pools: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    /// Base of the Messages API (`/v1/messages` is appended).
    pub api_base: String,
    /// Longest wait for response headers of a stream, `count_tokens` or `models` (a stream's
    /// `message_start` comes at once). Past it the next account is tried.
    pub header_timeout: Span,
    /// Longest wait for the headers of a non-streaming message, which come only when the whole
    /// answer is ready; under Claude Code's own 10 minutes so the client hears why. Also the
    /// bound on a request's whole wait before its first byte, over every account tried.
    pub header_timeout_whole: Span,
    /// Longest silence between two chunks of an answer's body; a stream then ends with an
    /// SSE `error` event.
    pub idle_timeout: Span,
    /// A CA certificate (PEM, relative to CCS_HOME) to trust for `api_base` besides the
    /// built-in roots: a TLS-inspecting company proxy, or a test's simulator over HTTPS.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Open a connection to `api_base` as each HTTP worker starts (a `HEAD` of the base, no
    /// credential), so the first turn does not pay the TCP and TLS handshakes.
    pub warm: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuth {
    pub authorize_url: String,
    /// Moved twice already (specs/anthropic.md §1), hence config.
    pub token_url: String,
    pub profile_url: String,
    pub usage_url: String,
    pub client_id: String,
    pub scope: String,
    /// The login callback listens on 127.0.0.1 at this port.
    pub callback_port: u16,
    /// How long a caller (a forced refresh, a stopping daemon) waits for a refresh's answer
    /// before it is told the answer is slow. The call itself goes on far longer
    /// (`oauth::refresh_hard_bound`): refresh tokens rotate the moment the authority answers,
    /// so an answer given up on is a grant lost.
    pub refresh_timeout: Span,
    /// How often, at most, the usage endpoint is asked about an account a window benches, to
    /// lift the bench when the window opens before its announced reset (jittered by up to
    /// half again, doubled after each 429; `0s` never asks).
    pub usage_poll: Span,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    pub context_group: Option<String>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8317,
            auth: ProxyAuth::default(),
            refresh_lead: Span(Duration::from_secs(300)),
            affinity_ttl: Span(Duration::from_secs(3600)),
            soft_threshold: 0.95,
            body_limit: Size(32 << 20),
            bodies_in_flight: Size(256 << 20),
            body_timeout: Span(Duration::from_secs(60)),
            stop_grace: Span(Duration::from_secs(10)),
            allowed_hosts: Vec::new(),
            allow_plain_http: false,
            tls: None,
            runway_sample: Span(Duration::from_secs(60)),
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            api_base: "https://api.anthropic.com".to_string(),
            header_timeout: Span(Duration::from_secs(60)),
            header_timeout_whole: Span(Duration::from_secs(570)),
            idle_timeout: Span(Duration::from_secs(90)),
            ca_cert: None,
            warm: true,
        }
    }
}

impl Default for OAuth {
    fn default() -> Self {
        OAuth {
            authorize_url: "https://claude.ai/oauth/authorize".to_string(),
            token_url: "https://platform.claude.com/v1/oauth/token".to_string(),
            profile_url: "https://api.anthropic.com/api/oauth/profile".to_string(),
            usage_url: "https://api.anthropic.com/api/oauth/usage".to_string(),
            client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e".to_string(),
            scope: "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload".to_string(),
            callback_port: 54545,
            refresh_timeout: Span(Duration::from_secs(120)),
            usage_poll: Span(Duration::from_secs(300)),
        }
    }
}

impl Config {
    /// Reads `config.yaml` under `paths`; a missing (or empty) file gives the defaults.
    pub fn load(paths: &Paths) -> Result<Config, ConfigError> {
        let path = paths.config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Unreadable { path, source }),
        };
        Config::parse(&text, &path)
    }

    /// Parses config text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Malformed {
            path: path.to_path_buf(),
            line: e.location().map(|l| l.line()).unwrap_or(1),
            message: strip_location(&e.to_string()),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The client key ccs gives Claude Code; empty until the keys are resolved
    /// (`keys::resolve`), and an empty key matches nothing.
    pub fn client_key(&self) -> &str {
        self.cliproxy.auth.api_key.as_deref().unwrap_or("")
    }

    /// The management secret; empty (matching nothing) until the keys are resolved.
    pub fn management_secret(&self) -> &str {
        self.cliproxy
            .auth
            .management_secret
            .as_deref()
            .unwrap_or("")
    }

    /// Every accepted client key (never an empty one).
    pub fn client_keys(&self) -> impl Iterator<Item = &str> {
        self.cliproxy
            .auth
            .api_key
            .iter()
            .chain(&self.cliproxy.auth.api_keys)
            .map(String::as_str)
            .filter(|k| !k.is_empty())
    }

    pub fn lifecycle_policy(&self) -> ccs_actors::lifecycle::Policy {
        ccs_actors::lifecycle::Policy {
            lead: self.cliproxy.refresh_lead.0,
            ..Default::default()
        }
    }

    pub fn routing_policy(&self) -> ccs_actors::routing::Policy {
        ccs_actors::routing::Policy {
            soft_threshold: self.cliproxy.soft_threshold,
            affinity_ttl: self.cliproxy.affinity_ttl.0,
        }
    }
}

/// serde_yaml_ng appends "at line N column M"; the line is reported separately.
pub(crate) fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/x/config.yaml"))
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&Paths::at(dir.path())).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.cliproxy.port, 8317);
        assert!(c.cliproxy.host.is_loopback());
        assert_eq!(
            c.cliproxy.auth.api_key, None,
            "generated at first use, not a default"
        );
        assert_eq!(
            c.client_keys().count(),
            0,
            "an unresolved key matches nothing"
        );
        assert_eq!(c.cliproxy.body_limit, Size(32 * 1024 * 1024));
        assert_eq!(c.cliproxy.refresh_lead, Span(Duration::from_secs(300)));
        assert_eq!(c.cliproxy.affinity_ttl, Span(Duration::from_secs(3600)));
    }

    #[test]
    fn reads_the_documented_keys() {
        let c = parse(
            "cliproxy:\n  port: 9000\n  refresh_lead: 10m\n  affinity_ttl: 2h\n  soft_threshold: 0.8\n  body_limit: 8MiB\n  auth:\n    api_key: k1\n    management_secret: s3cret\nupstream:\n  api_base: http://127.0.0.1:1234\noauth:\n  token_url: http://127.0.0.1:1234/v1/oauth/token\naccounts:\n  work:\n    context_group: team\n",
        )
        .unwrap();
        assert_eq!(c.cliproxy.port, 9000);
        assert_eq!(c.cliproxy.refresh_lead.0, Duration::from_secs(600));
        assert_eq!(c.cliproxy.affinity_ttl.0, Duration::from_secs(7200));
        assert_eq!(c.cliproxy.body_limit.0, 8 << 20);
        assert_eq!(c.management_secret(), "s3cret");
        assert_eq!(c.upstream.api_base, "http://127.0.0.1:1234");
        assert_eq!(
            c.oauth.client_id,
            OAuth::default().client_id,
            "unset keys keep defaults"
        );
        assert_eq!(c.accounts["work"].context_group.as_deref(), Some("team"));
        assert_eq!(c.client_keys().collect::<Vec<_>>(), vec!["k1"]);
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let err = parse("cliproxy:\n  port: 8317\n  host: [oops\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Malformed { .. }), "{msg}");
        assert!(msg.contains("/x/config.yaml: line "), "{msg}");
        let ConfigError::Malformed { line, .. } = err else {
            unreachable!()
        };
        assert!((3..=4).contains(&line), "line {line}: {msg}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_with_lines() {
        let err = parse("cliproxy:\n  prot: 1\n").unwrap_err();
        let ConfigError::Malformed { line, message, .. } = err else {
            panic!("expected Malformed")
        };
        assert_eq!(line, 2);
        assert!(message.contains("prot"), "{message}");
        let err = parse("cliproxy:\n  refresh_lead: 5 fortnights\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse("cliproxy:\n  soft_threshold: 3\n").unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
        let clients =
            |entries: &str| parse(&format!("cliproxy:\n  auth:\n    clients:\n{entries}"));
        assert!(clients("      - {name: ann, key: k1}\n      - {name: bob, key_sha256: \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}\n").is_ok());
        let err = parse("cliproxy:\n  auth:\n    management_secret_argon2: plain\n").unwrap_err();
        assert!(err.to_string().contains("hash-secret"), "{err}");
        let phc = crate::keys::hash_secret("0123456789abcdef0123456789").unwrap();
        assert!(parse(&format!(
            "cliproxy:\n  auth:\n    management_secret_argon2: '{phc}'\n"
        ))
        .is_ok());
        let err = parse(&format!(
            "cliproxy:\n  auth:\n    management_secret: x\n    management_secret_argon2: '{phc}'\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("keep one"), "{err}");
        for (entries, says) in [
            (
                "      - {name: ann, key: k1, key_sha256: ab}\n",
                "exactly one of",
            ),
            ("      - {name: ann}\n", "exactly one of"),
            ("      - {name: ann, key_sha256: xyz}\n", "64 hex digits"),
            (
                "      - {name: ann, key: a}\n      - {name: ANN, key: b}\n",
                "given twice",
            ),
            ("      - {name: \"a b\", key: a}\n", "letters, digits"),
        ] {
            let err = clients(entries).unwrap_err().to_string();
            assert!(err.contains(says), "{entries}: {err}");
        }
    }

    #[test]
    fn a_keys_entropy_sees_repetition_and_small_alphabets() {
        assert_eq!(entropy_bits(""), 0.0);
        assert_eq!(entropy_bits(&"a".repeat(24)), 0.0);
        assert!(
            (entropy_bits("abababab") - 8.0).abs() < 1e-9,
            "1 bit a character"
        );
        // What `openssl rand -hex 16` and ccs's own keys look like.
        assert!(entropy_bits("3f9a0c7e5b21d84f6a0e9c3b7d5f1a2e") >= MIN_PUBLIC_KEY_BITS);
        assert!(
            entropy_bits("ccs-q2Xv8Lr0Tz1pK7mN4wYb6sHd9cJf3gUe5aQi0oPl2") >= MIN_PUBLIC_KEY_BITS
        );
        assert!(entropy_bits("passwordpasswordpassword") < MIN_PUBLIC_KEY_BITS);
    }

    #[test]
    fn a_public_bind_refuses_default_names_and_weak_keys() {
        let strong = "0123456789abcdef0123456789abcdef";
        assert!(
            parse("cliproxy:\n  host: 0.0.0.0\n").is_ok(),
            "generated keys are strong"
        );
        for (auth, says) in [
            ("api_key: ccs-internal-managed", "public default"),
            (
                "management_secret: ccs-internal-management",
                "public default",
            ),
            ("api_key: a", "has 1 characters"),
            ("api_keys: [b]", "has 1 characters"),
            ("management_secret: short-secret", "has 12 characters"),
            ("api_key: aaaaaaaaaaaaaaaaaaaaaaaa", "too guessable"),
            (
                "management_secret: abcabcabcabcabcabcabcabc",
                "too guessable",
            ),
        ] {
            let err = parse(&format!(
                "cliproxy:\n  host: 0.0.0.0\n  auth:\n    {auth}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(says) && err.contains("openssl rand"),
                "{auth}: {err}"
            );
        }
        assert!(parse(&format!(
            "cliproxy:\n  host: 0.0.0.0\n  auth:\n    api_key: {strong}\n    management_secret: {strong}x\n"
        ))
        .is_ok());
        assert!(
            parse("cliproxy:\n  auth:\n    api_key: a\n").is_ok(),
            "any key on loopback"
        );
    }

    #[test]
    fn the_readmes_config_block_parses_to_the_defaults() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## config.yaml").expect("the section")..];
        let start = section.find("```yaml\n").expect("a yaml block") + 8;
        let block = &section[start..start + section[start..].find("```").unwrap()];
        let mut c = parse(block).unwrap_or_else(|e| panic!("README's config.yaml: {e}"));
        assert_eq!(c.accounts["work"].context_group.as_deref(), Some("team"));
        c.accounts.clear();
        assert_eq!(c, Config::default(), "README shows the defaults");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(words(Duration::from_secs(1)), "1m");
        assert_eq!(words(Duration::from_secs(61)), "2m");
        assert_eq!(words(Duration::from_secs(2 * 3600 + 13 * 60)), "2h 13m");
        assert_eq!(words(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }

    #[test]
    fn spans_and_sizes_parse() {
        assert_eq!(Span::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Span::parse("90").unwrap().0, Duration::from_secs(90));
        assert!(Span::parse("5 fortnights").is_err());
        assert_eq!(Size::parse("10MB").unwrap().0, 10_000_000);
        assert!(Size::parse("lots").is_err());
    }
}
