//! The daemon's HTTP face on actix-web: the Anthropic-compatible endpoint Claude Code talks to
//! (`forward.rs`) and the management API the CLI uses (`manage/`), on one port, behind the
//! checks of `guard.rs` (Host, origin, throttled key failures).
//!
//! Owns the shared request context, client-key and management-secret checks (constant time),
//! and Anthropic-shaped errors. Must not: forward the client's own credential, rewrite a body,
//! or open the store anywhere but through `Ctx`.

// Handlers here return `Result<_, HttpResponse>`: the refusal *is* the response, built once
// at the point that knows why, and these are not hot paths where its size matters.
#![allow(clippy::result_large_err)]

pub mod body;
pub mod clients;
pub mod comeback;
pub mod continuity;
pub mod counter;
pub mod drive;
pub mod failover;
pub mod figures;
pub mod forward;
pub mod guard;
pub mod manage;
pub mod recent;
pub mod relay;
pub mod runway;
pub mod sessions;
pub mod upstream;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use ccs_actors::supervisor::SupervisorHandle;
use ccs_actors::SharedClock;
use serde_json::json;

use crate::config::{Config, Paths};
use crate::keys::constant_time_eq;
use crate::store::SledStore;

/// `Authorization: Bearer X` or the given fallback header.
pub fn presented_secret<'a>(h: &'a HeaderMap, fallback: &str) -> Option<&'a str> {
    // The scheme is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer` and `BEARER` alike.
    let bearer = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
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
    /// What the accounts served, as this daemon saw it (`figures.rs`).
    pub figures: Arc<figures::Figures>,
    /// Events worth a person's attention, and where they go (`src/alerts/`).
    pub alerts: Arc<crate::alerts::Alerts>,
    /// Bytes of request bodies held at once.
    pub bodies: body::Budget,
    /// The live feed, usage book and metrics.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Changes that go to both the store and the supervisor (a pause, a resume, a pool's
    /// members) are made one at a time, so the two never end up disagreeing.
    pub account_changes: tokio::sync::Mutex<()>,
    /// The shared store, when several daemons share the pool (`store.backend: redis`).
    pub shared: Option<Arc<crate::shared::Shared>>,
    /// Who may use the daemon, and how they prove it.
    pub access: Access,
    /// The daemon's stop, as the handlers see it.
    pub stopping: Stopping,
    /// What a moved conversation's history may keep.
    pub continuity: Continuity,
}

/// Who may use the daemon, and how they prove it: the client keys, the management secret's
/// hash, the dashboard's sessions, and the throttle on failed attempts.
pub struct Access {
    /// The client keys, by name.
    pub clients: clients::Clients,
    /// The management secret's argon2 hash, when config.yaml keeps it that way.
    hashed_secret: Option<crate::keys::HashedSecret>,
    /// Dashboard logins, one-time links and OAuth logins started from the dashboard.
    pub sessions: sessions::Sessions,
    /// Failed keys and secrets, per client.
    pub throttle: guard::Throttle,
}

/// The daemon's stop, as the handlers see it.
pub struct Stopping {
    /// Asked to stop (management API); the daemon's run loop watches it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The deadline answers still streaming must end by, once the daemon is stopping.
    pub draining: tokio::sync::watch::Sender<Option<Instant>>,
}

/// What a moved conversation's history may keep (`continuity.rs`).
pub struct Continuity {
    /// Which model refuses another account's thinking blocks.
    pub knowledge: continuity::Knowledge,
    /// Which account produced each thinking block of each conversation.
    pub provenance: Arc<continuity::Provenance>,
}

/// The client keys made with `ccs cliproxy key add`, from the store. A record that cannot be
/// read is said (the log, `ccs cliproxy status`), never silently forgotten: its keys are then
/// refused until made again, which is the safe way to lose them.
fn restore_client_keys(store: &SledStore) -> Vec<clients::StoredKey> {
    let damaged = |why: String| {
        store.note(format!(
            "the record of the client keys made with `ccs cliproxy key add` cannot be read \
             ({why}): those keys are refused until made again"
        ));
        Vec::new()
    };
    match store.client_keys() {
        Ok(None) => Vec::new(),
        Ok(Some(bytes)) => {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| damaged(e.to_string()))
        }
        Err(e) => damaged(e.to_string()),
    }
}

