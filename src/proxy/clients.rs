//! Named client keys: who is calling. Every accepted key has a name (the generated key is
//! `default`, further `api_keys` are `key-1`, `key-2`…, config.yaml's `cliproxy.auth.clients`
//! and keys made with `ccs cliproxy key add` carry their own), and every request is attributed
//! to it in the live feed, usage and metrics. Only SHA-256 digests are kept; a key made here is
//! shown once, to its maker. Revoking one takes effect on the next request.
//!
//! Must not: keep or log a key, or tell by its timing which key matched.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api;
use crate::config::{valid_client_name, Config};
use crate::keys::constant_time_eq;
use crate::store::mirror::rfc3339;

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Where a key comes from: config.yaml (changed only there) or the daemon's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Config,
    Made,
}

/// A key's own limits, set by whoever runs the daemon (not Anthropic's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The pools it may draw from (none named: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// Requests started per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at once (a stream counts until its last event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
}

/// One key's name, limits and what it is using now.
#[derive(Debug)]
pub struct Caller {
    pub name: String,
    pub limits: Limits,
    /// (minute the count is for, requests started in it).
    minute: Mutex<(u64, u32)>,
    in_flight: AtomicU32,
    /// Turns true when the key is revoked: its streams in flight end at their next chunk.
    revoked: tokio::sync::watch::Sender<bool>,
}

/// Why a key's own limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// Too many this minute; the next minute starts in this many seconds.
    Rate {
        per_minute: u32,
        retry_after: u64,
    },
    Concurrent {
        at_once: u32,
    },
}

/// A request admitted under its key's limits; dropping it ends the request's share.
#[derive(Debug)]
pub struct Permit(Arc<Caller>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Permit {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Turns true when the key this request came with is revoked.
    pub fn revoked(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.revoked.subscribe()
    }
}

impl Caller {
    /// Whether this key may draw from `pool`.
    pub fn may_use(&self, pool: &str) -> bool {
        self.limits.pools.is_empty() || self.limits.pools.iter().any(|p| p == pool)
    }

    fn new(name: String, limits: Limits) -> Arc<Caller> {
        Arc::new(Caller {
            name,
            limits,
            minute: Mutex::new((0, 0)),
            in_flight: AtomicU32::new(0),
            revoked: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Admits one request at `now_ms`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, now_ms: u64) -> Result<Permit, OverLimit> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let permit = Permit(self.clone());
        if let Some(at_once) = self.limits.concurrent {
            if in_flight > at_once {
                return Err(OverLimit::Concurrent { at_once });
            }
        }
        if let Some(per_minute) = self.limits.requests_per_minute {
            let minute = now_ms / 60_000;
            let mut m = self.minute.lock().unwrap_or_else(|p| p.into_inner());
            if m.0 != minute {
                *m = (minute, 0);
            }
            if m.1 >= per_minute {
                let retry_after = ((minute + 1) * 60_000 - now_ms).div_ceil(1000);
                return Err(OverLimit::Rate {
                    per_minute,
                    retry_after,
                });
            }
            m.1 += 1;
        }
        Ok(permit)
    }
}

#[derive(Clone, Debug)]
struct Named {
    caller: Arc<Caller>,
    digest: [u8; 32],
    origin: Origin,
    created_at_ms: Option<u64>,
}

/// A key made by the daemon, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    pub name: String,
    pub key_sha256: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub limits: Limits,
}

/// Why a client key could not be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key name {0:?}: use 1–40 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("a key named {0:?} exists already: revoke it first (`ccs cliproxy key revoke {0}`) or pick another name")]
    Exists(String),
    #[error("no key named {name:?}; keys: {known}")]
    NotFound { name: String, known: String },
    #[error("the key {0:?} is set in config.yaml (cliproxy.auth): remove it there and restart the daemon")]
    FromConfig(String),
}

