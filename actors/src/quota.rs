//! The quota machine: folds Anthropic's unified rate-limit headers (and usage-endpoint bodies)
//! into per-window state, and answers whether an account may take a request at `now`.
//!
//! Pure: no I/O, no clock reads. Header names and meanings: specs/anthropic.md §3.
//! Must not: trust a reset in the past or more than eight days ahead, or bench an account on a
//! request-scoped 429 (`x-should-retry: true` without unified headers).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::clock::Timestamp;
use crate::planted::{on, Bug};

/// Resets further ahead than this are nonsense (the longest window is seven days).
pub const MAX_RESET_AHEAD: Duration = Duration::from_secs(8 * 24 * 3600);
/// First backoff after a 429 that gives no usable reset.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest backoff after repeated 429s without a usable reset.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30 * 60);

/// The header names of one window: status, utilization, reset (spelled out, so folding a
/// response allocates nothing).
struct WindowHeaders {
    status: &'static str,
    utilization: &'static str,
    reset: &'static str,
}

const H_5H: WindowHeaders = WindowHeaders {
    status: "anthropic-ratelimit-unified-5h-status",
    utilization: "anthropic-ratelimit-unified-5h-utilization",
    reset: "anthropic-ratelimit-unified-5h-reset",
};
const H_7D: WindowHeaders = WindowHeaders {
    status: "anthropic-ratelimit-unified-7d-status",
    utilization: "anthropic-ratelimit-unified-7d-utilization",
    reset: "anthropic-ratelimit-unified-7d-reset",
};
const H_7D_OI: WindowHeaders = WindowHeaders {
    status: "anthropic-ratelimit-unified-7d_oi-status",
    utilization: "anthropic-ratelimit-unified-7d_oi-utilization",
    reset: "anthropic-ratelimit-unified-7d_oi-reset",
};
const H_STATUS: &str = "anthropic-ratelimit-unified-status";
const H_RESET: &str = "anthropic-ratelimit-unified-reset";
const H_CLAIM: &str = "anthropic-ratelimit-unified-representative-claim";

/// The model family a per-model weekly window limits. The `7d_oi` header window limits Opus
/// (specs/anthropic.md §3: "a per-model weekly window"); the usage endpoint names its families.
pub const OI_FAMILY: &str = "opus";

/// A response header lookup, so this module needs no HTTP types. Names are lower-case.
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl Headers for BTreeMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// The model family of a model name (`claude-opus-4-1` → `opus`), for per-model windows.
pub fn family_of(model: &str) -> Option<&'static str> {
    let m = model.to_ascii_lowercase();
    ["opus", "sonnet", "haiku"]
        .into_iter()
        .find(|f| m.contains(f))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Unknown,
    Allowed,
    AllowedWarning,
    Rejected,
}

impl Status {
    fn parse(s: &str) -> Status {
        match s.trim() {
            "allowed" => Status::Allowed,
            "allowed_warning" => Status::AllowedWarning,
            // Peers have seen these too; all of them mean "this window takes nothing now".
            "rejected" | "rate_limited" | "blocked" | "payment_required" => Status::Rejected,
            _ => Status::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Allowed => "allowed",
            Status::AllowedWarning => "allowed_warning",
            Status::Rejected => "rejected",
        }
    }
}

/// One rate-limit window as last seen.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Window {
    pub status: Status,
    /// Used fraction, 0..1 (may exceed 1).
    pub utilization: f64,
    /// When the window resets; only ever a validated (future, ≤ 8 days) time.
    pub resets_at: Option<Timestamp>,
    /// When this window was last observed.
    pub seen_at: Option<Timestamp>,
}

impl Window {
    /// Until when this window blocks requests, if it does at `now`.
    fn blocks_until(&self, now: Timestamp) -> Option<Timestamp> {
        let reset = self.resets_at?;
        // Planted bug (I8): the bench outlives the window by two minutes.
        let reset = reset.plus(Duration::from_secs(on(Bug::BenchPastReset) as u64 * 120));
        (self.status == Status::Rejected && reset > now).then_some(reset)
    }

    /// Utilization at `now`: zero once the window has reset.
    pub fn utilization_at(&self, now: Timestamp) -> f64 {
        match self.resets_at {
            Some(reset) if reset <= now => 0.0,
            _ => self.utilization,
        }
    }
}