/// The conversations' thinking provenance from the store, those whose binding would have
/// expired left out (and removed), with every later change written back off the request's
/// thread.
fn restore_provenance(
    store: &Arc<SledStore>,
    config: &Config,
    now_ms: u64,
) -> continuity::Provenance {
    let ttl = config.cliproxy.affinity_ttl.0.as_millis() as u64;
    let mut kept = Vec::new();
    for (session, r) in store.thinking_records() {
        if r.touched_ms.saturating_add(ttl) < now_ms {
            let _ = store.remove_thinking(&session);
            continue;
        }
        let blocks = r
            .blocks
            .iter()
            .filter_map(|(id, a)| Some((continuity::id_from_hex(id)?, a.clone())))
            .collect();
        kept.push((session, r.touched_ms, blocks));
    }
    let store = store.clone();
    continuity::Provenance::with_sink(
        kept,
        Box::new(move |session, touched_ms, blocks| {
            let record = crate::store::records::ThinkingRecord {
                v: crate::store::records::V,
                touched_ms,
                blocks: blocks
                    .iter()
                    .map(|(id, a)| (continuity::id_hex(id), a.clone()))
                    .collect(),
            };
            let (store, session) = (store.clone(), session.to_string());
            let write = move || {
                if let Err(e) = store.set_thinking(&session, &record) {
                    tracing::warn!(error = %e, "could not keep a conversation's thinking provenance");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(write);
                }
                Err(_) => write(),
            }
        }),
    )
}

/// The store's `meta` key for the models learned to refuse another account's thinking blocks.
pub const LEARNED_MODELS: &str = "continuity_learned_models";