impl KeyError {
    /// The management API's status for it.
    pub fn status(&self) -> u16 {
        match self {
            KeyError::BadName(_) => 400,
            KeyError::NotFound { .. } => 404,
            KeyError::Exists(_) | KeyError::FromConfig(_) => 409,
        }
    }
}

#[derive(Default)]
pub struct Clients {
    keys: RwLock<Vec<Named>>,
}

impl Clients {
    /// The keys of `config` (resolved: the generated key is in it) and those made before.
    pub fn new(config: &Config, made: Vec<StoredKey>) -> Clients {
        let auth = &config.cliproxy.auth;
        let mut keys: Vec<Named> = Vec::new();
        let mut push = |name: String, limits, digest: [u8; 32], origin, created_at_ms| {
            keys.push(Named {
                caller: Caller::new(name, limits),
                digest,
                origin,
                created_at_ms,
            })
        };
        if let Some(k) = auth.api_key.as_deref().filter(|k| !k.is_empty()) {
            push(
                api::DEFAULT_CLIENT.into(),
                Limits::default(),
                digest(k),
                Origin::Config,
                None,
            );
        }
        for (i, k) in auth.api_keys.iter().filter(|k| !k.is_empty()).enumerate() {
            push(
                format!("key-{}", i + 1),
                Limits::default(),
                digest(k),
                Origin::Config,
                None,
            );
        }
        for c in &auth.clients {
            let d = match (&c.key, &c.key_sha256) {
                (Some(k), _) => Some(digest(k)),
                (None, Some(h)) => unhex(h),
                _ => None,
            };
            let limits = Limits {
                pools: c.pools.clone(),
                requests_per_minute: c.requests_per_minute,
                concurrent: c.concurrent,
            };
            if let Some(d) = d {
                push(c.name.clone(), limits, d, Origin::Config, None);
            }
        }
        for m in made {
            match unhex(&m.key_sha256) {
                Some(d) => push(m.name, m.limits, d, Origin::Made, Some(m.created_at_ms)),
                None => {
                    tracing::warn!(name = %m.name, "a stored client key is unreadable; passed over")
                }
            }
        }
        Clients {
            keys: RwLock::new(keys),
        }
    }

    /// The key presented, if it is one. Every key is compared, always, so the time does not
    /// tell which one matched.
    pub fn identify(&self, presented: &str) -> Option<Arc<Caller>> {
        if presented.is_empty() {
            return None;
        }
        let d = digest(presented);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for k in keys.iter() {
            if constant_time_eq(&d, &k.digest) && found.is_none() {
                found = Some(k.caller.clone());
            }
        }
        found
    }

    /// Makes a key named `name` with `limits`; returns it (the only time it is seen).
    pub fn add(&self, name: &str, limits: Limits, now_ms: u64) -> Result<String, KeyError> {
        if !valid_client_name(name) {
            return Err(KeyError::BadName(name.to_string()));
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys
            .iter()
            .any(|k| k.caller.name.eq_ignore_ascii_case(name))
        {
            return Err(KeyError::Exists(name.to_string()));
        }
        let bytes: [u8; 32] = rand::random();
        let key = format!(
            "ccs-{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        keys.push(Named {
            caller: Caller::new(name.to_string(), limits),
            digest: digest(&key),
            origin: Origin::Made,
            created_at_ms: Some(now_ms),
        });
        Ok(key)
    }

