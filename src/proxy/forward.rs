//! The client-facing endpoint: checks the client key (before reading a byte of the body),
//! routes each request through the supervisor, swaps the credential, forwards the body byte
//! for byte with only the headers and query Anthropic needs (specs/anthropic.md §2), bounds the
//! wait for response headers, feeds every response's headers to the account's quota machine,
//! fails over before the first byte, and relays the answer as it arrives (`relay.rs`).
//!
//! Must not: forward the client's key or anything else of the client's that Anthropic does not
//! need (cookies, forwarding headers, other query parameters, ccs's own headers), alter the
//! body, buffer a response, or move a request to another account once a byte has reached the
//! client.

use std::time::{Duration, Instant};

use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use ccs_actors::quota::family_of;
use ccs_actors::routing::{session_key, AccountId};
use ccs_actors::supervisor::DEFAULT_POOL;
use ccs_actors::Secret;
use ccs_actors::Timestamp;
use serde::Deserialize;

use super::clients::OverLimit;
use super::drive::{drive, Answer, Driven, Left, SendError, Upstream};
use super::failover::Ending;
use super::guard::ClientKey;
use super::relay::{relay, Bounds, FitNote, RequestLog};
use super::upstream::UpstreamClient;
use super::{anthropic_error, body, continuity, Ctx};
use crate::oauth::OAUTH_BETA;

/// Whether a client's request header goes upstream: what the Messages API reads
/// (specs/anthropic.md §2, §4). The credential and `anthropic-beta` are set by the proxy;
/// everything else (cookies, forwarding headers, `x-ccs-*`, hop-by-hop headers) stays here.
fn forwarded(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "accept"
            | "accept-encoding"
            | "anthropic-version"
            | "x-app"
            | "user-agent"
            | "x-claude-code-session-id"
    ) || name.starts_with("x-stainless-")
}

/// Header names the client's `Connection` header marks as hop-by-hop.
fn connection_named(h: &HeaderMap) -> Vec<String> {
    h.get_all("connection")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The query sent upstream: only `beta` (Claude Code's `?beta=true`); anything else a client
/// put there (an `api_key`, say) stays here.
fn upstream_query(query: &str) -> String {
    if query.is_empty() || query == "beta=true" {
        return query.to_string();
    }
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "beta")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish()
}

/// Which pool a request draws from: the `/pool/NAME` prefix of its path (what `ccs run NAME`
/// puts in `ANTHROPIC_BASE_URL`), else `X-CCS-Pool`, else the default pool. Returns the pool
/// and the path and query to send upstream.
fn pool_of(req: &HttpRequest) -> (String, String) {
    let path = req.path();
    let query = upstream_query(req.query_string());
    let (pool, path) = match path.strip_prefix("/pool/").and_then(|r| r.split_once('/')) {
        Some((name, tail)) => (name.to_string(), format!("/{tail}")),
        None => {
            let header = req
                .headers()
                .get("x-ccs-pool")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (
                header.unwrap_or_else(|| DEFAULT_POOL.to_string()),
                path.to_string(),
            )
        }
    };
    if query.is_empty() {
        (pool, path)
    } else {
        (pool, format!("{path}?{query}"))
    }
}

/// What the proxy reads of a Messages body: the model (for per-family limits) and whether the
/// answer streams (for the header timeout). The rest is skipped, not kept.
#[derive(Deserialize, Default)]
struct Head {
    model: Option<String>,
    #[serde(default)]
    stream: bool,
}

/// The longest model name the proxy passes: Anthropic's ids are about 30 characters
/// (`claude-sonnet-4-5-20250929`, specs/anthropic.md §2); this leaves room to grow.
pub const MODEL_NAME_MAX: usize = 128;

/// Whether `m` looks like a model id: 1..=`MODEL_NAME_MAX` ASCII letters, digits and
/// `- . _ : @ /` (room for the ids of other clouds' catalogues, `anthropic.claude-…:0`,
/// `claude-…@2025…`).
fn model_name_ok(m: &str) -> bool {
    (1..=MODEL_NAME_MAX).contains(&m.len())
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:@/".contains(&b))
}

fn head_of(body: &[u8]) -> Result<Head, serde_json::Error> {
    serde_json::from_slice::<Head>(body)
}

fn beta_with_oauth(h: &HeaderMap) -> String {
    let given: Vec<&str> = h
        .get_all("anthropic-beta")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if given.contains(&OAUTH_BETA) {
        given.join(",")
    } else if given.is_empty() {
        OAUTH_BETA.to_string()
    } else {
        format!("{},{OAUTH_BETA}", given.join(","))
    }
}

/// "all 3 accounts in pool 'p' are", "the 1 account in pool 'p' is".
fn every_account(members: usize, pool: &str) -> String {
    match members {
        1 => format!("the 1 account in pool '{pool}' is"),
        n => format!("all {n} accounts in pool '{pool}' are"),
    }
}

/// Every account of the pool is limited (or none can serve): when the first frees up, from
/// what routing knew (no snapshot of the whole supervisor on a path that may be hot).
fn all_limited(ctx: &Ctx, pool: &str, members: usize, earliest: Option<Timestamp>) -> HttpResponse {
    let now = ctx.clock.now();
    if members == 0 {
        // A daemon of a shared pool that has not joined yet does not know the accounts: that
        // is no credential's fault, and it passes once Redis answers. A 503 with Retry-After
        // is what clients retry (a 401 makes Claude Code ask for a new login).
        if ctx.shared.as_ref().is_some_and(|s| !s.joined()) {
            let mut r = anthropic_error(
                503,
                "api_error",
                "this ccs daemon has not joined its shared pool yet: the shared store does not \
                 answer; it joins as soon as it does (`ccs cliproxy status` on its machine)",
            );
            r.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("5"),
            );
            return r;
        }
        return anthropic_error(
            401,
            "authentication_error",
            &format!("no account in pool '{pool}': log one in with `ccs claude --auth`"),
        );
    }
    match earliest {
        Some(t) => {
            let wait = t.since(now);
            // Round up: retrying a moment early would only meet another 429.
            let secs = wait.as_millis().div_ceil(1000).max(1);
            let mut r = anthropic_error(
                429,
                "rate_limit_error",
                &format!(
                    "{} limited; the first resets in {} ({})",
                    every_account(members, pool),
                    crate::config::words(wait),
                    crate::store::mirror::rfc3339(t.as_millis())
                ),
            );
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
            }
            r
        }
        None => anthropic_error(
            529,
            "overloaded_error",
            &format!(
                "no account in pool '{pool}' can take requests (dead, paused or failing): see `ccs claude --accounts`"
            ),
        ),
    }
}

