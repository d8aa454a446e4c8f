//! Time, passed in. Owns the `Timestamp` type and the two clocks: the system clock for the
//! daemon and a manual clock for tests and simulations.
//!
//! Nothing else in this crate may read the time: every machine takes `now` as an argument and
//! every actor asks its `Clock`. Must not: block, or sleep on a manual clock in real time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A point in wall-clock time: milliseconds since the Unix epoch.
///
/// Wall-clock (not monotonic) because every deadline we track comes from outside in wall-clock
/// terms: token expiry (`expiry_date`, ms) and rate-limit resets (unix seconds).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    /// RFC 3339 in UTC, to the second (`2026-12-04T21:08:15Z`): how the token files, the logs
    /// and the usage endpoint write a time.
    pub fn rfc3339(self) -> String {
        i64::try_from(self.0)
            .ok()
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self + d`, saturating at the far future.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_ms(d)))
    }

    /// `self - d`, saturating at the epoch.
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_ms(d)))
    }

    /// How long from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}ms", self.0)
    }
}

/// A future that completes once the clock has reached a deadline.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The only way code in this crate learns the time or waits for it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> Timestamp;

    /// Completes when `now() >= at`. Robust to the wall clock jumping (laptop sleep): the
    /// deadline is judged against `now()`, never against elapsed monotonic time alone.
    fn sleep_until(&self, at: Timestamp) -> Sleep;
}

/// A shareable clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock of the machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Longest single real sleep before the system clock looks at the wall clock again, so that a
/// suspended laptop does not oversleep a deadline by the length of its nap.
const SYSTEM_RECHECK: Duration = Duration::from_secs(30);

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(duration_ms(since_epoch))
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let clock = *self;
        Box::pin(async move {
            loop {
                let now = clock.now();
                if now >= at {
                    return;
                }
                tokio::time::sleep(at.since(now).min(SYSTEM_RECHECK)).await;
            }
        })
    }
}

/// A clock that moves only when told to. Sleepers wake as soon as `advance`/`set` passes their
/// deadline, so simulated hours take no real time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
    /// Ticks whenever the time changes, so sleepers can re-check their deadline.
    changed: Arc<watch::Sender<u64>>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        let (tx, _rx) = watch::channel(start.0);
        ManualClock {
            now: Arc::new(AtomicU64::new(start.0)),
            changed: Arc::new(tx),
        }
    }

    /// Moves the clock forward by `d` and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, d: Duration) {
        let ms = duration_ms(d);
        let new = self.now.fetch_add(ms, Ordering::SeqCst).saturating_add(ms);
        self.changed.send_replace(new);
    }

    /// Sets the clock to `t` (backwards too, to simulate a clock correction).
    pub fn set(&self, t: Timestamp) {
        self.now.store(t.0, Ordering::SeqCst);
        self.changed.send_replace(t.0);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut rx = self.changed.subscribe();
        let now = self.now.clone();
        Box::pin(async move {
            while now.load(Ordering::SeqCst) < at.0 {
                if rx.changed().await.is_err() {
                    // The clock is gone: nothing will ever advance it, so never wake.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(10);
        assert_eq!(t.plus(Duration::from_millis(5)).as_millis(), 10_005);
        assert_eq!(t.minus(Duration::from_secs(20)), Timestamp::EPOCH);
        assert_eq!(t.since(Timestamp::from_secs(4)), Duration::from_secs(6));
        assert_eq!(t.since(Timestamp::from_secs(40)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_millis(u64::MAX - 1).plus(Duration::from_secs(1)),
            Timestamp::from_millis(u64::MAX)
        );
    }

    #[tokio::test]
    async fn manual_sleep_wakes_only_when_advanced_past_deadline() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        let deadline = Timestamp::from_secs(160);
        let sleeper = tokio::spawn(clock.sleep_until(deadline));
        clock.advance(Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        clock.advance(Duration::from_secs(30));
        sleeper.await.expect("sleeper task");
        assert_eq!(clock.now(), deadline);
    }

    #[tokio::test]
    async fn manual_sleep_in_the_past_returns_at_once() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        clock.sleep_until(Timestamp::from_secs(50)).await;
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > Timestamp::from_secs(1_577_836_800));
    }
}

/// A duration as people write one: seconds (`300`) or with a unit (`300s`, `5m`, `1h`,
/// `250ms`, `2d`). What config.yaml and the simulator's scenarios read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Why a `Span` does not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("{0:?} is not a duration (try 300, 300s, 5m or 1h)")]
    NotADuration(String),
    #[error("unknown unit {unit:?} in {value:?} (use ms, s, m, h or d)")]
    Unit { unit: String, value: String },
}

impl Span {
    pub fn parse(s: &str) -> Result<Span, SpanError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| SpanError::NotADuration(s.to_string()))?;
        let d = match unit.trim() {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86_400),
            u => {
                return Err(SpanError::Unit {
                    unit: u.to_string(),
                    value: s.to_string(),
                })
            }
        };
        Ok(Span(d))
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Span(Duration::from_secs(n))),
            Raw::Text(t) => Span::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}
