//! The dashboard's own routes in the management API: `/live` (requests and hops as they
//! happen, as server-sent events), `/login-link` (a one-time address that opens the dashboard
//! logged in) and `/login/start` (a browser login of a new account, coming back to the
//! daemon's `/callback`).

use std::time::Duration;

use actix_web::HttpResponse;
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;

use actix_web::web;

use super::{err, internal, Data};
use crate::api;
use crate::oauth::login::Attempt;
use crate::oauth::login::{self, Answer};
use crate::proxy::Ctx;

/// A comment line this often keeps idle connections (and proxies between) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn live(ctx: Data) -> HttpResponse {
    let rx = ctx.telemetry.subscribe();
    let draining = ctx.stopping.draining.subscribe();
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
    let token = ctx.access.sessions.link();
    HttpResponse::Ok().json(api::LoginLink {
        url: format!("{}/dashboard#link={token}", ctx.url),
    })
}

pub(super) async fn start_login(
    ctx: Data,
    body: Option<web::Json<api::StartLogin>>,
) -> HttpResponse {
    let asked = body.and_then(|b| b.into_inner().redirect_uri);
    let redirect = match asked {
        Some(uri) => match local_callback(&uri) {
            Some(uri) => uri,
            None => {
                return err(
                    400,
                    format!(
                    "redirect_uri {uri:?} is not a local callback (http://localhost:PORT/callback)"
                ),
                )
            }
        },
        None => {
            let port = ctx
                .url
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(ctx.config.cliproxy.port);
            // `localhost`, as the authority expects of a native app's redirect.
            format!("http://localhost:{port}/callback")
        }
    };
    match Attempt::with_redirect(&ctx.config, redirect) {
        Ok(attempt) => {
            let (url, state) = (attempt.url.clone(), attempt.state.clone());
            ctx.access.sessions.start_login(attempt);
            HttpResponse::Ok().json(api::LoginStart { url, state })
        }
        Err(e) => internal(e),
    }
}

/// `uri` when it is a callback on this machine of the person logging in: the only kind a CLI
/// may ask for (the authority sends the code there, to a listener the CLI runs).
fn local_callback(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    let local = matches!(u.host_str(), Some("localhost" | "127.0.0.1"));
    (u.scheme() == "http" && local && u.path() == "/callback" && u.query().is_none())
        .then(|| uri.to_string())
}

/// `POST /login/finish`: a CLI hands over the answer its browser (or paste) got; the daemon
/// exchanges the code and keeps the tokens.
pub(super) async fn finish_login(ctx: Data, body: web::Json<api::FinishLogin>) -> HttpResponse {
    let b = body.into_inner();
    let Some(attempt) = ctx.access.sessions.take_login(&b.state) else {
        return err(
            404,
            "this answer belongs to no login in progress on this daemon (stale, used, or \
             forged): start the login again",
        );
    };
    let answer = Answer::from(b);
    match complete_login(&ctx, attempt, answer).await {
        Ok((email, added)) => HttpResponse::Ok().json(api::LoggedIn { email, added }),
        Err(e) => err(e.status(), e.to_string()),
    }
}

/// Why a login handed to this daemon did not end in an account.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    /// The authority refused the code (or its answer could not be read): start again.
    #[error("{0:#}")]
    Exchange(anyhow::Error),
    #[error("the login's worker stopped: {0}")]
    Worker(actix_web::error::BlockingError),
    /// Taking the account in failed with this status (its cause is in the daemon's log).
    #[error("the daemon could not store the account (status {0}): see its log")]
    Store(u16),
}

impl LoginError {
    fn status(&self) -> u16 {
        match self {
            LoginError::Exchange(_) => 400,
            LoginError::Worker(_) => 500,
            LoginError::Store(s) => *s,
        }
    }
}

/// Exchanges a login's code on this daemon and adds (or renews) the account: the end of both
/// a dashboard login (`/callback`) and a CLI's remote one (`/login/finish`).
pub(crate) async fn complete_login(
    ctx: &Ctx,
    attempt: Attempt,
    answer: Answer,
) -> Result<(String, api::Added), LoginError> {
    let config = ctx.config.clone();
    let (email, tokens, profile) = web::block(move || login::complete(&config, &attempt, &answer))
        .await
        .map_err(LoginError::Worker)?
        .map_err(LoginError::Exchange)?;
    let body = api::AddAccount::from_login(&email, tokens, profile.as_ref());
    let added = super::add_account(ctx, body)
        .await
        .map_err(|r| LoginError::Store(r.status().as_u16()))?;
    Ok((email, added))
}

#[cfg(test)]
mod tests {
    use super::local_callback;

    #[test]
    fn a_cli_may_only_name_a_callback_on_its_own_machine() {
        for ok in [
            "http://localhost:54545/callback",
            "http://127.0.0.1:9/callback",
        ] {
            assert_eq!(local_callback(ok).as_deref(), Some(ok));
        }
        for bad in [
            "https://localhost:54545/callback",
            "http://evil.example/callback",
            "http://localhost:1/elsewhere",
            "http://localhost:1/callback?x=1",
            "http://localhost.evil.example:1/callback",
            "not a url",
        ] {
            assert_eq!(local_callback(bad), None, "{bad}");
        }
    }
}