/// The real upstream over HTTP: the client's request with the credential swapped.
struct HttpUpstream<'a> {
    ctx: &'a Ctx,
    /// This worker's client (`upstream.rs`).
    client: &'a reqwest::Client,
    method: &'a Method,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    beta: &'a str,
    body: &'a Bytes,
    /// The wait for one account's response headers.
    header_timeout: Duration,
    /// The end of the whole request's wait before its first byte, over every account.
    deadline: Instant,
    /// The conversation and model, for fitting its history to an account (`continuity.rs`).
    session: Option<&'a str>,
    model: Option<&'a str>,
    /// What fitting did to the request that was answered, for its log line.
    fitted: std::sync::Mutex<Option<FitNote>>,
}

/// The most bytes of a 400 read to see whether it is about the history.
const ERROR_READ_LIMIT: usize = 64 << 10;

impl HttpUpstream<'_> {
    /// The body as this account may read it: fitted when the model refuses another
    /// account's thinking blocks and some in the history are not this account's.
    fn fitted_for(&self, account: &AccountId, every_foreign: bool) -> Option<continuity::Fitted> {
        let session = self.session?;
        if !self.ctx.config.continuity.fit.0 {
            return None;
        }
        let (binding, why) = if every_foreign {
            (None, continuity::Why::After400)
        } else {
            (
                self.ctx.continuity.knowledge.binding(self.model?),
                continuity::Why::UpFront,
            )
        };
        let owners = self.ctx.continuity.provenance.of(session);
        continuity::fit_for(self.body, binding, why, |id| {
            owners.get(id).is_some_and(|a| a.as_str() == &**account)
        })
    }

    /// `fitted_for`, and in a shared pool with what the peers know of the conversation's
    /// blocks too: an answer a peer relayed may have made some (asked only when a fit is due).
    async fn fitted_knowing_peers(
        &self,
        account: &AccountId,
        every_foreign: bool,
    ) -> Option<continuity::Fitted> {
        let fitted = self.fitted_for(account, every_foreign)?;
        match (&self.ctx.shared, self.session) {
            (Some(shared), Some(s))
                if shared
                    .recall_thinking(&self.ctx.continuity.provenance, s)
                    .await =>
            {
                self.fitted_for(account, every_foreign)
            }
            _ => Some(fitted),
        }
    }

    async fn send_body(
        &self,
        access: &Secret,
        body: Bytes,
        bound: Duration,
    ) -> Result<reqwest::Response, SendError> {
        let url = format!(
            "{}{}",
            self.ctx.config.upstream.api_base.trim_end_matches('/'),
            self.path_and_query
        );
        let method = reqwest::Method::from_bytes(self.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut rb = self.client.request(method, url);
        let hop = connection_named(self.headers);
        for (k, v) in self.headers {
            if forwarded(k.as_str()) && !hop.iter().any(|h| h == k.as_str()) {
                rb = rb.header(k.as_str(), v.as_bytes());
            }
        }
        rb = rb
            .header("authorization", format!("Bearer {}", access.expose()))
            .header("anthropic-beta", self.beta)
            .body(body);
        match tokio::time::timeout(bound, rb.send()).await {
            Ok(r) => r.map_err(|e| SendError::Unreachable(e.to_string())),
            Err(_) => Err(SendError::TimedOut(bound)),
        }
    }

    fn note(&self, account: &AccountId, f: &continuity::Fitted, after_400: bool) {
        tracing::info!(
            target: "ccs::continuity",
            session = self.session.unwrap_or("-"),
            account = %account,
            model = self.model.unwrap_or("-"),
            blocks_removed = f.removed.len(),
            thinking_lowered = f.lowered,
            after_400,
            "fitted the history to the account: removed thinking blocks it did not produce"
        );
        self.ctx.telemetry.fitted(f.removed.len(), after_400);
        *self.fitted.lock().unwrap_or_else(|p| p.into_inner()) = Some(FitNote {
            removed: f.removed.len(),
            lowered: f.lowered,
            after_400,
        });
    }
}

