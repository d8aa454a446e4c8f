//! The simulator's HTTP face on actix-web: the OAuth authority, the Messages API and the
//! `/sim/*` control API, all on one loopback port, over the shared `SimModel`.
//!
//! Must not: listen beyond loopback, sleep except for a configured delay, or decide anything
//! the model should (this file only translates between HTTP and the model).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use ccs_actors::ManualClock;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::model::thinking::Block;
use super::model::{Admission, ApiError, AuthorizeQuery, Authorized, Serve, SimModel, MODELS};

/// Largest request body the simulator takes: Claude Code sends several MB late in a session.
pub const BODY_LIMIT: usize = 256 << 20;
/// How many Messages requests `/sim/requests` keeps.
pub const RECEIVED_KEPT: usize = 64;

pub struct SimState {
    pub model: Arc<SimModel>,
    /// Present when the simulator runs on a manual clock (`--manual-clock`): `/sim/clock`
    /// moves it.
    pub clock: Option<ManualClock>,
    /// The last Messages request as it arrived (`/sim/last-request`), so a test sees exactly
    /// what a proxy forwarded.
    pub last: std::sync::Mutex<Option<Received>>,
    /// The last `RECEIVED_KEPT` Messages requests as they arrived, oldest first
    /// (`/sim/requests`): a test compares what the upstream received with what the client
    /// sent, byte for byte.
    pub received: std::sync::Mutex<std::collections::VecDeque<Received>>,
    /// Connections accepted so far, plain and over TLS, so a test sees whether a client
    /// reused one.
    pub connections: Arc<AtomicU64>,
    pub tls_connections: Arc<AtomicU64>,
}

/// A request as the simulator received it.
#[derive(Clone)]
pub struct Received {
    pub path_and_query: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// Kept whole (a reference, not a copy); digested only when asked.
    pub body: Bytes,
}

pub(super) type State = web::Data<SimState>;

fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn error_response(e: &ApiError) -> HttpResponse {
    let mut r = HttpResponse::build(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (k, v) in &e.headers {
        r.insert_header((k.as_str(), v.as_str()));
    }
    r.json(&e.body)
}

async fn pause(d: Option<Duration>) {
    if let Some(d) = d {
        actix_web::rt::time::sleep(d).await;
    }
}

// ---- OAuth ---------------------------------------------------------------------------------

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(pairs);
            u.to_string()
        }
        Err(_) => base.to_string(),
    }
}

async fn authorize(st: State, q: web::Query<AuthorizeQuery>) -> HttpResponse {
    match st.model.authorize(&q) {
        Err(e) => error_response(&e),
        Ok(Authorized::Approved {
            redirect_uri,
            code,
            state,
            email,
        }) => {
            let location = with_query(&redirect_uri, &[("code", &code), ("state", &state)]);
            let body = format!(
                "<!doctype html><title>ccs simulator: authorized</title>\
                 <p>Signed in as {email} (simulated). Redirecting to <a href=\"{location}\">the app</a>.</p>\
                 <p>Or paste this code into the terminal:</p><pre id=\"code\">{code}#{state}</pre>"
            );
            HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .content_type("text/html; charset=utf-8")
                .body(body)
        }
        Ok(Authorized::Denied {
            redirect_uri,
            state,
        }) => {
            let location = with_query(
                &redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "The user denied access (simulated)"),
                    ("state", &state),
                ],
            );
            HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .finish()
        }
    }
}

#[derive(Deserialize)]
struct CodeQuery {
    code: Option<String>,
    state: Option<String>,
}

/// The manual flow's landing page: shows `CODE#STATE` to paste.
async fn code_page(q: web::Query<CodeQuery>) -> HttpResponse {
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return HttpResponse::BadRequest().body("missing code or state");
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><title>Authentication code</title><p>Paste this code into the terminal:</p><pre id=\"code\">{code}#{state}</pre>"
        ))
}