    /// Revokes the key named `name` (only keys made here; config.yaml's are changed there).
    pub fn revoke(&self, name: &str) -> Result<(), KeyError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        match keys
            .iter()
            .position(|k| k.caller.name.eq_ignore_ascii_case(name))
        {
            None => Err(KeyError::NotFound {
                name: name.to_string(),
                known: keys
                    .iter()
                    .map(|k| k.caller.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            Some(i) if keys[i].origin == Origin::Config => {
                Err(KeyError::FromConfig(name.to_string()))
            }
            Some(i) => {
                let gone = keys.remove(i);
                gone.caller.revoked.send_replace(true);
                Ok(())
            }
        }
    }

    pub fn list(&self) -> Vec<api::ClientKeyInfo> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .map(|k| api::ClientKeyInfo {
                name: k.caller.name.clone(),
                from_config: k.origin == Origin::Config,
                created_at: k.created_at_ms.map(rfc3339),
                key_sha256_prefix: hex(&k.digest[..4]),
                pools: k.caller.limits.pools.clone(),
                requests_per_minute: k.caller.limits.requests_per_minute,
                concurrent: k.caller.limits.concurrent,
                in_flight: k.caller.in_flight.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// The keys made here, for the store.
    pub fn made(&self) -> Vec<StoredKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter(|k| k.origin == Origin::Made)
            .map(|k| StoredKey {
                name: k.caller.name.clone(),
                key_sha256: hex(&k.digest),
                created_at_ms: k.created_at_ms.unwrap_or(0),
                limits: k.caller.limits.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::default();
        c.cliproxy.auth.api_key = Some("main-key".into());
        c.cliproxy.auth.api_keys = vec!["second".into()];
        c.cliproxy.auth.clients = vec![
            crate::config::ClientEntry {
                name: "ci".into(),
                key: Some("ci-key".into()),
                ..Default::default()
            },
            crate::config::ClientEntry {
                name: "ann".into(),
                key_sha256: Some(hex(&digest("ann-key"))),
                ..Default::default()
            },
        ];
        c
    }

    #[test]
    fn every_key_is_known_by_its_name() {
        let c = Clients::new(&config(), vec![]);
        let name = |k: &str| c.identify(k).map(|c| c.name.clone());
        assert_eq!(name("main-key").as_deref(), Some("default"));
        assert_eq!(name("second").as_deref(), Some("key-1"));
        assert_eq!(name("ci-key").as_deref(), Some("ci"));
        assert_eq!(name("ann-key").as_deref(), Some("ann"), "by digest");
        assert_eq!(name("nope"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn a_made_key_works_until_revoked_and_survives_as_a_digest() {
        let c = Clients::new(&config(), vec![]);
        let open = Limits::default;
        let key = c.add("bob", open(), 1).unwrap();
        let name = |c: &Clients, k: &str| c.identify(k).map(|c| c.name.clone());
        assert_eq!(name(&c, &key).as_deref(), Some("bob"));
        assert!(c.add("BOB", open(), 2).is_err(), "names are unique");
        assert!(c.add("no spaces", open(), 2).is_err());
        let made = c.made();
        assert_eq!(made.len(), 1);
        assert!(
            !format!("{made:?}").contains(&key),
            "only the digest is kept"
        );
        let again = Clients::new(&config(), made);
        assert_eq!(
            name(&again, &key).as_deref(),
            Some("bob"),
            "after a restart"
        );
        assert!(
            again.revoke("ci").is_err(),
            "config.yaml's keys are changed there"
        );
        again.revoke("bob").unwrap();
        assert!(again.identify(&key).is_none(), "refused at once");
        assert!(again.revoke("bob").is_err());
    }

    #[test]
    fn a_keys_own_limits_count_per_minute_and_at_once() {
        let c = Caller::new(
            "ci".into(),
            Limits {
                requests_per_minute: Some(2),
                concurrent: Some(2),
                ..Limits::default()
            },
        );
        let t0: u64 = 1_800_000_000_000; // a whole minute
        let a = c.admit(t0).unwrap();
        let b = c.admit(t0 + 1).unwrap();
        assert_eq!(
            c.admit(t0 + 2).unwrap_err(),
            OverLimit::Concurrent { at_once: 2 },
            "two at once"
        );
        drop(a);
        assert_eq!(
            c.admit(t0 + 10_000).unwrap_err(),
            OverLimit::Rate {
                per_minute: 2,
                retry_after: 50
            },
            "a refusal takes no share"
        );
        drop(b);
        assert_eq!(c.in_flight.load(Ordering::SeqCst), 0);
        let next = c.admit(t0 + 60_000).unwrap();
        assert_eq!(next.name(), "ci", "a new minute");
    }
}
