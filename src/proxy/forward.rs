//! The client-facing endpoint: checks the client key, routes each request through the
//! supervisor, swaps the credential, forwards the body byte for byte, feeds every response's
//! headers to the account's quota machine, fails over before the first byte, and relays the
//! answer as it arrives.
//!
//! Must not: forward the client's key, alter the body, buffer a response, or move a request to
//! another account once a byte has reached the client.

use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use bytes::BytesMut;
use ccs_actors::quota::family_of;
use ccs_actors::routing::{session_key, AccountId};
use ccs_actors::supervisor::DEFAULT_POOL;
use ccs_actors::Secret;
use ccs_actors::Timestamp;
use futures_util::StreamExt;
use serde::Deserialize;

use super::drive::{drive, Answer, Driven, Upstream};
use super::{anthropic_error, Ctx, OAUTH_BETA};

/// Request headers that belong to one hop, or carry the client's own credential.
const DROP_REQUEST: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "authorization",
    "x-api-key",
    "anthropic-beta",
];

/// Response headers that belong to one hop.
const DROP_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Which pool a request draws from: the `/pool/NAME` prefix of its path (what `ccs run NAME`
/// puts in `ANTHROPIC_BASE_URL`), else `X-CCS-Pool`, else the default pool. Returns the pool
/// and the path to send upstream.
fn pool_of(req: &HttpRequest) -> (String, String) {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.path().to_string());
    if let Some(rest) = pq.strip_prefix("/pool/") {
        if let Some((name, tail)) = rest.split_once('/') {
            return (name.to_string(), format!("/{tail}"));
        }
    }
    let header = req
        .headers()
        .get("x-ccs-pool")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (header.unwrap_or_else(|| DEFAULT_POOL.to_string()), pq)
}

#[derive(Deserialize)]
struct Head {
    model: Option<String>,
}