async fn token(st: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let is_json = header_str(req.headers(), "content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return error_response(&ApiError::oauth(
            400,
            "invalid_request",
            "the token endpoint takes a JSON body (Content-Type: application/json)",
        ));
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return error_response(&ApiError::oauth(
            400,
            "invalid_request",
            "the body is not valid JSON",
        ));
    };
    let outcome = st.model.token(&value);
    pause(outcome.delay).await;
    match outcome.result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error_response(&e),
    }
}

async fn profile(st: State, req: HttpRequest) -> HttpResponse {
    match st.model.profile(bearer(req.headers())) {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error_response(&e),
    }
}

async fn usage(st: State, req: HttpRequest) -> HttpResponse {
    let h = req.headers();
    match st.model.usage(bearer(h), header_str(h, "anthropic-beta")) {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error_response(&e),
    }
}

// ---- Messages ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct MessageHead {
    stream: Option<bool>,
}

fn message_id(serve: &Serve) -> String {
    format!("msg_sim_{:016x}", serve.id)
}

fn sse_events(serve: &Serve) -> Vec<Bytes> {
    let id = message_id(serve);
    let ev = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut start_usage = serve.usage.to_json();
    start_usage["output_tokens"] = json!(1);
    let mut message = json!({"id":id,"type":"message","role":"assistant","model":serve.model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":start_usage});
    if let Some(t) = &serve.transformations {
        message["input_transformations"] = t.clone();
    }
    let mut out = vec![ev(
        "message_start",
        json!({"type":"message_start","message":message}),
    )];
    for (index, block) in serve.content.iter().enumerate() {
        let delta = |d: Value| {
            ev(
                "content_block_delta",
                json!({"type":"content_block_delta","index":index,"delta":d}),
            )
        };
        match block {
            Block::Thinking {
                thinking,
                signature,
            } => {
                out.push(ev(
                    "content_block_start",
                    json!({"type":"content_block_start","index":index,"content_block":{"type":"thinking","thinking":"","signature":""}}),
                ));
                out.push(delta(json!({"type":"thinking_delta","thinking":thinking})));
                out.push(delta(
                    json!({"type":"signature_delta","signature":signature}),
                ));
            }
            Block::Redacted { .. } => out.push(ev(
                "content_block_start",
                json!({"type":"content_block_start","index":index,"content_block":block.to_json()}),
            )),
            Block::Text(pieces) => {
                out.push(ev(
                    "content_block_start",
                    json!({"type":"content_block_start","index":index,"content_block":{"type":"text","text":""}}),
                ));
                for d in pieces {
                    out.push(delta(json!({"type":"text_delta","text":d})));
                }
            }
            Block::ToolUse { id, name, input } => {
                out.push(ev(
                    "content_block_start",
                    json!({"type":"content_block_start","index":index,"content_block":{"type":"tool_use","id":id,"name":name,"input":{}}}),
                ));
                out.push(delta(
                    json!({"type":"input_json_delta","partial_json":input.to_string()}),
                ));
            }
        }
        out.push(ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":index}),
        ));
    }
    // As the API does, a ping follows the first block's start.
    if out.len() > 1 {
        out.insert(2, ev("ping", json!({"type":"ping"})));
    }
    let mut end_usage = serve.usage.to_json();
    end_usage["output_tokens"] = json!(serve.usage.output);
    out.push(ev(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":serve.stop_reason,"stop_sequence":null},"usage":end_usage}),
    ));
    out.push(ev("message_stop", json!({"type":"message_stop"})));
    out
}

/// A body that fails at once: actix-web then drops the connection without sending the head.
fn broken_body(
) -> actix_web::body::BodyStream<impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>> {
    actix_web::body::BodyStream::new(stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    }))
}

