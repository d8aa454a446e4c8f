//! `GET /metrics`: the Prometheus text (`telemetry/metrics.rs`), for the management secret or
//! the metrics key (`cliproxy.auth.metrics_key`) only, with the same throttle on failures as
//! the management API.

use actix_web::{HttpRequest, HttpResponse};

use super::{err, internal, Data};
use crate::keys::constant_time_eq;
use crate::proxy::guard::ClientKey;
use crate::proxy::presented_secret;

pub(super) async fn metrics(ctx: Data, req: HttpRequest) -> HttpResponse {
    let given = presented_secret(req.headers(), "x-management-key").unwrap_or("");
    let key_ok = ctx
        .config
        .cliproxy
        .auth
        .metrics_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .is_some_and(|k| constant_time_eq(given.as_bytes(), k.as_bytes()));
    if !(key_ok | ctx.management_ok(req.headers())) {
        let client = ClientKey::of(req.peer_addr().map(|a| a.ip()));
        if ctx.access.throttle.punish(client).await {
            return err(
                429,
                format!("too many failed attempts from {client}: slow down"),
            );
        }
        return err(
            401,
            "/metrics needs the management secret or cliproxy.auth.metrics_key, as \
             Authorization: Bearer",
        );
    }
    match ctx.sup.view().await {
        Ok(view) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(
                ctx.telemetry
                    .scrape(&view, &crate::proxy::runway::of_pools(&ctx, &view)),
            ),
        Err(e) => internal(e),
    }
}
