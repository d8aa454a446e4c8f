//! The daemon's HTTP face on actix-web: the Anthropic-compatible endpoint Claude Code talks to
//! (`forward.rs`) and the management API the CLI uses (`manage.rs`), on one port.
//!
//! Owns the shared request context, client-key and management-secret checks (constant time),
//! and Anthropic-shaped errors. Must not: forward the client's own credential, rewrite a body,
//! or open the store anywhere but through `Ctx`.

// Handlers here return `Result<_, HttpResponse>`: the refusal *is* the response, built once
// at the point that knows why, and these are not hot paths where its size matters.
#![allow(clippy::result_large_err)]

pub mod drive;
pub mod forward;
pub mod manage;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpResponse};
use ccs_actors::routing::AccountId;
use ccs_actors::supervisor::SupervisorHandle;
use ccs_actors::{SharedClock, Timestamp};
use serde_json::json;

use crate::config::{Config, Paths};
use crate::store::SledStore;

/// The beta flag OAuth tokens need on the Messages API.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";
/// Failures from one address before it is locked out of the management API.
pub const LOCKOUT_FAILURES: u32 = 5;
pub const LOCKOUT_FOR: Duration = Duration::from_secs(30 * 60);
/// The usage endpoint is itself rate-limited: ask it at most this often per account.
pub const USAGE_CACHE: Duration = Duration::from_secs(30);

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Authorization: Bearer X` or the given fallback header.
pub fn presented_secret<'a>(h: &'a HeaderMap, fallback: &str) -> Option<&'a str> {
    let bearer = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    bearer.or_else(|| h.get(fallback).and_then(|v| v.to_str().ok()).map(str::trim))
}

/// Anthropic's error shape.
pub fn anthropic_error(status: u16, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(json!({"type": "error", "error": {"type": kind, "message": message}}))
}

#[derive(Default)]
struct Lockout {
    failures: u32,
    locked_until: Option<Instant>,
}

/// Everything a request handler needs, shared by all workers.
pub struct Ctx {
    pub config: Config,
    pub paths: Paths,
    pub store: Arc<SledStore>,
    pub sup: SupervisorHandle,
    pub client: reqwest::Client,
    pub clock: SharedClock,
    pub started: Instant,
    pub url: String,
    lockouts: Mutex<HashMap<IpAddr, Lockout>>,
    /// When each account's usage was last fetched.
    usage_fetched: Mutex<HashMap<AccountId, Instant>>,
    /// Served requests in the last hour (time, account), for status.
    recent: Mutex<VecDeque<(Timestamp, AccountId)>>,
    /// Asked to stop (management API); the daemon's run loop watches it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Ctx {
    pub fn new(
        config: Config,
        paths: Paths,
        store: Arc<SledStore>,
        sup: SupervisorHandle,
        clock: SharedClock,
        url: String,
    ) -> Self {
        Ctx {
            config,
            paths,
            store,
            sup,
            client: crate::oauth::http_client(),
            clock,
            started: Instant::now(),
            url,
            lockouts: Mutex::default(),
            usage_fetched: Mutex::default(),
            recent: Mutex::default(),
            shutdown: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn client_key_ok(&self, h: &HeaderMap) -> bool {
        let Some(given) = presented_secret(h, "x-api-key") else {
            return false;
        };
        // Compare against every key, always, so the time does not tell which one matched.
        self.config.client_keys().fold(false, |ok, k| {
            constant_time_eq(given.as_bytes(), k.as_bytes()) | ok
        })
    }

    /// Checks the management secret; `Err` carries the response for a refusal.
    pub fn management_ok(&self, h: &HeaderMap, peer: Option<IpAddr>) -> Result<(), HttpResponse> {
        let peer = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut locks = self.lockouts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = locks.entry(peer).or_default();
        if let Some(until) = entry.locked_until {
            if Instant::now() < until {
                let left = until.saturating_duration_since(Instant::now()).as_secs() / 60 + 1;
                return Err(HttpResponse::TooManyRequests().json(json!({
                    "error": format!("too many failed attempts from {peer}: locked out for {left} more minutes")
                })));
            }
            *entry = Lockout::default();
        }
        let given = presented_secret(h, "x-management-key").unwrap_or("");
        let secret = &self.config.cliproxy.auth.management_secret;
        if constant_time_eq(given.as_bytes(), secret.as_bytes()) {
            entry.failures = 0;
            return Ok(());
        }
        entry.failures += 1;
        if entry.failures >= LOCKOUT_FAILURES {
            entry.locked_until = Some(Instant::now() + LOCKOUT_FOR);
            tracing::warn!(%peer, "management API: five failed attempts, locked out for 30 minutes");
        }
        Err(HttpResponse::Unauthorized().json(json!({
            "error": "management secret required (Authorization: Bearer or X-Management-Key; cliproxy.auth.management_secret in config.yaml)"
        })))
    }

    pub fn record_request(&self, account: &AccountId) {
        let now = ccs_actors::Clock::now(&*self.clock);
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.push_back((now, account.clone()));
        let hour_ago = now.minus(Duration::from_secs(3600));
        while r.front().is_some_and(|(t, _)| *t < hour_ago) {
            r.pop_front();
        }
    }

    pub fn requests_last_hour(&self) -> usize {
        let now = ccs_actors::Clock::now(&*self.clock);
        let hour_ago = now.minus(Duration::from_secs(3600));
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().filter(|(t, _)| *t >= hour_ago).count()
    }

    /// Whether the usage of `account` may be fetched now (at most every 30 s); marks it.
    pub fn usage_due(&self, account: &AccountId, max_age: Duration) -> bool {
        let mut m = self.usage_fetched.lock().unwrap_or_else(|p| p.into_inner());
        let due = m
            .get(account)
            .is_none_or(|t| t.elapsed() >= max_age.max(USAGE_CACHE));
        if due {
            m.insert(account.clone(), Instant::now());
        }
        due
    }
}

/// The routes of the daemon.
pub fn routes(cfg: &mut web::ServiceConfig) {
    manage::routes(cfg);
    forward::routes(cfg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
