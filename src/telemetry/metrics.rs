//! `/metrics`: the daemon's figures in Prometheus' text format. Counters and histograms are
//! fed as things happen (requests, hops, refreshes, store flushes); the per-account gauges
//! (lifecycle state, quota) are set from the supervisor's snapshot at each scrape, so an
//! account that is gone stops being reported.
//!
//! Must not: put a secret or a session id in a label.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub account: String,
    pub status: u16,
    pub model: String,
    /// The client key's name.
    pub client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub account: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowLabels {
    pub account: String,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub account: String,
    pub model: String,
    pub client: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub hops: Family<ReasonLabels, Counter>,
    pub refreshes: Family<OutcomeLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub state: Family<StateLabels, Gauge>,
    pub utilization: Family<WindowLabels, Gauge<f64, AtomicU64>>,
    pub resets_at: Family<WindowLabels, Gauge>,
    pub runway: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub latency: Histogram,
    pub ttfb: Histogram,
    pub in_flight: Gauge,
    /// Requests whose history was fitted to their account (specs/continuity.md), and the
    /// thinking blocks removed from them.
    pub fits: Counter,
    pub fits_after_400: Counter,
    pub blocks_removed: Counter,
    /// Thinking blocks the API itself dropped, as answers' `input_transformations` said.
    pub api_dropped: Counter,
    /// Benches lifted because the usage endpoint said the window had room before its reset.
    pub came_back: Counter,
}

impl Metrics {
    pub fn new(store_flush: Histogram) -> Self {
        let mut registry = Registry::with_prefix("ccs");
        let m = Metrics {
            requests: Family::default(),
            hops: Family::default(),
            refreshes: Family::default(),
            tokens: Family::default(),
            state: Family::default(),
            utilization: Family::default(),
            resets_at: Family::default(),
            runway: Family::default(),
            latency: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            ttfb: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            in_flight: Gauge::default(),
            fits: Counter::default(),
            fits_after_400: Counter::default(),
            blocks_removed: Counter::default(),
            api_dropped: Counter::default(),
            came_back: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Proxied requests by account, status, model and client key",
            m.requests.clone(),
        );
        registry.register(
            "hops",
            "Conversations moved to another account, by reason",
            m.hops.clone(),
        );
        registry.register(
            "refreshes",
            "Token refresh calls by outcome (ok, fatal, transient, unknown)",
            m.refreshes.clone(),
        );
        registry.register(
            "tokens",
            "Tokens named in the usage of answers, by account, model, client key and kind",
            m.tokens.clone(),
        );
        registry.register(
            "account_state",
            "1 for each account's current token lifecycle state",
            m.state.clone(),
        );
        registry.register(
            "quota_utilization",
            "Share of each quota window used (0 to 1)",
            m.utilization.clone(),
        );
        registry.register(
            "quota_resets_at_seconds",
            "When each quota window resets (Unix seconds)",
            m.resets_at.clone(),
        );
        registry.register_with_unit(
            "pool_runway",
            "Until each pool runs dry at the last hour's pace (+Inf: it does not)",
            prometheus_client::registry::Unit::Seconds,
            m.runway.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Whole proxied request, from its body read to its answer's end",
            prometheus_client::registry::Unit::Seconds,
            m.latency.clone(),
        );
        registry.register_with_unit(
            "upstream_first_byte",
            "From the request's body read to the upstream answer's headers",
            prometheus_client::registry::Unit::Seconds,
            m.ttfb.clone(),
        );
        registry.register(
            "continuity_fits",
            "Requests whose history lost thinking blocks another account produced, on a move",
            m.fits.clone(),
        );
        registry.register(
            "continuity_fits_after_400",
            "Of those, fitted only after the account refused the request with a 400",
            m.fits_after_400.clone(),
        );
        registry.register(
            "continuity_blocks_removed",
            "Thinking blocks removed from fitted requests",
            m.blocks_removed.clone(),
        );
        registry.register(
            "continuity_api_dropped_blocks",
            "Thinking blocks the API dropped instead of reading (the answers' input_transformations)",
            m.api_dropped.clone(),
        );
        registry.register(
            "quota_came_back_early",
            "Accounts whose window the usage endpoint said was open again before its announced reset",
            m.came_back.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being proxied now",
            m.in_flight.clone(),
        );
        registry.register_with_unit(
            "store_flush",
            "Token writer group-commit flushes",
            prometheus_client::registry::Unit::Seconds,
            store_flush,
        );
        Metrics { registry, ..m }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
