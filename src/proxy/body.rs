//! Reading a client's request body: within `cliproxy.body_limit` bytes, within
//! `cliproxy.body_timeout`, and within the daemon-wide `cliproxy.bodies_in_flight` budget, so
//! that neither slow clients nor many large bodies at once can hold the daemon's memory.
//!
//! Must not: read a byte before the client key was checked (the caller's duty), or hold budget
//! after the request is done (the `Held` guard gives it back when dropped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::anthropic_error;

/// Bytes of request bodies held at once, over every request of the daemon.
pub struct Budget {
    held: AtomicU64,
    cap: u64,
}

/// A share of the budget; given back when dropped.
pub struct Held<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    pub fn new(cap: u64) -> Self {
        Budget {
            held: AtomicU64::new(0),
            cap,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(n).filter(|t| *t <= self.cap)
            })
            .is_ok()
    }

    /// `n` bytes of the budget, if they fit.
    pub fn reserve(&self, n: u64) -> Option<Held<'_>> {
        // Built only when taken: a `Held` gives its bytes back when dropped.
        self.take(n).then(|| Held {
            budget: self,
            bytes: n,
        })
    }
}

impl Held<'_> {
    /// Grows the share to `total` bytes, if that fits.
    fn grow_to(&mut self, total: u64) -> bool {
        if total <= self.bytes {
            return true;
        }
        let more = total - self.bytes;
        if self.budget.take(more) {
            self.bytes = total;
            true
        } else {
            false
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
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

fn over_budget(budget: &Budget) -> HttpResponse {
    let mut r = anthropic_error(
        503,
        "overloaded_error",
        &format!(
            "the proxy already holds {} MiB of request bodies, its limit \
             (cliproxy.bodies_in_flight = {} MiB): retry in a few seconds",
            budget.held() >> 20,
            budget.cap >> 20
        ),
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

fn too_slow(timeout: Duration) -> HttpResponse {
    anthropic_error(
        408,
        "timeout_error",
        &format!(
            "the request body did not arrive within {} s (cliproxy.body_timeout)",
            timeout.as_secs_f64()
        ),
    )
}

/// What bounds a body.
pub struct Limits<'a> {
    /// Largest body.
    pub limit: usize,
    /// Longest time to receive it.
    pub timeout: Duration,
    pub budget: &'a Budget,
}

/// Reads the whole request body into one buffer (sized from `content-length` up front, so a
/// large body is not copied while it grows), holding its share of the budget.
pub async fn read<'a>(
    req: &HttpRequest,
    mut payload: web::Payload,
    l: Limits<'a>,
) -> Result<(Bytes, Held<'a>), HttpResponse> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > l.limit) {
        return Err(too_large(l.limit));
    }
    let Some(mut held) = l.budget.reserve(declared.unwrap_or(0) as u64) else {
        return Err(over_budget(l.budget));
    };
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 << 10));
    let reading = async {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                anthropic_error(
                    400,
                    "invalid_request_error",
                    &format!("could not read the request body: {e}"),
                )
            })?;
            if buf.len() + chunk.len() > l.limit {
                return Err(too_large(l.limit));
            }
            if !held.grow_to((buf.len() + chunk.len()) as u64) {
                return Err(over_budget(l.budget));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(l.timeout, reading).await {
        Ok(Ok(())) => Ok((buf.freeze(), held)),
        Ok(Err(r)) => Err(r),
        Err(_) => Err(too_slow(l.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_bounded_and_given_back() {
        let b = Budget::new(100);
        let a = b.reserve(60).expect("fits");
        assert!(b.reserve(50).is_none(), "60 + 50 > 100");
        let mut c = b.reserve(30).expect("fits");
        assert!(!c.grow_to(50), "60 + 50 > 100");
        assert!(c.grow_to(40));
        assert_eq!(b.held(), 100);
        drop(a);
        assert_eq!(b.held(), 40);
        drop(c);
        assert_eq!(b.held(), 0);
    }
}
