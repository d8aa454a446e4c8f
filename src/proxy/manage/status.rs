//! The daemon as a whole: `/status`, `/events` (hops between accounts), `/quota` (with an
//! on-demand usage fetch) and `/shutdown`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use ccs_actors::account::{GetLease, ObserveUsage};
use ccs_actors::lifecycle::Phase;
use ccs_actors::supervisor::DEFAULT_POOL;
use serde::Deserialize;

use super::accounts::account_views;
use super::{internal, Data};
use crate::api;

pub(super) async fn events(ctx: Data) -> HttpResponse {
    match ctx.sup.view().await {
        Ok(v) => HttpResponse::Ok().json(api::Events {
            events: v.events.iter().map(api::Hop::from).collect(),
        }),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(super) struct QuotaQuery {
    /// Fetch the usage endpoint for accounts whose data is older than this many seconds.
    max_age: Option<u64>,
    /// The pool whose next account to report (default `claude`).
    pool: Option<String>,
}

pub(super) async fn quota(ctx: Data, q: web::Query<QuotaQuery>) -> HttpResponse {
    if let Some(max_age) = q.max_age {
        let view = match ctx.sup.view().await {
            Ok(v) => v,
            Err(e) => return internal(e),
        };
        for m in view
            .accounts
            .iter()
            .filter(|m| m.health.phase != Phase::Dead)
        {
            if !ctx.figures.usage_due(&m.id, Duration::from_secs(max_age)) {
                continue;
            }
            let Some(addr) = ctx.sup.account(&m.id).await else {
                continue;
            };
            let Ok(Ok(lease)) = addr.send(GetLease).await else {
                continue;
            };
            match crate::oauth::fetch_usage(&ctx.client, &ctx.config.oauth.usage_url, &lease.access)
                .await
            {
                Ok(body) => {
                    let _ = addr.send(ObserveUsage(body)).await;
                }
                Err(e) => tracing::warn!(account = %m.id, error = %e, "usage fetch failed"),
            }
        }
        // Let the published health reach the supervisor before reading it back.
        tokio::task::yield_now().await;
    }
    let pool = q.pool.clone().unwrap_or_else(|| DEFAULT_POOL.to_string());
    let next = ctx
        .sup
        .addr()
        .send(ccs_actors::supervisor::Peek {
            pool: pool.clone(),
            family: None,
        })
        .await
        .ok()
        .flatten()
        .map(|a| a.to_string());
    let runway = match ctx.sup.view().await {
        Ok(view) => crate::proxy::runway::of_pool(&ctx, &view, &pool),
        Err(e) => return internal(e),
    };
    match account_views(&ctx, &pool).await {
        Ok(accounts) => HttpResponse::Ok().json(api::Quota {
            runway: Some(runway),
            accounts: accounts
                .into_iter()
                .filter(|a| a.position.is_some())
                .collect(),
            pool,
            next_for_new_sessions: next,
        }),
        Err(r) => r,
    }
}

pub(super) async fn status(ctx: Data) -> HttpResponse {
    let view = match ctx.sup.view().await {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let now = ctx.clock.now();
    let hour_ago = now.minus(Duration::from_secs(3600));
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for m in &view.accounts {
        *by_state
            .entry(m.health.phase.as_str().to_string())
            .or_default() += 1;
    }
    let paused = view.accounts.iter().filter(|m| m.paused).count();
    let store = match &ctx.shared {
        Some(shared) => shared.status().await,
        None => api::StoreStatus {
            backend: "sled".into(),
            ..Default::default()
        },
    };
    HttpResponse::Ok().json(api::Status {
        state: "running".into(),
        url: ctx.url.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_secs: ctx.started.elapsed().as_secs(),
        accounts: view.accounts.len(),
        by_state,
        paused,
        requests_last_hour: ctx.figures.requests_last_hour(),
        hops_last_hour: view.events.iter().filter(|e| e.at >= hour_ago).count(),
        sessions: view.bindings.len(),
        store_notes: ctx.store.notes(),
        certificate_expires: ctx.config.cliproxy.tls.as_ref().and_then(|t| {
            let certs = crate::tls::read_certs(&ctx.paths.home.join(&t.cert)).ok()?;
            let ends = crate::tls::not_after(certs.first()?)?;
            Some(crate::store::mirror::rfc3339(
                u64::try_from(ends).ok()? * 1000,
            ))
        }),
        store_bytes: ctx.store.size_on_disk(),
        refreshes: ctx.telemetry.refreshes(),
        errors: ctx.telemetry.errors(),
        store,
        runway: crate::proxy::runway::of_pools(&ctx, &view),
        alerts: ctx.alerts.active(now),
        continuity: api::ContinuityStatus {
            fit: ctx.config.continuity.fit.0,
            learned_reject: ctx.continuity.knowledge.learned_models(),
            fitted: ctx.telemetry.metrics.fits.get(),
            fitted_after_400: ctx.telemetry.metrics.fits_after_400.get(),
        },
    })
}

/// `GET /alerts`: what holds now (the banner) and the latest told.
pub(super) async fn alerts(ctx: Data) -> HttpResponse {
    let now = ctx.clock.now();
    HttpResponse::Ok().json(api::Alerts {
        active: ctx.alerts.active(now),
        recent: ctx.alerts.recent(),
    })
}

/// `POST /alerts/test`: one alert of each kind to every channel (`ccs alerts test`).
pub(super) async fn test_alerts(ctx: Data) -> HttpResponse {
    let (sent, channels) = ctx.alerts.test(ctx.clock.now()).await;
    HttpResponse::Ok().json(api::AlertsTest { sent, channels })
}

pub(super) async fn shutdown(ctx: Data) -> HttpResponse {
    let _ = ctx.stopping.shutdown.send(true);
    HttpResponse::Ok().json(api::Stopping { stopping: true })
}