/// Everything known about one account's quota.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Quota {
    pub five_hour: Window,
    pub seven_day: Window,
    /// Per-model weekly windows, by family (`opus`, `sonnet`).
    pub families: BTreeMap<String, Window>,
    /// Benched after 429s that gave no usable reset.
    pub backoff_until: Option<Timestamp>,
    /// How many such 429s in a row; reset by any success.
    pub backoff_step: u32,
}

/// What one response taught us, for the caller's logs and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing limits the account.
    Ok,
    /// A window was rejected: benched until its reset.
    Limited { until: Timestamp },
    /// A 429 without a usable reset: benched for an exponential backoff.
    BackedOff { until: Timestamp },
    /// A request-scoped 429 (`x-should-retry`): retry, bench nobody.
    RetryRequest,
}

fn valid_reset(reset: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    reset.filter(|r| *r > now && *r <= now.plus(MAX_RESET_AHEAD))
}

fn parse_unix(v: Option<&str>) -> Option<Timestamp> {
    let v = v?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Timestamp::from_secs(secs));
    }
    let secs = v
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)?;
    Some(Timestamp::from_millis((secs * 1000.0) as u64))
}

fn parse_fraction(v: Option<&str>) -> Option<f64> {
    v?.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
}

/// `retry-after` as seconds or an HTTP date.
fn parse_retry_after(v: Option<&str>, now: Timestamp) -> Option<Timestamp> {
    let v = v?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(now.plus(Duration::from_secs(secs)));
    }
    let date = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    u64::try_from(date.timestamp())
        .ok()
        .map(Timestamp::from_secs)
}

impl Quota {
    /// Whether the account is limited for `family` at `now` only by a backoff after a 429 that
    /// named no reset: a guess, worth one probe before a client is refused (routing R10).
    pub fn limited_by_guess(&self, now: Timestamp, family: Option<&str>) -> bool {
        let family_window = family.and_then(|f| self.families.get(f));
        self.backoff_until.is_some_and(|t| t > now)
            && self.five_hour.blocks_until(now).is_none()
            && self.seven_day.blocks_until(now).is_none()
            && family_window.and_then(|w| w.blocks_until(now)).is_none()
    }

