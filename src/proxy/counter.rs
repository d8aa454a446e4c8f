//! Counts per minute over the last hour, in a fixed ring of 60 buckets: the memory it takes is
//! the same after ten requests or ten million.
//!
//! Must not: keep anything per request.

use std::sync::Mutex;

use ccs_actors::Timestamp;

const MINUTES: usize = 60;

/// A count per minute, for the last hour.
pub struct PerMinute {
    /// `(minute since the epoch, count)`, at index `minute % 60`.
    ring: Mutex<[(u64, u64); MINUTES]>,
}

impl Default for PerMinute {
    fn default() -> Self {
        PerMinute {
            ring: Mutex::new([(0, 0); MINUTES]),
        }
    }
}

fn minute(t: Timestamp) -> u64 {
    t.as_millis() / 60_000
}

impl PerMinute {
    pub fn add(&self, now: Timestamp, n: u64) {
        let m = minute(now);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut ring[(m % MINUTES as u64) as usize];
        if slot.0 != m {
            *slot = (m, 0);
        }
        slot.1 += n;
    }

    /// The buckets that hold a count, to keep across a restart.
    pub fn snapshot(&self) -> Vec<(u64, u64)> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().copied().filter(|(_, n)| *n > 0).collect()
    }

    /// Adds buckets kept from before a restart.
    pub fn restore(&self, buckets: &[(u64, u64)]) {
        for (m, n) in buckets {
            self.add(Timestamp::from_millis(m * 60_000), *n);
        }
    }

    /// The count of the 60 minutes up to and including the current one.
    pub fn last_hour(&self, now: Timestamp) -> u64 {
        let m = minute(now);
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .filter(|(at, _)| *at <= m && m - *at < MINUTES as u64)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: u64, sec: u64) -> Timestamp {
        Timestamp::from_millis((min * 60 + sec) * 1000)
    }

    #[test]
    fn counts_the_last_hour_and_forgets_older_minutes() {
        let c = PerMinute::default();
        c.add(at(1000, 5), 3);
        c.add(at(1000, 59), 1);
        c.add(at(1030, 0), 10);
        assert_eq!(c.last_hour(at(1030, 1)), 14);
        assert_eq!(c.last_hour(at(1059, 59)), 14, "minute 1000 is still inside");
        assert_eq!(
            c.last_hour(at(1060, 0)),
            10,
            "minute 1000 has left the hour"
        );
        // A bucket reused an hour later starts from zero.
        c.add(at(1060, 1), 2);
        assert_eq!(c.last_hour(at(1060, 2)), 12);
        assert_eq!(c.last_hour(at(1200, 0)), 0);
    }

    #[test]
    fn a_sliding_hour_over_many_minutes() {
        let c = PerMinute::default();
        for i in 0..1_000_000u64 {
            c.add(at(5000 + i / 10_000, 0), 1);
        }
        // 100 minutes of 10,000 each: the last 60 are counted.
        assert_eq!(c.last_hour(at(5099, 30)), 600_000);
    }
}