async fn messages(st: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let h = req.headers();
    let received = Received {
        version: format!("{:?}", req.version()),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        headers: h
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.clone(),
    };
    {
        let mut all = st.received.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= RECEIVED_KEPT {
            all.pop_front();
        }
        all.push_back(received.clone());
    }
    *st.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(received);
    let Ok(head) = serde_json::from_slice::<MessageHead>(&body) else {
        return error_response(&ApiError::anthropic(
            400,
            "invalid_request_error",
            "the request body is not valid JSON",
        ));
    };
    let admission = st
        .model
        .admit(bearer(h), header_str(h, "anthropic-beta"), &body, false);
    let serve = match admission {
        Admission::Reject { delay, error } => {
            pause(delay).await;
            return error_response(&error);
        }
        Admission::CloseBeforeHeaders { delay } => {
            pause(delay).await;
            return HttpResponse::Ok().body(broken_body());
        }
        Admission::Serve(s) => s,
    };
    pause(serve.delay).await;
    let mut resp = HttpResponse::Ok();
    for (k, v) in &serve.headers {
        resp.insert_header((k.as_str(), v.as_str()));
    }
    resp.insert_header(("request-id", format!("req_{}", message_id(&serve))));
    if head.stream != Some(true) {
        let mut body = json!({
            "id": message_id(&serve),
            "type": "message",
            "role": "assistant",
            "model": serve.model,
            "content": serve.content.iter().map(Block::to_json).collect::<Vec<_>>(),
            "stop_reason": serve.stop_reason,
            "stop_sequence": null,
            "usage": serve.usage.to_json(),
        });
        if let Some(t) = &serve.transformations {
            body["input_transformations"] = t.clone();
        }
        // Like the real API, answer gzip to a client that accepts it (JSON answers only).
        let gzip = header_str(h, "accept-encoding")
            .is_some_and(|a| a.split(',').any(|e| e.trim() == "gzip"));
        if gzip {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let plain = serde_json::to_vec(&body).unwrap_or_default();
            if enc.write_all(&plain).is_ok() {
                if let Ok(zipped) = enc.finish() {
                    return resp
                        .insert_header((header::CONTENT_TYPE, "application/json"))
                        .insert_header((header::CONTENT_ENCODING, "gzip"))
                        .body(zipped);
                }
            }
        }
        return resp.json(body);
    }
    let events = sse_events(&serve);
    let close_after = serve.close_after;
    let cut_inside = serve.cut_inside;
    let event_delay = serve.event_delay;
    // Counts the stream as abandoned if the client goes away before its last event.
    let watch = Abandoned {
        model: st.model.clone(),
        email: serve.email.clone(),
        done: false,
    };
    /// Where a stream is: `n` whole events sent, then maybe half of one, then the cut.
    #[derive(PartialEq)]
    enum At {
        Events(usize),
        HalfSent,
        Cut,
    }
    let body = stream::unfold(
        (events.into_iter(), At::Events(0), watch),
        move |(mut it, at, mut watch)| async move {
            let n = match at {
                At::Cut => return None,
                At::Events(n) => Some(n),
                At::HalfSent => None,
            };
            let due = n.is_none_or(|n| close_after.is_some_and(|c| n >= c));
            if due && cut_inside && n.is_some() {
                // Half of the next event, then the cut.
                let next = it.next().unwrap_or_default();
                let half = next.slice(..next.len() / 2);
                return Some((Ok(half), (it, At::HalfSent, watch)));
            }
            if due {
                // Let the events so far reach the socket before the cut.
                actix_web::rt::time::sleep(Duration::from_millis(2)).await;
                let err = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated reset mid-stream",
                );
                watch.done = true;
                return Some((Err(err), (it, At::Cut, watch)));
            }
            let Some(next) = it.next() else {
                watch.finish();
                return None;
            };
            pause(event_delay).await;
            let n = n.unwrap_or(0);
            Some((
                Ok::<_, std::io::Error>(next),
                (it, At::Events(n + 1), watch),
            ))
        },
    );
    resp.insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body)
}

/// Notes a stream whose client left before its end (dropped unfinished).
struct Abandoned {
    model: Arc<SimModel>,
    email: String,
    done: bool,
}