    /// Until when the account can take no request for `family` at `now` (`None`: it can).
    /// Never returns a time at or before `now`.
    pub fn limited_until(&self, now: Timestamp, family: Option<&str>) -> Option<Timestamp> {
        let family_window = family.and_then(|f| self.families.get(f));
        [
            self.five_hour.blocks_until(now),
            self.seven_day.blocks_until(now),
            family_window.and_then(|w| w.blocks_until(now)),
            self.backoff_until.filter(|t| *t > now),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// Until when a rejected window (with its announced reset) benches the account at `now`,
    /// for any model: what the usage endpoint can lift early. A backoff after a 429 that named
    /// no reset is not one of them.
    pub fn window_bench_until(&self, now: Timestamp) -> Option<Timestamp> {
        [&self.five_hour, &self.seven_day]
            .into_iter()
            .chain(self.families.values())
            .filter_map(|w| w.blocks_until(now))
            .max()
    }

    /// The state without the figures every response moves (utilization, when last seen): what
    /// must survive a restart at once. The rest is written down now and then.
    pub fn limits(&self) -> Quota {
        let strip = |w: &Window| Window {
            utilization: 0.0,
            seen_at: None,
            ..*w
        };
        Quota {
            five_hour: strip(&self.five_hour),
            seven_day: strip(&self.seven_day),
            families: self
                .families
                .iter()
                .map(|(k, w)| (k.clone(), strip(w)))
                .collect(),
            backoff_until: self.backoff_until,
            backoff_step: self.backoff_step,
        }
    }

    pub fn available(&self, now: Timestamp, family: Option<&str>) -> bool {
        self.limited_until(now, family).is_none()
    }

    /// Folds one Messages API response (any status) into the state.
    pub fn observe<H: Headers + ?Sized>(&mut self, status: u16, h: &H, now: Timestamp) -> Verdict {
        let mut any_unified = false;
        let mut read = |names: &WindowHeaders, w: &mut Window| {
            let st = h.header(names.status);
            let util = h.header(names.utilization);
            let reset = h.header(names.reset);
            if st.is_none() && util.is_none() && reset.is_none() {
                return false;
            }
            any_unified = true;
            if let Some(st) = st {
                w.status = Status::parse(st);
            }
            if let Some(u) = parse_fraction(util) {
                w.utilization = u;
            }
            w.resets_at = valid_reset(parse_unix(reset), now);
            w.seen_at = Some(now);
            true
        };
        read(&H_5H, &mut self.five_hour);
        read(&H_7D, &mut self.seven_day);
        let mut oi = self.families.get(OI_FAMILY).copied().unwrap_or_default();
        if read(&H_7D_OI, &mut oi) {
            self.families.insert(OI_FAMILY.to_string(), oi);
        }

        // The overall headers name the binding window; use its reset where the window's own
        // header is missing.
        let overall = h.header(H_STATUS).map(Status::parse);
        let overall_reset = valid_reset(parse_unix(h.header(H_RESET)), now);
        if overall.is_some() || overall_reset.is_some() {
            any_unified = true;
        }
        if overall == Some(Status::Rejected) {
            let claim = h.header(H_CLAIM);
            let w = match claim.map(str::trim) {
                Some("seven_day") => Some(&mut self.seven_day),
                Some("five_hour") => Some(&mut self.five_hour),
                Some("seven_day_opus") | Some("seven_day_oi") => self.families.get_mut(OI_FAMILY),
                _ => None,
            };
            if let Some(w) = w {
                w.status = Status::Rejected;
                if w.resets_at.is_none() {
                    w.resets_at = overall_reset;
                }
                w.seen_at = Some(now);
            }
        }

        let rejected_until = [&self.five_hour, &self.seven_day]
            .into_iter()
            .chain(self.families.values())
            .filter(|w| w.seen_at == Some(now))
            .filter_map(|w| w.blocks_until(now))
            .max();

        if status == 429 {
            if let Some(until) = rejected_until {
                return Verdict::Limited { until };
            }
            let should_retry = h
                .header("x-should-retry")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            if should_retry && !any_unified {
                return Verdict::RetryRequest;
            }
            self.backoff_step = self.backoff_step.saturating_add(1);
            let shift = (self.backoff_step - 1).min(16);
            let mut wait = BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_CAP);
            if let Some(ra) = parse_retry_after(h.header("retry-after"), now) {
                wait = wait.max(ra.since(now)).min(BACKOFF_CAP);
            }
            let until = now.plus(wait);
            self.backoff_until = Some(until);
            return Verdict::BackedOff { until };
        }

        if (200..300).contains(&status) {
            self.backoff_step = 0;
            self.backoff_until = None;
        }
        match rejected_until {
            Some(until) => Verdict::Limited { until },
            None => Verdict::Ok,
        }
    }

    /// Folds a body of `GET /api/oauth/usage` (percent utilization, ISO resets).
    pub fn observe_usage(&mut self, body: &UsageBody, now: Timestamp) {
        let fold = |w: &mut Window, u: &UsageWindow| {
            w.utilization = u.utilization.unwrap_or(0.0).max(0.0) / 100.0;
            w.resets_at = valid_reset(u.resets_at.as_deref().and_then(parse_iso), now);
            w.status = if w.utilization >= 1.0 && w.resets_at.is_some() {
                Status::Rejected
            } else if w.status == Status::Rejected {
                // The usage endpoint says there is room again.
                Status::Allowed
            } else {
                w.status
            };
            w.seen_at = Some(now);
        };
        if let Some(u) = &body.five_hour {
            fold(&mut self.five_hour, u);
        }
        if let Some(u) = &body.seven_day {
            fold(&mut self.seven_day, u);
        }
        for (family, u) in [
            ("opus", &body.seven_day_opus),
            ("sonnet", &body.seven_day_sonnet),
        ] {
            if let Some(u) = u {
                fold(self.families.entry(family.to_string()).or_default(), u);
            }
        }
    }
}

fn parse_iso(s: &str) -> Option<Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
    u64::try_from(t.timestamp_millis())
        .ok()
        .map(Timestamp::from_millis)
}

/// The body of the usage endpoint (specs/anthropic.md §3). Unknown fields are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UsageBody {
    pub five_hour: Option<UsageWindow>,
    pub seven_day: Option<UsageWindow>,
    pub seven_day_opus: Option<UsageWindow>,
    pub seven_day_sonnet: Option<UsageWindow>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct UsageWindow {
    /// Percent, 0..100 (the headers use a fraction).
    pub utilization: Option<f64>,
    pub resets_at: Option<String>,
}
