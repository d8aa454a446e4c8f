//! Runway: when, at the pace of the last hour, a pool runs dry, and what the next reset frees.
//! Pure: the daemon samples its accounts' quota into a `BurnMeter` once a minute and asks
//! `forecast` when someone looks (`ccs cliproxy quota`, status, the dashboard, the status line,
//! `/metrics`).
//!
//! The model (`specs/runway.md`): the pool serves requests at the rate measured over the last
//! hour, and each request costs an account the share of its windows it was seen to cost
//! (measured per account over the meter's day; the pool's average for an account not seen
//! serving yet). Fill-first, as routing does: the first account with room takes the requests
//! until a window of it is spent; a window that resets is empty again, and a window with no
//! reset known starts when the account is first used. The pool is dry when no account has
//! room.
//!
//! Must not: read the clock, or forecast from less than `MIN_SPAN` of samples (or the span
//! the meter was made with).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::lifecycle::Phase;
use crate::quota::Quota;
use crate::routing::AccountId;
use crate::supervisor::SupervisorView;
use crate::Timestamp;

const FIVE_HOURS: Duration = Duration::from_secs(5 * 3600);
const SEVEN_DAYS: Duration = Duration::from_secs(7 * 24 * 3600);

/// The burn rate is the average over this much of the latest samples.
pub const RATE_SPAN: Duration = Duration::from_secs(3600);

/// Less history than this gives no forecast.
pub const MIN_SPAN: Duration = Duration::from_secs(5 * 60);

/// How far ahead a forecast looks; a pool that lasts past it "does not run dry".
pub const HORIZON: Duration = SEVEN_DAYS;

/// The weekly-to-5-hour ratio is learned over this much history.
const RATIO_SPAN: Duration = Duration::from_secs(24 * 3600);

/// One window of an account, now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowNow {
    /// Used fraction, 0..1.
    pub used: f64,
    pub resets_at: Option<Timestamp>,
}

impl WindowNow {
    fn of(w: &crate::quota::Window, now: Timestamp) -> WindowNow {
        WindowNow {
            used: w.utilization_at(now).clamp(0.0, 1.0),
            resets_at: w.resets_at.filter(|r| *r > now),
        }
    }
}

/// What one request costs an account: the share of each window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub five: f64,
    pub week: f64,
}

/// One account of the pool, in drain order.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub id: AccountId,
    pub five: WindowNow,
    pub week: WindowNow,
    /// Takes requests at all (not dead, not paused).
    pub usable: bool,
    /// What a request costs it (`None`: not measured; the pool's average is used).
    pub cost: Option<Cost>,
}

impl Member {
    pub fn of(id: AccountId, q: &Quota, usable: bool, now: Timestamp) -> Member {
        let mut m = Member {
            id,
            five: WindowNow::of(&q.five_hour, now),
            week: WindowNow::of(&q.seven_day, now),
            usable,
            cost: None,
        };
        // A rejected window is spent whatever its last utilization said.
        if q.five_hour.resets_at.is_some_and(|r| r > now)
            && q.five_hour.status == crate::quota::Status::Rejected
        {
            m.five.used = 1.0;
        }
        if q.seven_day.resets_at.is_some_and(|r| r > now)
            && q.seven_day.status == crate::quota::Status::Rejected
        {
            m.week.used = 1.0;
        }
        m
    }
}

/// How fast a pool spends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burn {
    /// Requests served per hour, over the whole pool.
    pub requests_per_hour: f64,
    /// What a request costs an account whose own cost is not measured (`None`: nothing
    /// measured at all).
    pub average: Option<Cost>,
}

/// Which window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    FiveHour,
    Weekly,
}

/// The first account to have room again once the pool is dry.
#[derive(Clone, Debug, PartialEq)]
pub struct Freed {
    pub account: AccountId,
    pub at: Timestamp,
    /// The window whose reset frees it (the later one when both were spent).
    pub window: Which,
    /// How much of its 5-hour window it then has: 1.0 unless its weekly window binds first.
    pub frees: f64,
}

/// What a forecast says.
#[derive(Clone, Debug, PartialEq)]
pub enum Runway {
    /// Less than `MIN_SPAN` of samples.
    Unknown,
    /// Nothing was spent over the last hour: at this pace it never runs dry.
    Idle,
    /// The resets keep up with the burn: dry at no time within `HORIZON`.
    Lasts,
    /// Dry at `at` (now, when every account is already limited).
    DryAt { at: Timestamp, freed: Option<Freed> },
}

#[derive(Clone, Copy, Debug)]
struct State {
    five: WindowNow,
    week: WindowNow,
    usable: bool,
    cost: Option<Cost>,
}