/// The model named in the body, reading no further than needed when `"model"` comes first
/// (as it does in Claude Code's requests), else parsing the body.
fn model_of(body: &[u8]) -> Result<Option<String>, String> {
    let lead = &body[..body.len().min(512)];
    if let Some(i) = lead.windows(8).position(|w| w == b"\"model\":") {
        let rest = &lead[i + 8..];
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        if let Some(rest) = rest.strip_prefix(b"\"") {
            if let Some(end) = rest.iter().position(|&c| c == b'"' || c == b'\\') {
                if rest[end] == b'"' {
                    return Ok(Some(String::from_utf8_lossy(&rest[..end]).into_owned()));
                }
            }
        }
    }
    serde_json::from_slice::<Head>(body)
        .map(|h| h.model)
        .map_err(|e| e.to_string())
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

async fn all_limited(ctx: &Ctx, pool: &str, earliest: Option<Timestamp>) -> HttpResponse {
    let now = ctx.clock.now();
    let view = ctx.sup.view().await.ok();
    let members = view
        .as_ref()
        .and_then(|v| v.pools.get(pool).map(Vec::len))
        .unwrap_or(0);
    if members == 0 {
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
                    "all {members} accounts in pool '{pool}' are limited; the first resets in {} ({} UTC)",
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
    method: &'a Method,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    beta: &'a str,
    body: &'a Bytes,
}

impl Upstream for HttpUpstream<'_> {
    type Body = reqwest::Response;

    async fn send(
        &self,
        _account: &AccountId,
        access: &Secret,
    ) -> Result<Answer<reqwest::Response>, String> {
        let url = format!(
            "{}{}",
            self.ctx.config.upstream.api_base.trim_end_matches('/'),
            self.path_and_query
        );
        let method = reqwest::Method::from_bytes(self.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut rb = self.ctx.client.request(method, url);
        for (k, v) in self.headers {
            if !DROP_REQUEST.contains(&k.as_str()) {
                rb = rb.header(k.as_str(), v.as_bytes());
            }
        }
        rb = rb
            .header("authorization", format!("Bearer {}", access.expose()))
            .header("anthropic-beta", self.beta)
            .body(self.body.clone());
        let resp = rb.send().await.map_err(|e| e.to_string())?;
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

/// Relays an upstream answer to the client, event by event.
fn relay(resp: reqwest::Response) -> HttpResponse {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HttpResponse::build(status);
    for (k, v) in resp.headers() {
        if !DROP_RESPONSE.contains(&k.as_str()) {
            out.append_header((k.as_str(), v.as_bytes()));
        }
    }
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let upstream = Box::pin(resp.bytes_stream());
    let body = futures_util::stream::unfold((upstream, false), move |(mut up, done)| async move {
        if done {
            return None;
        }
        match up.next().await {
            None => None,
            Some(Ok(b)) => Some((Ok(b), (up, false))),
            Some(Err(e)) if sse => {
                // The stream broke after bytes reached the client: say so in its own terms.
                tracing::warn!(error = %e, "upstream stream broke mid-response");
                let msg = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": format!("upstream connection lost mid-stream: {e}")}});
                Some((
                    Ok(Bytes::from(format!("event: error\ndata: {msg}\n\n"))),
                    (up, true),
                ))
            }
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), (up, true))),
        }
    });
    out.streaming(body)
}

fn too_large(limit: usize) -> HttpResponse {
    anthropic_error(
        413,
        "request_too_large",
        &format!(
            "the request body is larger than the proxy's limit of {limit} bytes \
             (raise cliproxy.body_limit in config.yaml)"
        ),
    )
}

/// Reads the whole request body into one buffer (sized from `content-length` up front, so a
/// large body is not copied while it grows), refusing more than `limit` bytes.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, HttpResponse> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 << 10));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            anthropic_error(
                400,
                "invalid_request_error",
                &format!("could not read the request body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// `POST /v1/messages` and `/v1/messages/count_tokens` (any query string), `GET /v1/models`.
pub async fn proxy(ctx: web::Data<Ctx>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let h = req.headers();
    if !ctx.client_key_ok(h) {
        return anthropic_error(
            401,
            "authentication_error",
            "invalid client key: send the key from cliproxy.auth.api_key in config.yaml as x-api-key or Authorization: Bearer",
        );
    }
    let limit = usize::try_from(ctx.config.cliproxy.body_limit.0).unwrap_or(usize::MAX);
    let body = match read_body(&req, payload, limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (pool, path_and_query) = pool_of(&req);
    let is_post = req.method() == Method::POST;
    let (model, session) = if is_post {
        let model = match model_of(&body) {
            Ok(m) => m,
            Err(e) => {
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
        (model, session_key(header, &body))
    } else {
        (None, None)
    };
    let family = model.as_deref().and_then(family_of);
    let beta = beta_with_oauth(h);
    let up = HttpUpstream {
        ctx: &ctx,
        method: req.method(),
        path_and_query: &path_and_query,
        headers: h,
        beta: &beta,
        body: &body,
    };
    match drive(&ctx.sup, &up, &pool, session.as_deref(), family).await {
        Driven::Relay {
            account, answer, ..
        } => {
            ctx.record_request(&account);
            relay(answer.body)
        }
        Driven::AllLimited { earliest_reset, .. } => all_limited(&ctx, &pool, earliest_reset).await,
        Driven::Failed { left } => {
            let tried: Vec<String> = left
                .iter()
                .map(|(a, why)| format!("{a} ({})", why.as_str()))
                .collect();
            anthropic_error(
                502,
                "api_error",
                &format!(
                    "no account could serve the request: {}; no other account could take it",
                    tried.join(", ")
                ),
            )
        }
        Driven::Stopped => anthropic_error(503, "api_error", "the daemon is shutting down"),
    }
}

async fn probe() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("ccs proxy\n")
}

async fn healthz(ctx: web::Data<Ctx>) -> HttpResponse {
    HttpResponse::Ok()
        .json(serde_json::json!({"status": "ok", "pid": std::process::id(), "url": ctx.url}))
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
    fn model_is_read_from_the_front_or_by_parsing() {
        assert_eq!(
            model_of(br#"{"model":"claude-opus-4-1","x":1}"#)
                .unwrap()
                .as_deref(),
            Some("claude-opus-4-1")
        );
        assert_eq!(
            model_of(br#"{"messages":[],"model": "claude-sonnet-4-5"}"#)
                .unwrap()
                .as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(model_of(br#"{"messages":[]}"#).unwrap(), None);
        assert!(model_of(b"not json").is_err());
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
