//! The dashboard's own routes in the management API: `/live` (requests and hops as they
//! happen, as server-sent events), `/login-link` (a one-time address that opens the dashboard
//! logged in) and `/login/start` (a browser login of a new account, coming back to the
//! daemon's `/callback`).

use std::time::Duration;

use actix_web::HttpResponse;
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;

use super::{internal, Data};
use crate::api;
use crate::oauth::login::Attempt;

/// A comment line this often keeps idle connections (and proxies between) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn live(ctx: Data) -> HttpResponse {
    let rx = ctx.telemetry.subscribe();
    let draining = ctx.draining.subscribe();
    let state = (rx, draining, true);
    let stream = futures_util::stream::unfold(state, |(mut rx, mut draining, first)| async move {
        if first {
            // Sent at once, so the browser knows the feed is open before anything happens.
            let hello = Bytes::from_static(b": connected\n\n");
            return Some((Ok::<_, std::io::Error>(hello), (rx, draining, false)));
        }
        if draining.borrow().is_some() {
            return None;
        }
        let out = tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => {
                    let json = serde_json::to_string(&ev).unwrap_or_default();
                    Bytes::from(format!("data: {json}\n\n"))
                }
                Err(RecvError::Lagged(n)) => Bytes::from(format!(": {n} events skipped\n\n")),
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            // The daemon is stopping: the feed ends, so the stop does not wait for it.
            _ = draining.changed() => return None,
        };
        Some((Ok(out), (rx, draining, false)))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(stream)
}

pub(super) async fn login_link(ctx: Data) -> HttpResponse {
    let token = ctx.sessions.link();
    HttpResponse::Ok().json(api::LoginLink {
        url: format!("{}/dashboard#link={token}", ctx.url),
    })
}

pub(super) async fn start_login(ctx: Data) -> HttpResponse {
    let port = ctx
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(ctx.config.cliproxy.port);
    // `localhost`, as the authority expects of a native app's redirect.
    let redirect = format!("http://localhost:{port}/callback");
    match Attempt::with_redirect(&ctx.config, redirect) {
        Ok(attempt) => {
            let url = attempt.url.clone();
            ctx.sessions.start_login(attempt);
            HttpResponse::Ok().json(api::LoginStart { url })
        }
        Err(e) => internal(e),
    }
}