impl State {
    fn roll(&mut self, t: Timestamp) {
        for w in [&mut self.five, &mut self.week] {
            if w.resets_at.is_some_and(|r| r <= t) {
                *w = WindowNow {
                    used: 0.0,
                    resets_at: None,
                };
            }
        }
    }

    fn room(&self) -> bool {
        self.usable && self.five.used < 1.0 - 1e-9 && self.week.used < 1.0 - 1e-9
    }

    /// When a spent account has room again, by which window, and how much.
    fn freed(&self) -> Option<(Timestamp, Which, f64)> {
        if !self.usable {
            return None;
        }
        let five = (self.five.used >= 1.0 - 1e-9).then_some(self.five.resets_at);
        let week = (self.week.used >= 1.0 - 1e-9).then_some(self.week.resets_at);
        match (five, week) {
            (Some(f), Some(w)) => {
                let (f, w) = (f?, w?);
                Some(if w >= f {
                    (w, Which::Weekly, 1.0)
                } else {
                    (f, Which::FiveHour, 1.0)
                })
            }
            (Some(f), None) => Some((f?, Which::FiveHour, 1.0)),
            (None, Some(w)) => Some((w?, Which::Weekly, 1.0 - self.five.used)),
            (None, None) => None,
        }
    }
}

/// When `members` (in drain order) run dry at `burn`, from `now`.
pub fn forecast(members: &[Member], burn: Option<Burn>, now: Timestamp) -> Runway {
    let Some(burn) = burn else {
        return Runway::Unknown;
    };
    let mut pool: Vec<State> = members
        .iter()
        .map(|m| State {
            five: m.five,
            week: m.week,
            usable: m.usable,
            cost: m.cost.or(burn.average),
        })
        .collect();
    let per_ms = burn.requests_per_hour.max(0.0) / 3_600_000.0;
    let end = now.plus(HORIZON);
    let mut t = now;
    // Each step ends at a window spent or a reset: at most a few per account and day.
    for _ in 0..100_000 {
        pool.iter_mut().for_each(|s| s.roll(t));
        let Some(i) = pool.iter().position(State::room) else {
            let freed = pool
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.freed().map(|(at, w, f)| (at, w, f, i)))
                .min_by_key(|(at, ..)| *at)
                .map(|(at, window, frees, i)| Freed {
                    account: members[i].id.clone(),
                    at,
                    window,
                    frees,
                });
            return Runway::DryAt { at: t, freed };
        };
        if per_ms <= 0.0 {
            return Runway::Idle;
        }
        let Some(cost) = pool[i].cost else {
            // Requests, and no account's cost known: nothing to forecast with.
            return Runway::Unknown;
        };
        let (five_ms, week_ms) = (per_ms * cost.five.max(0.0), per_ms * cost.week.max(0.0));
        if five_ms <= 0.0 && week_ms <= 0.0 {
            return Runway::Lasts;
        }
        let s = &mut pool[i];
        // A window first used now starts now.
        s.five.resets_at.get_or_insert(t.plus(FIVE_HOURS));
        s.week.resets_at.get_or_insert(t.plus(SEVEN_DAYS));
        let until_spent = |used: f64, rate: f64| {
            if rate > 0.0 {
                (1.0 - used) / rate
            } else {
                f64::INFINITY
            }
        };
        let to_five = until_spent(s.five.used, five_ms);
        let to_week = until_spent(s.week.used, week_ms);
        let next_reset = pool
            .iter()
            .flat_map(|s| [s.five.resets_at, s.week.resets_at])
            .flatten()
            .filter(|r| *r > t)
            .min()
            .map_or(f64::INFINITY, |r| r.since(t).as_millis() as f64);
        let step = to_five.min(to_week).min(next_reset).max(1.0);
        let s = &mut pool[i];
        s.five.used = (s.five.used + five_ms * step).min(1.0);
        s.week.used = (s.week.used + week_ms * step).min(1.0);
        if step >= to_five - 1.0 {
            s.five.used = 1.0;
        }
        if step >= to_week - 1.0 {
            s.week.used = 1.0;
        }
        t = t.plus(Duration::from_millis(step.ceil() as u64));
        if t > end {
            return Runway::Lasts;
        }
    }
    Runway::Lasts
}

/// What one account spent between two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Spent {
    requests: u64,
    five: f64,
    week: f64,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    five: WindowNow,
    week: WindowNow,
    served: u64,
}

/// Spend over time, per account, from samples of each account's quota and the requests it
/// served.
#[derive(Clone, Debug)]
pub struct BurnMeter {
    last: BTreeMap<AccountId, Seen>,
    /// (when, account, spent since the sample before).
    spent: VecDeque<(Timestamp, AccountId, Spent)>,
    first: Option<Timestamp>,
    /// Less history than this gives no forecast (`MIN_SPAN` unless told).
    min_span: Duration,
}