/// A 400 read whole (it is small): its bytes, and whether it is about the history.
async fn read_error(resp: reqwest::Response) -> (reqwest::Response, bool) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = Vec::new();
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    while let Some(Ok(chunk)) = stream.next().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > ERROR_READ_LIMIT {
            break;
        }
    }
    #[derive(Deserialize)]
    struct E {
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
    }
    let about = serde_json::from_slice::<E>(&bytes)
        .ok()
        .and_then(|e| e.error?.message)
        .is_some_and(|m| continuity::about_history(&m));
    let mut rebuilt = http::Response::new(bytes);
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    (reqwest::Response::from(rebuilt), about)
}

impl Upstream for HttpUpstream<'_> {
    type Body = reqwest::Response;

    async fn send(
        &self,
        account: &AccountId,
        access: &Secret,
    ) -> Result<Answer<reqwest::Response>, SendError> {
        let bound = self
            .header_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()));
        if bound.is_zero() {
            return Err(SendError::TimedOut(self.header_timeout));
        }
        *self.fitted.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let up_front = self.fitted_knowing_peers(account, false).await;
        let body = match &up_front {
            Some(f) => {
                self.note(account, f, false);
                f.body.clone()
            }
            None => self.body.clone(),
        };
        let mut resp = self.send_body(access, body, bound).await?;
        if resp.status() == 400 && up_front.is_none() && self.session.is_some() {
            // A 400 about a block this account could not read, on a request ccs did not fit:
            // fit it (every block this account did not provably produce goes) and try once
            // more on the same account; relay the 400 only if that fails too.
            let (kept, about) = read_error(resp).await;
            resp = kept;
            if about {
                if let Some(f) = self.fitted_knowing_peers(account, true).await {
                    let left = self
                        .deadline
                        .saturating_duration_since(Instant::now())
                        .min(self.header_timeout);
                    let retry = self.send_body(access, f.body.clone(), left).await?;
                    self.note(account, &f, true);
                    if retry.status() != 400 {
                        if let Some(model) = self.model {
                            if self.ctx.continuity.knowledge.learn(model) {
                                tracing::warn!(
                                    target: "ccs::continuity",
                                    model,
                                    "this model refuses another account's thinking blocks: \
                                     its moves are fitted up front from now on"
                                );
                                self.ctx
                                    .store_learned(&self.ctx.continuity.knowledge.learned_models());
                            }
                        }
                    }
                    resp = retry;
                }
            }
        }
        Ok(Answer {
            status: resp.status().as_u16(),
            headers: observed_headers(&resp),
            body: resp,
        })
    }
}

