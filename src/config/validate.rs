//! The checks of a loaded `config.yaml`: every refusal names the key and says what to do.

use std::path::Path;

use super::{
    valid_client_name, Config, ConfigError, DEFAULT_API_KEY, DEFAULT_MANAGEMENT_SECRET,
    MIN_PUBLIC_KEY_CHARS,
};

impl Config {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if let Some(w) = &self.alerts.webhook {
            if url::Url::parse(&w.url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
                return Err(invalid(format!(
                    "alerts.webhook.url {:?} is not an http(s) URL",
                    w.url
                )));
            }
            if w.secret.len() < 16 {
                return Err(invalid(
                    "alerts.webhook.secret is shorter than 16 characters; give it a long random \
                     string (the receiver checks each alert's X-Ccs-Signature with it)"
                        .into(),
                ));
            }
        }
        let t = self.cliproxy.soft_threshold;
        if !(0.0..=1.0).contains(&t) {
            return Err(invalid(format!(
                "cliproxy.soft_threshold is {t}; it must be between 0 and 1 (default 0.95)"
            )));
        }
        if self.cliproxy.auth.api_key.as_deref() == Some("")
            || self.cliproxy.auth.api_keys.iter().any(String::is_empty)
        {
            return Err(invalid(
                "a client key in cliproxy.auth is empty; remove the line to use a generated one"
                    .into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.cliproxy.auth.clients {
            if !valid_client_name(&c.name) {
                return Err(invalid(format!(
                    "cliproxy.auth.clients: name {:?}: use letters, digits, '-', '_' or '.'",
                    c.name
                )));
            }
            if !names.insert(c.name.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "cliproxy.auth.clients: the name {:?} is given twice",
                    c.name
                )));
            }
            let hex_ok = |h: &str| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit());
            match (&c.key, &c.key_sha256) {
                (Some(k), None) if !k.is_empty() => {}
                (None, Some(h)) if hex_ok(h) => {}
                _ => {
                    return Err(invalid(format!(
                        "cliproxy.auth.clients: {:?} needs exactly one of `key` or `key_sha256` \
                         (64 hex digits)",
                        c.name
                    )))
                }
            }
        }
        if let Some(phc) = &self.cliproxy.auth.management_secret_argon2 {
            if self.cliproxy.auth.management_secret.is_some() {
                return Err(invalid(
                    "cliproxy.auth sets both management_secret and management_secret_argon2: \
                     keep one"
                        .into(),
                ));
            }
            if argon2::PasswordHash::new(phc).is_err() {
                return Err(invalid(
                    "cliproxy.auth.management_secret_argon2 is not an argon2 hash string \
                     ($argon2id$…): make one with `ccs cliproxy hash-secret`"
                        .into(),
                ));
            }
        }
        if self.cliproxy.auth.management_secret.as_deref() == Some("") {
            return Err(invalid(
                "cliproxy.auth.management_secret is empty; remove the line to use a generated one"
                    .into(),
            ));
        }
        if !self.cliproxy.host.is_loopback() {
            if let Some(problem) = self.public_key_problem() {
                return Err(invalid(problem));
            }
        }
        for (key, span) in [
            ("cliproxy.body_timeout", self.cliproxy.body_timeout),
            ("upstream.header_timeout", self.upstream.header_timeout),
            (
                "upstream.header_timeout_whole",
                self.upstream.header_timeout_whole,
            ),
            ("upstream.idle_timeout", self.upstream.idle_timeout),
        ] {
            if span.0.is_zero() {
                return Err(invalid(format!(
                    "{key} is 0; it must be a positive duration (remove the line for the default)"
                )));
            }
        }
        if self.cliproxy.bodies_in_flight.0 < self.cliproxy.body_limit.0 {
            return Err(invalid(format!(
                "cliproxy.bodies_in_flight ({} bytes) is below cliproxy.body_limit ({} bytes): \
                 not even one largest body would fit",
                self.cliproxy.bodies_in_flight.0, self.cliproxy.body_limit.0
            )));
        }
        for (key, url) in [
            ("upstream.api_base", &self.upstream.api_base),
            ("oauth.authorize_url", &self.oauth.authorize_url),
            ("oauth.token_url", &self.oauth.token_url),
            ("oauth.profile_url", &self.oauth.profile_url),
            ("oauth.usage_url", &self.oauth.usage_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!(
                    "{key} is {url:?}; it must be an http:// or https:// URL"
                )));
            }
        }
        if let Some(problem) = self.store.problem(self.oauth.refresh_timeout.0) {
            return Err(invalid(problem));
        }
        self.validate_remote(&invalid)
    }

    fn validate_remote(&self, invalid: &dyn Fn(String) -> ConfigError) -> Result<(), ConfigError> {
        let r = &self.cliproxy_server.remote;
        if let Some(f) = &r.fingerprint {
            if crate::tls::Fingerprint::parse(f).is_none() {
                return Err(invalid(format!(
                    "cliproxy_server.remote.fingerprint {f:?} is not a SHA-256 fingerprint: \
                     64 hex digits, colons allowed (as `ccs cliproxy cert` prints it)"
                )));
            }
        }
        if r.fingerprint.is_some() && r.ca_cert.is_some() {
            return Err(invalid(
                "cliproxy_server.remote sets both ca_cert and fingerprint: keep one".into(),
            ));
        }
        if r.enabled && r.host.as_deref().unwrap_or("").is_empty() {
            return Err(invalid(
                "cliproxy_server.remote is enabled but names no host: set \
                 cliproxy_server.remote.host (or pass --proxy-host)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Why the keys set in config.yaml are not fit for a daemon reachable from other machines:
    /// a public default name, or too short to withstand guessing. Generated keys always are.
    pub fn public_key_problem(&self) -> Option<String> {
        let auth = &self.cliproxy.auth;
        let set = auth
            .api_key
            .iter()
            .chain(&auth.api_keys)
            .map(|k| ("a client key", k))
            .chain(
                auth.management_secret
                    .iter()
                    .map(|s| ("the management secret", s)),
            )
            .chain(auth.metrics_key.iter().map(|s| ("the metrics key", s)))
            .chain(
                auth.clients
                    .iter()
                    .filter_map(|c| c.key.as_ref())
                    .map(|k| ("a named client key", k)),
            );
        for (what, k) in set {
            if k == DEFAULT_API_KEY || k == DEFAULT_MANAGEMENT_SECRET {
                return Some(format!(
                    "{what} in cliproxy.auth is the public default {k:?}, refused when \
                     cliproxy.host ({}) is not loopback: remove the line to use a generated one, \
                     or set a random one (e.g. `openssl rand -hex 32`)",
                    self.cliproxy.host
                ));
            }
            if k.chars().count() < MIN_PUBLIC_KEY_CHARS {
                return Some(format!(
                    "{what} in cliproxy.auth has {} characters; a daemon listening beyond \
                     loopback ({}) needs at least {MIN_PUBLIC_KEY_CHARS}: remove the line to use a \
                     generated one, or set a random one (e.g. `openssl rand -hex 32`)",
                    k.chars().count(),
                    self.cliproxy.host
                ));
            }
            let bits = super::entropy_bits(k);
            if bits < super::MIN_PUBLIC_KEY_BITS {
                return Some(format!(
                    "{what} in cliproxy.auth is too guessable for a daemon listening beyond \
                     loopback ({}): about {bits:.0} bits, {:.0} needed (repeated or few \
                     distinct characters): remove the line to use a generated one, or set a \
                     random one (e.g. `openssl rand -hex 32`)",
                    self.cliproxy.host,
                    super::MIN_PUBLIC_KEY_BITS
                ));
            }
        }
        None
    }
}
