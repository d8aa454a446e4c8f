//! `/v0/management/clients…`: the named client keys (`proxy/clients.rs`): list (never a key),
//! make one (its key is in this one answer only), revoke one (refused from the next request).
//! Made keys are written to the store as digests, flushed before the answer.

use actix_web::{web, HttpResponse};

use super::{err, write, Ctx, Data};
use crate::api;

/// Writes the made keys to the store.
async fn save(ctx: &Ctx) -> Result<(), HttpResponse> {
    let made = ctx.access.clients.made();
    let bytes = serde_json::to_vec(&made).map_err(super::internal)?;
    write(ctx, move |s| s.set_client_keys(&bytes)).await
}

pub(super) async fn list(ctx: Data) -> HttpResponse {
    HttpResponse::Ok().json(api::ClientKeys {
        clients: ctx.access.clients.list(),
    })
}

pub(super) async fn add(ctx: Data, body: web::Json<api::AddClientKey>) -> HttpResponse {
    let b = body.into_inner();
    let name = b.name;
    let limits = crate::proxy::clients::Limits {
        pools: b.pools,
        requests_per_minute: b.requests_per_minute,
        concurrent: b.concurrent,
    };
    if limits.requests_per_minute == Some(0) || limits.concurrent == Some(0) {
        return err(
            400,
            "a limit of 0 would refuse every request: leave it out instead",
        );
    }
    let key = match ctx
        .access
        .clients
        .add(&name, limits, ctx.clock.now().as_millis())
    {
        Ok(k) => k,
        Err(e) => return err(e.status(), e.to_string()),
    };
    if let Err(r) = save(&ctx).await {
        let _ = ctx.access.clients.revoke(&name);
        return r;
    }
    tracing::info!(client = %name, "client key made");
    HttpResponse::Ok().json(api::NewClientKey { name, key })
}

pub(super) async fn revoke(ctx: Data, name: web::Path<String>) -> HttpResponse {
    let name = name.into_inner();
    if let Err(e) = ctx.access.clients.revoke(&name) {
        return err(e.status(), e.to_string());
    }
    if let Err(r) = save(&ctx).await {
        return r;
    }
    tracing::info!(client = %name, "client key revoked");
    HttpResponse::Ok().json(api::ClientRevoked { revoked: name })
}
