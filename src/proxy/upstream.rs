//! The daemon's client to the Messages API: one per HTTP worker, built as the worker starts
//! and kept in its app data, so a request, its upstream connection and the relay of its
//! answer stay on one thread (a connection's task runs on the thread that opened it; a client
//! shared by the workers let every frame of a stream cross threads, a wake-up each way).
//!
//! HTTP/2 where the upstream offers it (ALPN; Anthropic's API does): a worker's requests then
//! share one connection. HTTP/1.1 otherwise, with a keep-alive pool of up to
//! `MAX_IDLE_PER_HOST` idle connections per worker. With `upstream.warm`, each worker opens
//! its connection as it starts (`warm`), so the first turn does not pay the TCP and TLS
//! handshakes.
//!
//! Must not: send a credential or a body before a client asked for it (`warm` sends a bare
//! `HEAD` of the base URL), or fail the daemon's start for an upstream that is down.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Upstream as UpstreamConfig;

/// Idle keep-alive connections kept per worker (HTTP/1.1; one HTTP/2 connection carries them
/// all). Above the 64 requests at once the load benchmark drives, so none is closed and
/// reopened under that load.
const MAX_IDLE_PER_HOST: usize = 128;

/// A worker's client to the upstream (cheap to clone: a reference-counted handle).
#[derive(Clone)]
pub struct UpstreamClient(pub reqwest::Client);

/// The certificates trusted for the upstream besides the built-in roots (`upstream.ca_cert`),
/// read once at start and shared by every worker's client.
#[derive(Clone, Default)]
pub struct UpstreamTrust(Vec<reqwest::Certificate>);

impl UpstreamTrust {
    /// `cfg.ca_cert` (relative to `home`), when set; an error names the file.
    pub fn load(cfg: &UpstreamConfig, home: &Path) -> Result<UpstreamTrust> {
        let Some(ca) = &cfg.ca_cert else {
            return Ok(UpstreamTrust::default());
        };
        let path = home.join(ca);
        let pem = std::fs::read(&path)
            .with_context(|| format!("upstream.ca_cert: cannot read {}", path.display()))?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => Ok(UpstreamTrust(certs)),
            _ => anyhow::bail!(
                "upstream.ca_cert: {} holds no PEM certificate",
                path.display()
            ),
        }
    }
}

impl UpstreamClient {
    /// A client for the upstream, trusting `trust` besides the built-in roots.
    pub fn new(trust: &UpstreamTrust) -> Result<UpstreamClient> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            // Streams stay open for minutes; pings keep an idle HTTP/2 connection honest.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .http2_adaptive_window(true);
        for c in &trust.0 {
            b = b.add_root_certificate(c.clone());
        }
        Ok(UpstreamClient(b.build().context("the upstream client")?))
    }

    /// Opens a connection to `base` (a `HEAD` of it, no credential) and returns it to the
    /// pool. Whatever the upstream answers is fine; a failure is only logged: the first request
    /// then connects as it would have anyway.
    pub async fn warm(&self, base: &str) {
        match self.0.head(base).send().await {
            Ok(r) => {
                tracing::debug!(status = r.status().as_u16(), version = ?r.version(), "upstream connection warmed")
            }
            Err(e) => {
                tracing::info!(error = %e, "could not open a connection to the upstream ahead of the first request")
            }
        }
    }
}