impl Default for BurnMeter {
    fn default() -> Self {
        BurnMeter::new(MIN_SPAN)
    }
}

fn spent_between(before: &WindowNow, now: &WindowNow) -> f64 {
    if now.resets_at != before.resets_at && now.used < before.used {
        // A new window since: all of its use is new.
        now.used
    } else {
        (now.used - before.used).max(0.0)
    }
}

impl BurnMeter {
    /// A meter that forecasts once it holds `min_span` of samples.
    pub fn new(min_span: Duration) -> BurnMeter {
        BurnMeter {
            last: BTreeMap::new(),
            spent: VecDeque::new(),
            first: None,
            min_span,
        }
    }

    /// One sample of every account the supervisor knows, `served(id)` the requests it served
    /// in all.
    pub fn observe_view(
        &mut self,
        view: &SupervisorView,
        served: impl Fn(&AccountId) -> u64,
        now: Timestamp,
    ) {
        self.observe(
            now,
            view.accounts
                .iter()
                .map(|m| (&m.id, &m.quota, served(&m.id))),
        );
    }

    /// The runway of `pool` as the supervisor's `view` has it: its members in drain order,
    /// dead and paused ones without room, each with the cost it was seen to have; with the
    /// pace it assumed.
    pub fn forecast_pool(
        &self,
        view: &SupervisorView,
        pool: &str,
        now: Timestamp,
    ) -> (Runway, Option<Burn>) {
        let order = view.pools.get(pool).cloned().unwrap_or_default();
        let members: Vec<Member> = order
            .iter()
            .filter_map(|id| view.accounts.iter().find(|m| m.id == *id))
            .map(|m| Member {
                cost: self.cost(&m.id, now),
                ..Member::of(
                    m.id.clone(),
                    &m.quota,
                    m.health.phase != Phase::Dead && !m.paused,
                    now,
                )
            })
            .collect();
        let burn = self.burn(&order, now);
        (forecast(&members, burn, now), burn)
    }

    /// One sample at `now` of every account: its quota, and how many requests it has served
    /// in all (a count that only grows).
    pub fn observe<'a>(
        &mut self,
        now: Timestamp,
        accounts: impl IntoIterator<Item = (&'a AccountId, &'a Quota, u64)>,
    ) {
        self.first.get_or_insert(now);
        for (id, q, served) in accounts {
            let seen = Seen {
                five: WindowNow::of(&q.five_hour, now),
                week: WindowNow::of(&q.seven_day, now),
                served,
            };
            if let Some(before) = self.last.insert(id.clone(), seen) {
                let s = Spent {
                    requests: served.saturating_sub(before.served),
                    five: spent_between(&before.five, &seen.five),
                    week: spent_between(&before.week, &seen.week),
                };
                if s != Spent::default() {
                    self.spent.push_back((now, id.clone(), s));
                }
            }
        }
        while self
            .spent
            .front()
            .is_some_and(|(t, ..)| now.since(*t) > RATIO_SPAN)
        {
            self.spent.pop_front();
        }
    }

    fn total(&self, now: Timestamp, within: Duration, of: impl Fn(&AccountId) -> bool) -> Spent {
        self.spent
            .iter()
            .filter(|(t, id, _)| now.since(*t) <= within && of(id))
            .fold(Spent::default(), |a, (_, _, s)| Spent {
                requests: a.requests + s.requests,
                five: a.five + s.five,
                week: a.week + s.week,
            })
    }

    /// What a request cost `id` over the meter's day (`None`: it served none).
    pub fn cost(&self, id: &AccountId, now: Timestamp) -> Option<Cost> {
        let s = self.total(now, RATIO_SPAN, |a| a == id);
        (s.requests > 0).then(|| Cost {
            five: s.five / s.requests as f64,
            week: s.week / s.requests as f64,
        })
    }

    /// The burn of `members` at `now`: `None` with less than `MIN_SPAN` of samples.
    pub fn burn(&self, members: &[AccountId], now: Timestamp) -> Option<Burn> {
        let span = now.since(self.first?).min(RATE_SPAN);
        if span < self.min_span {
            return None;
        }
        let hour = self.total(now, span, |id| members.contains(id));
        let day = self.total(now, RATIO_SPAN, |id| members.contains(id));
        Some(Burn {
            requests_per_hour: hour.requests as f64 / (span.as_secs_f64() / 3600.0),
            average: (day.requests > 0).then(|| Cost {
                five: day.five / day.requests as f64,
                week: day.week / day.requests as f64,
            }),
        })
    }
}

#[cfg(test)]
mod tests;