impl Ctx {
    pub fn new(
        config: Config,
        paths: Paths,
        store: Arc<SledStore>,
        sup: SupervisorHandle,
        clock: SharedClock,
        url: String,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Self {
        let made = restore_client_keys(&store);
        let clients = clients::Clients::new(&config, made);
        let hashed_secret = config
            .cliproxy
            .auth
            .management_secret_argon2
            .as_deref()
            .map(crate::keys::HashedSecret::new);
        let bodies = body::Budget::new(config.cliproxy.bodies_in_flight.0);
        let runway_span = config.cliproxy.runway_sample.0 * 5;
        let figures = Arc::new(figures::Figures::new(
            store.clone(),
            clock.clone(),
            runway_span,
        ));
        let client = crate::oauth::http_client();
        let alerts = Arc::new(crate::alerts::Alerts::new(&config, client.clone()));
        let learned: Vec<String> = store
            .meta_value(LEARNED_MODELS)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let provenance = restore_provenance(&store, &config, clock.now().as_millis());
        let config_models: Vec<(String, continuity::Binding)> = config
            .continuity
            .models
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        Ctx {
            config,
            paths,
            store,
            sup,
            client,
            clock,
            started: Instant::now(),
            url,
            figures,
            alerts,
            bodies,
            telemetry,
            account_changes: tokio::sync::Mutex::new(()),
            shared: None,
            access: Access {
                clients,
                hashed_secret,
                sessions: sessions::Sessions::default(),
                throttle: guard::Throttle::default(),
            },
            stopping: Stopping {
                shutdown: tokio::sync::watch::channel(false).0,
                draining: tokio::sync::watch::channel(None).0,
            },
            continuity: Continuity {
                knowledge: {
                    let k = continuity::Knowledge::new(config_models);
                    k.restore(learned);
                    k
                },
                provenance: Arc::new(provenance),
            },
        }
    }

    /// Keeps the models learned to refuse another account's thinking blocks, so a restart
    /// fits their moves up front too (a small record, written off the request's thread).
    pub fn store_learned(&self, models: &[String]) {
        let store = self.store.clone();
        let bytes = serde_json::to_vec(models).unwrap_or_default();
        std::thread::spawn(move || {
            if let Err(e) = store.set_meta(LEARNED_MODELS, &bytes) {
                tracing::warn!(error = %e, "could not keep the models learned to refuse foreign thinking blocks");
            }
        });
    }

    /// The same context in a shared pool.
    pub fn with_shared(self, shared: Option<Arc<crate::shared::Shared>>) -> Self {
        Ctx { shared, ..self }
    }

    /// The client key presented (`Authorization: Bearer` or `x-api-key`), when it is one of
    /// the daemon's (`clients.rs`).
    pub fn client_of(&self, h: &HeaderMap) -> Option<Arc<clients::Caller>> {
        self.access
            .clients
            .identify(presented_secret(h, "x-api-key")?)
    }

    /// Whether the management secret was presented (`Authorization: Bearer` or
    /// `X-Management-Key`).
    pub fn management_ok(&self, h: &HeaderMap) -> bool {
        self.secret_ok(presented_secret(h, "x-management-key").unwrap_or(""))
    }

    /// Whether `given` is the management secret (kept in config.yaml, keys.json, or as an
    /// argon2 hash).
    pub fn secret_ok(&self, given: &str) -> bool {
        if let Some(hashed) = &self.access.hashed_secret {
            return hashed.verify(given);
        }
        let secret = self.config.management_secret();
        !secret.is_empty() && constant_time_eq(given.as_bytes(), secret.as_bytes())
    }

    /// Whether this daemon serves TLS.
    pub fn tls(&self) -> bool {
        self.config.cliproxy.tls.is_some()
    }
}

/// The routes of the daemon.
pub fn routes(cfg: &mut web::ServiceConfig) {
    manage::routes(cfg);
    forward::routes(cfg);
}

/// Middleware for every route: the `Host` must name this daemon (`guard::host_allowed`), so a
/// page that rebinds its own name to 127.0.0.1 reaches nothing.
pub async fn check_host(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Judged on borrowed names: nothing is copied per request.
    let allowed = {
        let names = req
            .app_data::<web::Data<Ctx>>()
            .map(|ctx| ctx.config.cliproxy.allowed_hosts.as_slice())
            .unwrap_or_default();
        guard::host_allowed(guard::request_host(req.headers(), req.uri()), names)
    };
    if guard::authority_conflict(req.version(), req.headers(), req.uri()) {
        let resp = anthropic_error(
            400,
            "invalid_request_error",
            "the request's :authority and Host name different hosts (RFC 9113 §8.3.1): send one",
        );
        return Ok(req.into_response(resp).map_into_right_body());
    }
    if allowed {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let shown: String = guard::request_host(req.headers(), req.uri())
        .unwrap_or("")
        .chars()
        .take(80)
        .collect();
    let resp = anthropic_error(
        403,
        "permission_error",
        &format!(
            "this ccs daemon does not answer to the host name {shown:?}: use 127.0.0.1 or \
             localhost, or add the name to cliproxy.allowed_hosts in config.yaml"
        ),
    );
    Ok(req.into_response(resp).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_read_from_bearer_or_the_fallback_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_secret(&h, "x-api-key"), None);
        h.insert("x-api-key".parse().unwrap(), "k2".parse().unwrap());
        assert_eq!(presented_secret(&h, "x-api-key"), Some("k2"));
        h.insert(
            "authorization".parse().unwrap(),
            "Bearer k1".parse().unwrap(),
        );
        assert_eq!(presented_secret(&h, "x-api-key"), Some("k1"));
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            h.insert(
                "authorization".parse().unwrap(),
                format!("{scheme} k3").parse().unwrap(),
            );
            assert_eq!(presented_secret(&h, "x-api-key"), Some("k3"), "{scheme}");
        }
        // Another scheme is no bearer token: the fallback header counts.
        h.insert(
            "authorization".parse().unwrap(),
            "Basic k4".parse().unwrap(),
        );
        assert_eq!(presented_secret(&h, "x-api-key"), Some("k2"));
    }
}