fn observed_headers(r: &reqwest::Response) -> Vec<(String, String)> {
    r.headers()
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k.starts_with("anthropic-ratelimit-") || k == "retry-after" || k == "x-should-retry"
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// `POST /v1/messages` and `/v1/messages/count_tokens` (any query string), `GET /v1/models`.
pub async fn proxy(ctx: web::Data<Ctx>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let started = Instant::now();
    let h = req.headers();
    let Some(caller) = ctx.client_of(h) else {
        let client = ClientKey::of(req.peer_addr().map(|a| a.ip()));
        if ctx.access.throttle.punish(client).await {
            let mut r = anthropic_error(
                429,
                "rate_limit_error",
                &format!("too many requests with a wrong client key from {client}: slow down"),
            );
            r.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("60"),
            );
            return r;
        }
        return anthropic_error(
            401,
            "authentication_error",
            // No server path in an answer anyone can get (issue 32 item 8).
            "invalid client key: `ccs run` and `ccs claude` pass it to Claude Code themselves; \
             other clients send a key `ccs cliproxy key add` made (or cliproxy.auth.api_key of \
             the daemon's config.yaml), as x-api-key or Authorization: Bearer",
        );
    };
    let (pool, path_and_query) = pool_of(&req);
    // Before its body is read: a key limited to other pools is refused at no cost.
    if !caller.may_use(&pool) {
        return anthropic_error(
            403,
            "permission_error",
            &format!(
                "client key {:?} may draw from pool{} {} only, not {pool:?}",
                caller.name,
                if caller.limits.pools.len() == 1 {
                    ""
                } else {
                    "s"
                },
                caller.limits.pools.join(", ")
            ),
        );
    }
    let permit = match caller.admit(ctx.clock.now().as_millis()) {
        Ok(p) => p,
        Err(over) => return over_own_limit(&caller.name, over),
    };
    let p = &ctx.config.cliproxy;
    let limits = body::Limits {
        limit: usize::try_from(p.body_limit.0).unwrap_or(usize::MAX),
        timeout: p.body_timeout.0,
        budget: &ctx.bodies,
    };
    let (body, held) = match body::read(&req, payload, limits).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut log = RequestLog::new(started, body.len(), Some(ctx.telemetry.clone()));
    log.permit = Some(permit);
    let is_post = req.method() == Method::POST;
    let (head, session) = if is_post {
        let head = match head_of(&body) {
            Ok(m) => m,
            Err(e) => {
                log.status = 400;
                log.end = "bad body";
                return anthropic_error(
                    400,
                    "invalid_request_error",
                    &format!("the request body is not valid JSON: {e}"),
                );
            }
        };
        let header = h
            .get("x-claude-code-session-id")
            .and_then(|v| v.to_str().ok());
        (head, session_key(header, &body))
    } else {
        (Head::default(), None)
    };
    if let Some(m) = head.model.as_deref().filter(|m| !model_name_ok(m)) {
        log.status = 400;
        log.end = "bad model";
        return anthropic_error(
            400,
            "invalid_request_error",
            &format!(
                "model: not a model name ({} bytes; Anthropic's are up to {MODEL_NAME_MAX} \
                 letters, digits and - . _ : @ /)",
                m.len()
            ),
        );
    }
    log.session = session.clone();
    // Counted under its name while the key has brought few enough; `other` after.
    log.model = head
        .model
        .as_deref()
        .map(|m| ctx.telemetry.model_label(&caller.name, m));
    let family = head.model.as_deref().and_then(family_of);
    let beta = beta_with_oauth(h);
    let up_cfg = &ctx.config.upstream;
    // A non-streaming message's headers come only when the whole answer is ready.
    let whole = is_post && !head.stream && !req.path().ends_with("/count_tokens");
    let Some(client) = req.app_data::<UpstreamClient>() else {
        return anthropic_error(500, "api_error", "this HTTP worker has no upstream client");
    };
    let up = HttpUpstream {
        ctx: &ctx,
        client: &client.0,
        method: req.method(),
        path_and_query: &path_and_query,
        headers: h,
        beta: &beta,
        body: &body,
        header_timeout: if whole {
            up_cfg.header_timeout_whole.0
        } else {
            up_cfg.header_timeout.0
        },
        deadline: started + up_cfg.header_timeout_whole.0,
        session: session.as_deref(),
        model: head.model.as_deref(),
        fitted: Default::default(),
    };
    if let (Some(shared), Some(s)) = (&ctx.shared, session.as_deref()) {
        // A conversation this daemon has not seen may be a peer's: its binding first (once
        // per conversation and daemon; a known one never waits on Redis).
        shared.recall_binding(&ctx.sup, s).await;
    }
    let driven = drive(&ctx.sup, &up, &pool, session.as_deref(), family).await;
    let fit_note = up.fitted.into_inner().unwrap_or_else(|p| p.into_inner());
    // The body went upstream: give its share of the budget back before relaying.
    drop(held);
    drop(body);
    let resp = match driven {
        Driven::Relay {
            account,
            answer,
            left,
            ..
        } => {
            ctx.figures.record_request(&account);
            log.account = Some(account.to_string());
            log.hops = left.len();
            log.fitted = fit_note;
            if session.is_some() {
                log.provenance = Some(ctx.continuity.provenance.clone());
            }
            let bounds = Bounds {
                idle: up_cfg.idle_timeout.0,
                draining: ctx.stopping.draining.subscribe(),
                revoked: log.permit.as_ref().map(|p| p.revoked()),
            };
            return relay(answer.body, bounds, log);
        }
        Driven::AllLimited {
            earliest_reset,
            members,
            ..
        } => all_limited(&ctx, &pool, members, earliest_reset),
        Driven::Failed { left, ending } => failed(&left, ending),
        Driven::Stopped => anthropic_error(503, "api_error", "the daemon is shutting down"),
    };
    log.status = resp.status().as_u16();
    log.end = "refused";
    resp
}