impl Abandoned {
    /// The stream reached its end: nothing to note.
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.done {
            self.model.stream_abandoned(&self.email);
        }
    }
}

async fn count_tokens(st: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let h = req.headers();
    if serde_json::from_slice::<Value>(&body).is_err() {
        return error_response(&ApiError::anthropic(
            400,
            "invalid_request_error",
            "the request body is not valid JSON",
        ));
    }
    match st
        .model
        .admit(bearer(h), header_str(h, "anthropic-beta"), &body, true)
    {
        Admission::Serve(s) => HttpResponse::Ok().json(json!({"input_tokens": s.input_tokens})),
        Admission::Reject { error, .. } => error_response(&error),
        Admission::CloseBeforeHeaders { .. } => HttpResponse::Ok().body(broken_body()),
    }
}

async fn models(st: State, req: HttpRequest) -> HttpResponse {
    if let Err(e) = st.model.profile(bearer(req.headers())) {
        return error_response(&e);
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name)| json!({"type":"model","id":id,"display_name":name,"created_at":"2025-09-29T00:00:00Z"}))
        .collect();
    HttpResponse::Ok().json(json!({
        "data": data,
        "has_more": false,
        "first_id": MODELS[0].0,
        "last_id": MODELS[MODELS.len() - 1].0,
    }))
}

async fn not_found() -> HttpResponse {
    error_response(&ApiError::anthropic(404, "not_found_error", "Not found"))
}

/// The simulated Anthropic's own routes on `cfg` (its `/sim/*` control API is
/// `control_api.rs`'s, added beside them by `sim::routes`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/authorize", web::get().to(authorize))
        .route("/oauth/code/callback", web::get().to(code_page))
        .route("/v1/oauth/token", web::post().to(token))
        .route("/api/oauth/profile", web::get().to(profile))
        .route("/api/oauth/usage", web::get().to(usage))
        .route("/v1/messages", web::post().to(messages))
        .route("/v1/messages/count_tokens", web::post().to(count_tokens))
        .route("/v1/models", web::get().to(models))
        .default_service(web::to(not_found));
}

/// `t` as an HTTP date (IMF-fixdate).
fn http_date(t: ccs_actors::Timestamp) -> Option<header::HeaderValue> {
    let at = chrono::DateTime::from_timestamp_millis(t.as_millis() as i64)?;
    header::HeaderValue::from_str(&at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).ok()
}

/// Builds the server with `routes` on an already-bound loopback listener, and on a second one
/// over TLS when given (HTTP/2 offered by ALPN, as Anthropic's edge does).
pub fn server(
    listener: TcpListener,
    tls: Option<(TcpListener, rustls::ServerConfig)>,
    state: SimState,
    workers: usize,
    routes: fn(&mut web::ServiceConfig),
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(state);
    let opened = data.clone();
    let server = HttpServer::new(move || {
        App::new()
            // Every answer's Date is the simulated clock's, as Anthropic's is its own
            // (specs/anthropic.md §2): a manual clock moved forward is a skewed server.
            .wrap_fn(|req, srv| {
                let now = req.app_data::<State>().map(|d| d.model.now());
                let answer = actix_web::dev::Service::call(srv, req);
                async move {
                    let mut res = answer.await?;
                    if let Some(v) = now.and_then(http_date) {
                        res.headers_mut().insert(header::DATE, v);
                    }
                    Ok(res)
                }
            })
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .app_data(web::JsonConfig::default().limit(1 << 20))
            .configure(routes)
    })
    .on_connect(move |conn, _| {
        let plain = conn
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .is_some();
        let n = if plain {
            &opened.connections
        } else {
            &opened.tls_connections
        };
        n.fetch_add(1, Ordering::Relaxed);
    })
    .workers(workers)
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?;
    let server = match tls {
        Some((l, config)) => server.listen_rustls_0_23(l, config)?,
        None => server,
    };
    Ok(server.run())
}
