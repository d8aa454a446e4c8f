//! `store:` in config.yaml: where the pool's state lives. sled on this machine (the default),
//! or Redis shared by several daemons (specs/shared-store.md).

use std::time::Duration;

use serde::Deserialize;

use super::Span;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// This daemon alone, on its own sled database.
    #[default]
    Sled,
    /// Several daemons share one pool through Redis; each keeps its sled copy too.
    Redis,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Redis => "redis",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    pub backend: Backend,
    pub redis: Redis,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Option<String>,
    /// Every key starts with `PREFIX:`, so several pools can share one Redis.
    pub prefix: String,
    /// How long a daemon's refresh lease lasts; longer than `oauth.refresh_timeout`, so a
    /// refresh in flight never outlives its lease while its daemon runs.
    pub lease: Span,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: None,
            prefix: "ccs".to_string(),
            lease: Span(Duration::from_secs(180)),
        }
    }
}

impl Store {
    /// What is wrong with this section, given the OAuth refresh timeout.
    pub fn problem(&self, refresh_timeout: Duration) -> Option<String> {
        if self.backend != Backend::Redis {
            return None;
        }
        let r = &self.redis;
        let Some(url) = r.url.as_deref() else {
            return Some(
                "store.backend is redis but store.redis.url is not set: give it, e.g. \
                 redis://127.0.0.1:6379/0"
                    .into(),
            );
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Some(format!(
                "store.redis.url must start with redis:// or rediss:// (TLS); it is {:?}",
                redact_url(url)
            ));
        }
        if r.prefix.is_empty() || r.prefix.contains(char::is_whitespace) || r.prefix.contains(':') {
            return Some(format!(
                "store.redis.prefix {:?} must be a non-empty word without spaces or ':'",
                r.prefix
            ));
        }
        if r.lease.0 <= refresh_timeout {
            return Some(format!(
                "store.redis.lease ({:?}) must be longer than oauth.refresh_timeout ({:?}): a \
                 refresh in flight must never outlive its lease",
                r.lease.0, refresh_timeout
            ));
        }
        None
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`: a URL fit for a log or an error.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".to_string(),
    }
}