/// A client key over its own limit (set on this daemon, not Anthropic's): a 429 that says so,
/// since Claude Code shows the message as it is.
fn over_own_limit(name: &str, over: OverLimit) -> HttpResponse {
    let (what, retry) = match over {
        OverLimit::Rate {
            per_minute,
            retry_after,
        } => (format!("{per_minute} requests a minute"), retry_after),
        OverLimit::Concurrent { at_once } => (format!("{at_once} requests at once"), 1),
    };
    let mut r = anthropic_error(
        429,
        "rate_limit_error",
        &format!(
            "the client key {name:?} is over its own limit on this ccs daemon ({what}, set by \
             whoever runs it): this is not an Anthropic limit; retry in {retry} s"
        ),
    );
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&retry.to_string()) {
        r.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    r
}

/// No account could serve, for reasons that are not all quota: the policy's ending (504 when
/// every one was silent, else 502), naming each account and why.
fn failed(left: &[(AccountId, Left)], ending: Ending) -> HttpResponse {
    let tried: Vec<String> = left
        .iter()
        .map(|(a, why)| format!("{a} ({})", why.as_str()))
        .collect();
    let message = format!(
        "no account could serve the request: {}; no other account could take it",
        tried.join(", ")
    );
    match ending {
        Ending::TimedOut => anthropic_error(504, "timeout_error", &message),
        _ => anthropic_error(ending.status(), "api_error", &message),
    }
}

async fn probe() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("ccs proxy\n")
}

/// Alive, with the daemon's version; its pid (which the CLI uses to find and stop it) only
/// to a caller on this machine or one with the management secret.
async fn healthz(ctx: web::Data<Ctx>, req: HttpRequest) -> HttpResponse {
    let mut v = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "url": ctx.url,
    });
    if shows_pid(req.peer_addr().map(|a| a.ip()), || {
        ctx.management_ok(req.headers())
    }) {
        v["pid"] = std::process::id().into();
    }
    HttpResponse::Ok().json(v)
}

/// Whether `/healthz` gives its pid to a caller at `peer`: one on this machine, or one with
/// the management secret (`secret_ok`, asked only for the others).
fn shows_pid(peer: Option<std::net::IpAddr>, secret_ok: impl FnOnce() -> bool) -> bool {
    peer.is_some_and(|ip| ip.is_loopback()) || secret_ok()
}

