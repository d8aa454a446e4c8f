//! Relaying an upstream answer to the client as it arrives, with three bounds: the silence
//! between two chunks (`upstream.idle_timeout`), the daemon stopping (`cliproxy.stop_grace`),
//! and the upstream breaking. A stream that ends for any of them ends with an SSE `error`
//! event that starts on an event boundary: only whole events are passed on, so a cut inside an
//! event never glues `event: error` onto half a `data:` line. Every relayed request ends in
//! one log line (`RequestLog`).
//!
//! Must not: buffer more than the one unfinished event, alter an event, or add anything to an
//! answer that is not an uncompressed event stream (those are cut by closing the connection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::api::RequestRecord;
use crate::telemetry::scan::{Shape, UsageScan};
use crate::telemetry::Telemetry;

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

/// Holds back the unfinished tail of an event stream, so only whole events go out.
#[derive(Default)]
pub struct Framer {
    tail: BytesMut,
}

/// The end of the last complete event in `b` (just after its blank line), if any.
fn last_boundary(b: &[u8]) -> Option<usize> {
    let mut i = b.len();
    while i >= 2 {
        if b[i - 1] == b'\n' && (b[i - 2] == b'\n' || (i >= 4 && &b[i - 4..i] == b"\r\n\r\n")) {
            return Some(i);
        }
        i -= 1;
    }
    None
}

impl Framer {
    /// Takes a chunk; returns the whole events now complete (nothing when none is).
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        if self.tail.is_empty() && chunk.ends_with(b"\n\n") {
            // The common case: the chunk is whole events; pass it on without a copy.
            return Some(chunk);
        }
        self.tail.extend_from_slice(&chunk);
        let end = last_boundary(&self.tail)?;
        Some(self.tail.split_to(end).freeze())
    }

    /// The stream ended cleanly: whatever is left goes out as it came.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.tail.is_empty()).then(|| self.tail.split().freeze())
    }
}

/// An SSE `error` event in Anthropic's shape.
pub fn error_event(kind: &str, message: &str) -> Bytes {
    let msg = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    Bytes::from(format!("event: error\ndata: {msg}\n\n"))
}

/// What ccs did to one request's history before the answer that was relayed.
#[derive(Clone, Debug, PartialEq)]
pub struct FitNote {
    pub removed: usize,
    pub lowered: bool,
    /// Fitted after the account's 400, on the retry (else up front).
    pub after_400: bool,
}

/// One line per proxied request, written when the answer is over (or the client left), and
/// the same record handed to the telemetry (metrics, usage, the live feed).
pub struct RequestLog {
    pub started: Instant,
    /// The client key the request came with (its name), and its share of the key's own
    /// limits, given back when the answer ends.
    pub permit: Option<crate::proxy::clients::Permit>,
    pub session: Option<String>,
    pub account: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: u64,
    /// Accounts left before the one that answered.
    pub hops: usize,
    /// How it ended: `complete`, `client gone`, or why it was cut.
    pub end: &'static str,
    /// When the upstream answer's headers came.
    pub ttfb: Option<Duration>,
    /// Reads the answer's usage as it passes.
    pub scan: Option<UsageScan>,
    /// What fitting did to the request's history (`continuity.rs`), for the log line.
    pub fitted: Option<FitNote>,
    /// Where the thinking blocks the answer produced are recorded (a conversation's answers
    /// only).
    pub provenance: Option<Arc<crate::proxy::continuity::Provenance>>,
    telemetry: Option<Arc<Telemetry>>,
}

impl RequestLog {
    pub fn new(started: Instant, bytes_in: usize, telemetry: Option<Arc<Telemetry>>) -> Self {
        if let Some(t) = &telemetry {
            t.request_started();
        }
        RequestLog {
            started,
            permit: None,
            session: None,
            account: None,
            model: None,
            status: 0,
            bytes_in,
            bytes_out: 0,
            hops: 0,
            end: "client gone",
            ttfb: None,
            scan: None,
            fitted: None,
            provenance: None,
            telemetry,
        }
    }
}

