//! The management API (`/v0/management/*`): everything the CLI reads or changes goes through
//! here, because the daemon is the only process that opens the store. One file per resource:
//! `accounts.rs`, `pools.rs`, `status.rs` (the daemon as a whole).
//!
//! Every route sits behind `check`, which runs before any body is read: a foreign `Origin` is
//! refused, and a request without the secret is refused (its failures slowed by the throttle)
//! without the daemon reading a byte of its body. Bodies are small JSON (at most `BODY_LIMIT`).
//!
//! Must not: return a token, or change the store without telling the supervisor (and the other
//! way round).

mod accounts;
mod clients;
mod live;
mod metrics;
mod pools;
mod status;
mod usage;

pub(crate) use accounts::add as add_account;
pub(crate) use live::complete_login;

use std::collections::BTreeMap;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse};
use ccs_actors::routing::AccountId;

use super::guard::{origin_allowed, ClientKey};
use super::sessions;
use super::Ctx;
use crate::api;
use crate::store::{account_key, Account, SledStore};
use actix_web::http::Method;
use ccs_actors::ports::StoreError;

/// The largest management request body (a login's token response is a few KiB).
pub const BODY_LIMIT: usize = 64 << 10;

type Data = web::Data<Ctx>;

fn err(status: u16, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(api::ApiError {
        error: message.into(),
    })
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    err(500, e.to_string())
}

/// Runs a store write on the blocking pool: a sled flush or a mirror fsync never holds one
/// of the proxy's HTTP workers (two serve every request of the daemon).
async fn write<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&SledStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpResponse> {
    let store = ctx.store.clone();
    web::block(move || f(&store))
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// Finds an account by e-mail or nickname; the error lists the known ones.
fn resolve(ctx: &Ctx, who: &str) -> Result<Account, HttpResponse> {
    let accounts = ctx.store.accounts().map_err(internal)?;
    let key = account_key(who);
    if let Some(a) = accounts
        .iter()
        .find(|a| account_key(&a.email) == key || a.nickname.eq_ignore_ascii_case(who))
    {
        return Ok(a.clone());
    }
    let known: Vec<String> = accounts
        .iter()
        .map(|a| format!("{} ({})", a.nickname, a.email))
        .collect();
    Err(err(
        404,
        if known.is_empty() {
            format!("no account {who:?}: none is logged in yet (run `ccs claude --auth`)")
        } else {
            format!("no account {who:?}; known accounts: {}", known.join(", "))
        },
    ))
}

/// Writes the supervisor's pools to the store (off the workers).
async fn save_pools(ctx: &Ctx) -> Result<(), HttpResponse> {
    let pools: BTreeMap<String, Vec<AccountId>> =
        ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    if let Some(shared) = &ctx.shared {
        let named = pools
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|a| a.to_string()).collect()))
            .collect();
        shared.share_pools(named).await;
    }
    write(ctx, move |s| s.set_pools(&pools)).await
}

/// Middleware of the whole scope, before any extractor reads a body: same origin, then the
/// secret.
async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(ctx) = req.app_data::<Data>().cloned() else {
        return Ok(req
            .into_response(internal("the daemon has no context"))
            .map_into_right_body());
    };
    let h = req.headers();
    let host = crate::proxy::guard::request_host(h, req.uri());
    let origin = h.get("origin").map(|v| v.to_str().unwrap_or("null"));
    if !origin_allowed(origin, host) {
        let resp = err(
            403,
            format!(
                "the management API answers the ccs CLI and the daemon's own pages only; a \
                 request from the web page {:?} is refused",
                origin.unwrap_or("").chars().take(80).collect::<String>()
            ),
        );
        return Ok(req.into_response(resp).map_into_right_body());
    }
    if ctx.management_ok(h) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    // The dashboard: its session cookie, and on every write the session's CSRF token.
    if let Some(id) = sessions::cookie_of(h, ctx.tls()) {
        if ctx.access.sessions.csrf(id).is_some() {
            let safe = matches!(*req.method(), Method::GET | Method::HEAD);
            let token = h
                .get(sessions::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if safe || ctx.access.sessions.csrf_ok(id, token) {
                return next
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body);
            }
            let resp = err(
                403,
                "this change needs the dashboard's CSRF token (X-CSRF-Token): reload the page",
            );
            return Ok(req.into_response(resp).map_into_right_body());
        }
    }
    let client = ClientKey::of(req.peer_addr().map(|a| a.ip()));
    let resp = if ctx.access.throttle.punish(client).await {
        let mut r = err(
            429,
            format!(
                "too many failed attempts from {client}: slow down (the right secret is always \
                 let in)"
            ),
        );
        r.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from_static("60"),
        );
        r
    } else {
        err(
            401,
            "management secret required (Authorization: Bearer or X-Management-Key): on the \
             daemon's machine the CLI reads it itself (cliproxy.auth.management_secret in \
             config.yaml, else the secret ccs made); elsewhere pass --proxy-management-key"
                .to_string(),
        )
    };
    Ok(req.into_response(resp).map_into_right_body())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v0/management")
            .wrap(from_fn(check))
            .app_data(web::JsonConfig::default().limit(BODY_LIMIT))
            .route("/status", web::get().to(status::status))
            .route("/accounts", web::get().to(accounts::list_accounts))
            .route("/accounts", web::post().to(accounts::add_account))
            .route(
                "/accounts/{who}",
                web::delete().to(accounts::remove_account),
            )
            .route("/accounts/{who}/pause", web::post().to(accounts::pause))
            .route("/accounts/{who}/resume", web::post().to(accounts::resume))
            .route("/accounts/{who}/rename", web::post().to(accounts::rename))
            .route(
                "/accounts/{who}/default",
                web::post().to(accounts::set_default),
            )
            .route(
                "/accounts/{who}/refresh",
                web::post().to(accounts::force_refresh),
            )
            .route("/pools", web::get().to(pools::pools))
            .route("/pools/{name}", web::put().to(pools::set_pool))
            .route("/pools/{name}", web::delete().to(pools::delete_pool))
            .route("/events", web::get().to(status::events))
            .route("/quota", web::get().to(status::quota))
            .route("/usage", web::get().to(usage::usage))
            .route("/session", web::get().to(usage::session))
            .route("/alerts", web::get().to(status::alerts))
            .route("/alerts/test", web::post().to(status::test_alerts))
            .route("/clients", web::get().to(clients::list))
            .route("/clients", web::post().to(clients::add))
            .route("/clients/{name}", web::delete().to(clients::revoke))
            .route("/live", web::get().to(live::live))
            .route("/login-link", web::post().to(live::login_link))
            .route("/login/start", web::post().to(live::start_login))
            .route("/login/finish", web::post().to(live::finish_login))
            .route("/shutdown", web::post().to(status::shutdown)),
    );
    cfg.route("/metrics", web::get().to(metrics::metrics));
}