async fn not_found() -> HttpResponse {
    anthropic_error(
        404,
        "not_found_error",
        "Not found: this endpoint serves /v1/messages, /v1/messages/count_tokens and /v1/models",
    )
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(probe))
        .route("/", web::head().to(probe))
        .route("/healthz", web::get().to(healthz))
        .route("/v1/messages", web::post().to(proxy))
        .route("/v1/messages/count_tokens", web::post().to(proxy))
        .route("/v1/models", web::get().to(proxy))
        .route("/pool/{pool}/v1/messages", web::post().to(proxy))
        .route(
            "/pool/{pool}/v1/messages/count_tokens",
            web::post().to(proxy),
        )
        .route("/pool/{pool}/v1/models", web::get().to(proxy))
        .route("/pool/{pool}/", web::head().to(probe))
        .route("/pool/{pool}", web::head().to(probe))
        .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_goes_to_this_machine_or_the_management_secret_only() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let lan: std::net::IpAddr = "192.168.1.20".parse().unwrap();
        assert!(shows_pid(Some(lo), || false));
        assert!(shows_pid(Some("::1".parse().unwrap()), || false));
        assert!(!shows_pid(Some(lan), || false));
        assert!(shows_pid(Some(lan), || true));
        assert!(!shows_pid(None, || false));
    }

    #[test]
    fn a_model_name_is_short_and_plain() {
        for ok in [
            "claude-sonnet-4-5-20250929",
            "claude-3-5-haiku-latest",
            "anthropic.claude-v2:1",
            "claude-3-opus@20240229",
        ] {
            assert!(model_name_ok(ok), "{ok}");
        }
        let long = "m".repeat(MODEL_NAME_MAX + 1);
        for bad in ["", long.as_str(), "claude\u{1b}[2J", "a b", "модель", "x\n"] {
            assert!(!model_name_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_count_of_limited_accounts_agrees_with_its_number() {
        assert_eq!(every_account(1, "p"), "the 1 account in pool 'p' is");
        assert_eq!(every_account(3, "p"), "all 3 accounts in pool 'p' are");
    }

    #[test]
    fn the_head_reads_model_and_stream_wherever_they_are() {
        let h = head_of(br#"{"model":"claude-opus-4-1","x":{"stream":true}}"#).unwrap();
        assert_eq!(h.model.as_deref(), Some("claude-opus-4-1"));
        assert!(!h.stream, "a nested key is not the request's");
        let h = head_of(br#"{"messages":[],"model": "claude-sonnet-4-5","stream": true}"#).unwrap();
        assert_eq!(h.model.as_deref(), Some("claude-sonnet-4-5"));
        assert!(h.stream);
        assert_eq!(head_of(br#"{"messages":[]}"#).unwrap().model, None);
        assert!(head_of(b"not json").is_err());
        assert!(
            head_of(br#"{"model":"m","#).is_err(),
            "a truncated body is refused"
        );
    }

    #[test]
    fn only_what_anthropic_reads_goes_upstream() {
        for name in [
            "content-type",
            "anthropic-version",
            "x-app",
            "user-agent",
            "x-claude-code-session-id",
            "x-stainless-lang",
            "accept-encoding",
        ] {
            assert!(forwarded(name), "{name}");
        }
        for name in [
            "cookie",
            "x-forwarded-for",
            "x-ccs-pool",
            "authorization",
            "x-api-key",
            "anthropic-beta",
            "host",
            "connection",
            "content-length",
            "origin",
        ] {
            assert!(!forwarded(name), "{name}");
        }
        assert_eq!(upstream_query("beta=true"), "beta=true");
        assert_eq!(upstream_query("beta=true&api_key=sk-x"), "beta=true");
        assert_eq!(upstream_query("api_key=sk-x"), "");
        assert_eq!(upstream_query(""), "");
    }

    #[test]
    fn oauth_beta_is_appended_once() {
        let mut h = HeaderMap::new();
        assert_eq!(beta_with_oauth(&h), OAUTH_BETA);
        h.insert(
            "anthropic-beta".parse().unwrap(),
            "claude-code-20250219,x".parse().unwrap(),
        );
        assert_eq!(
            beta_with_oauth(&h),
            format!("claude-code-20250219,x,{OAUTH_BETA}")
        );
        h.insert(
            "anthropic-beta".parse().unwrap(),
            format!("a,{OAUTH_BETA}").parse().unwrap(),
        );
        assert_eq!(beta_with_oauth(&h), format!("a,{OAUTH_BETA}"));
    }
}