impl RequestLog {
    /// Records which thinking blocks the answer produced (once): before its last event goes
    /// out, so the client's next request already finds them.
    fn record_produced(&mut self) {
        if let (Some(book), Some(session), Some(account), Some(scan)) = (
            self.provenance.take(),
            self.session.as_deref(),
            self.account.as_deref(),
            self.scan.as_ref(),
        ) {
            let now = self.telemetry.as_ref().map_or(0, |t| t.now_ms());
            book.record(session, account, &scan.produced(), now);
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let latency = self.started.elapsed();
        self.record_produced();
        let client = self.permit.as_ref().map(|p| p.name());
        let scanned = self.scan.take().map(UsageScan::finish).unwrap_or_default();
        if scanned.thinking_dropped > 0 {
            tracing::info!(
                target: "ccs::continuity",
                session = self.session.as_deref().unwrap_or("-"),
                account = self.account.as_deref().unwrap_or("-"),
                model = self.model.as_deref().unwrap_or("-"),
                blocks_dropped = scanned.thinking_dropped,
                "the API dropped thinking blocks of the history it would not read on this account"
            );
        }
        if let Some(t) = self.telemetry.take() {
            t.api_dropped(scanned.thinking_dropped);
            t.request_finished(
                RequestRecord {
                    // Stamped by the telemetry, only when someone watches the feed.
                    at: String::new(),
                    client: client.map(str::to_string),
                    session: self.session.clone(),
                    account: self.account.clone(),
                    model: self.model.clone(),
                    status: self.status,
                    latency_ms: latency.as_millis() as u64,
                    ttfb_ms: self.ttfb.map(|d| d.as_millis() as u64),
                    hops: self.hops,
                    end: self.end.to_string(),
                    tokens: scanned.tokens,
                    thinking_dropped: scanned.thinking_dropped,
                    fitted: self.fitted.as_ref().map(|f| crate::api::Fit {
                        blocks_removed: f.removed,
                        thinking_lowered: f.lowered,
                        after_400: f.after_400,
                    }),
                },
                latency,
                self.ttfb,
            );
        }
        tracing::info!(
            target: "ccs::request",
            client = client.unwrap_or("-"),
            session = self.session.as_deref().unwrap_or("-"),
            account = self.account.as_deref().unwrap_or("-"),
            model = self.model.as_deref().unwrap_or("-"),
            status = self.status,
            latency_ms = latency.as_millis() as u64,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            hops = self.hops,
            end = self.end,
            fitted_blocks = self.fitted.as_ref().map_or(0, |f| f.removed),
            thinking_lowered = self.fitted.as_ref().is_some_and(|f| f.lowered),
            api_dropped_blocks = scanned.thinking_dropped,
            "request"
        );
    }
}

/// What bounds a relay.
pub struct Bounds {
    /// Longest silence between two chunks.
    pub idle: Duration,
    /// Set to a deadline when the daemon starts stopping; the relay ends at it.
    pub draining: tokio::sync::watch::Receiver<Option<Instant>>,
    /// Turns true when the client key of the request is revoked; the relay ends then.
    pub revoked: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Completes once `rx` says the key is revoked (never without one).
async fn revoked(rx: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            if rx.wait_for(|r| *r).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Completes at the drain deadline, once there is one.
async fn drained(rx: &mut tokio::sync::watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        if let Some(d) = deadline {
            tokio::time::sleep_until(d.into()).await;
            return;
        }
        if rx.changed().await.is_err() {
            // The daemon is gone without draining: nothing will ever set a deadline.
            std::future::pending::<()>().await;
        }
    }
}

enum Next {
    Chunk(Bytes),
    End,
    Cut { why: &'static str, message: String },
}

struct State {
    upstream: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    bounds: Bounds,
    framer: Option<Framer>,
    log: RequestLog,
    done: bool,
}

impl State {
    async fn next(&mut self) -> Next {
        let idle = self.bounds.idle;
        tokio::select! {
            r = tokio::time::timeout(idle, self.upstream.next()) => match r {
                Ok(Some(Ok(b))) => Next::Chunk(b),
                Ok(None) => Next::End,
                Ok(Some(Err(e))) => Next::Cut {
                    why: "upstream broke",
                    message: format!("upstream connection lost mid-stream: {e}"),
                },
                Err(_) => Next::Cut {
                    why: "upstream silent",
                    message: format!(
                        "the upstream sent nothing for {} s (upstream.idle_timeout); the answer is incomplete",
                        idle.as_secs_f64()
                    ),
                },
            },
            _ = drained(&mut self.bounds.draining) => Next::Cut {
                why: "daemon stopping",
                message: "the ccs daemon is stopping; the answer is incomplete: retry the request".into(),
            },
            _ = revoked(&mut self.bounds.revoked) => Next::Cut {
                why: "key revoked",
                message: "this client key was revoked while the answer streamed; the answer is incomplete".into(),
            },
        }
    }
}

/// Relays `resp` to the client, chunk by chunk as it arrives.
pub fn relay(resp: reqwest::Response, bounds: Bounds, mut log: RequestLog) -> HttpResponse {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    log.status = status.as_u16();
    log.ttfb = Some(log.started.elapsed());
    let mut out = HttpResponse::build(status);
    for (k, v) in resp.headers() {
        if !DROP_RESPONSE.contains(&k.as_str()) {
            out.append_header((k.as_str(), v.as_bytes()));
        }
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    let sse = header("content-type").is_some_and(|c| c.starts_with("text/event-stream"));
    let plain = header("content-encoding").is_none_or(|e| e.eq_ignore_ascii_case("identity"));
    // Only an uncompressed event stream can be framed, and be told of a cut in its own terms.
    let framer = (sse && plain).then(Framer::default);
    let json = header("content-type").is_some_and(|c| c.starts_with("application/json"));
    let gzip = header("content-encoding").is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    log.scan = if sse && plain {
        Some(UsageScan::new(Shape::Events))
    } else if json && (plain || gzip) && status.is_success() {
        Some(UsageScan::new(Shape::Json { gzip }))
    } else {
        None
    };
    let state = State {
        upstream: resp.bytes_stream().boxed(),
        bounds,
        framer,
        log,
        done: false,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let out = match st.next().await {
                Next::Chunk(b) => match st.framer.as_mut() {
                    Some(f) => match f.push(b) {
                        Some(whole) => whole,
                        None => continue,
                    },
                    None => b,
                },
                Next::End => {
                    st.done = true;
                    st.log.end = "complete";
                    st.log.record_produced();
                    match st.framer.as_mut().and_then(Framer::finish) {
                        Some(rest) => rest,
                        None => return None,
                    }
                }
                Next::Cut { why, message } => {
                    st.done = true;
                    st.log.end = why;
                    tracing::warn!(why, %message, "answer cut short");
                    if st.framer.is_none() {
                        return Some((Err(std::io::Error::other(message)), st));
                    }
                    error_event("api_error", &message)
                }
            };
            st.log.bytes_out += out.len() as u64;
            if let Some(scan) = st.log.scan.as_mut() {
                scan.seen(&out);
                if memchr::memmem::find(&out, b"event: message_stop").is_some() {
                    st.log.record_produced();
                }
            }
            return Some((Ok::<_, std::io::Error>(out), st));
        }
    });
    out.streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_events_pass_and_a_clean_end_flushes_the_rest() {
        let mut f = Framer::default();
        let whole = Bytes::from_static(b"event: a\ndata: {}\n\n");
        assert_eq!(f.push(whole.clone()), Some(whole), "passed on as it is");
        assert_eq!(f.push(Bytes::from_static(b"event: b\nda")), None);
        assert_eq!(
            f.push(Bytes::from_static(b"ta: {}\n\nevent: c\n")),
            Some(Bytes::from_static(b"event: b\ndata: {}\n\n"))
        );
        assert_eq!(f.finish(), Some(Bytes::from_static(b"event: c\n")));
        assert_eq!(f.finish(), None);
        let mut crlf = Framer::default();
        assert_eq!(
            crlf.push(Bytes::from_static(b"data: 1\r\n\r\ndata: 2")),
            Some(Bytes::from_static(b"data: 1\r\n\r\n"))
        );
    }

    #[test]
    fn boundaries_are_found_at_the_last_blank_line() {
        assert_eq!(last_boundary(b"a\n\nb\n\nc"), Some(6));
        assert_eq!(last_boundary(b"a\nb\n"), None);
        assert_eq!(last_boundary(b"\n\n"), Some(2));
        assert_eq!(last_boundary(b"x\r\n\r\n"), Some(5));
    }
}
