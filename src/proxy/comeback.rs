//! Quota that comes back before its announced reset. A 429 benches an account until the reset
//! it names, hours ahead sometimes, and the authority may open the window sooner (a plan
//! upgraded, a window reset early, the simulator's top-up). For every account a rejected window
//! benches, the usage endpoint is asked now and then, and the bench lifts when it says the
//! window has room (`Quota::observe_usage`); the next request may go there at once.
//!
//! The endpoint is rate-limited itself (specs/anthropic.md §3): an account is asked at most
//! every `oauth.usage_poll`, jittered so a pool's accounts are not asked together, and the wait
//! doubles after each 429 (at least its `retry-after`, at most an hour). `Schedule` decides, pure;
//! `run` carries it out on the daemon's runtime.
//!
//! Must not: ask about an account no window benches (a backoff without a reset, a dead or
//! paused one), ask sooner than the wait, or ask when the announced reset comes first.

use std::collections::HashMap;
use std::time::Duration;

use ccs_actors::account::{GetLease, ObserveUsage};
use ccs_actors::lifecycle::Phase;
use ccs_actors::routing::AccountId;
use ccs_actors::Timestamp;
use rand::Rng;

use crate::oauth::FetchError;

/// The longest wait after repeated 429s.
const REFUSED_CAP: Duration = Duration::from_secs(3600);

/// An announced reset this close needs no question: it lifts the bench by itself.
const RESET_SOON: Duration = Duration::from_secs(30);

/// How the usage endpoint answered one question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A usage body (whatever it said).
    Usage,
    /// 429: asked too often.
    Refused { retry_after: Option<Duration> },
    /// Unreachable, another status, no token to ask with.
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Next {
    /// Not before then (ms); `None` while a question is out.
    at: Option<u64>,
    /// 429s in a row.
    refusals: u32,
}

/// When each benched account is asked next.
#[derive(Debug)]
pub struct Schedule {
    every: Duration,
    next: HashMap<AccountId, Next>,
}

/// `every`, stretched by up to half again by `jitter` (0..1).
fn jittered(every: Duration, jitter: f64) -> u64 {
    (every.as_millis() as f64 * (1.0 + 0.5 * jitter.clamp(0.0, 1.0))) as u64
}

impl Schedule {
    pub fn new(every: Duration) -> Schedule {
        Schedule {
            every,
            next: HashMap::new(),
        }
    }

    /// Of `benched` (each account a window benches, with the announced reset), the ones to
    /// ask at `now`. An account newly benched is first asked one (jittered) wait later: its
    /// window closed just now. One that is no longer benched is forgotten.
    pub fn due(
        &mut self,
        benched: &[(AccountId, Timestamp)],
        now: Timestamp,
        jitter: &mut impl FnMut() -> f64,
    ) -> Vec<AccountId> {
        self.next
            .retain(|id, _| benched.iter().any(|(b, _)| b == id));
        let every = self.every;
        let mut due = Vec::new();
        for (id, reset) in benched {
            let n = self.next.entry(id.clone()).or_insert_with(|| Next {
                at: Some(now.as_millis() + jittered(every, jitter())),
                refusals: 0,
            });
            let Some(at) = n.at else { continue };
            if now.as_millis() >= at && reset.as_millis() > now.plus(RESET_SOON).as_millis() {
                n.at = None;
                due.push(id.clone());
            }
        }
        due
    }

    /// `id` was asked and the endpoint answered `answer` at `now`: when to ask next.
    pub fn answered(
        &mut self,
        id: &AccountId,
        answer: Answer,
        now: Timestamp,
        jitter: &mut impl FnMut() -> f64,
    ) {
        let every = self.every;
        let Some(n) = self.next.get_mut(id) else {
            return;
        };
        let wait = match answer {
            Answer::Usage => {
                n.refusals = 0;
                jittered(every, jitter())
            }
            Answer::Failed => jittered(every, jitter()),
            Answer::Refused { retry_after } => {
                n.refusals = n.refusals.saturating_add(1);
                let doubled = every
                    .saturating_mul(1 << n.refusals.min(16))
                    .min(REFUSED_CAP);
                doubled.max(retry_after.unwrap_or_default()).as_millis() as u64
            }
        };
        n.at = Some(now.as_millis() + wait);
    }
}

/// How often the loop looks at the pool.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Asks about every benched account on its schedule, for as long as the daemon runs
/// (`oauth.usage_poll: 0` turns it off).
pub async fn run(ctx: actix_web::web::Data<super::Ctx>) {
    let every = ctx.config.oauth.usage_poll.0;
    if every.is_zero() {
        return;
    }
    let mut schedule = Schedule::new(every);
    let mut jitter = || rand::rng().random::<f64>();
    loop {
        actix_web::rt::time::sleep(LOOK_EVERY.min(every)).await;
        let Ok(view) = ctx.sup.view().await else {
            continue;
        };
        let now = ctx.clock.now();
        let benched: Vec<(AccountId, Timestamp)> = view
            .accounts
            .iter()
            .filter(|m| m.health.phase != Phase::Dead && !m.paused)
            .filter_map(|m| Some((m.id.clone(), m.quota.window_bench_until(now)?)))
            .collect();
        for id in schedule.due(&benched, now, &mut jitter) {
            let answer = ask(&ctx, &id).await;
            schedule.answered(&id, answer, ctx.clock.now(), &mut jitter);
        }
    }
}

/// One question about `id`, its answer folded into the account.
async fn ask(ctx: &actix_web::web::Data<super::Ctx>, id: &AccountId) -> Answer {
    // A question someone else asked within the endpoint's cache time (`ccs cliproxy quota`)
    // counts as this one.
    if !ctx.figures.usage_due(id, Duration::ZERO) {
        return Answer::Usage;
    }
    let Some(addr) = ctx.sup.account(id).await else {
        return Answer::Failed;
    };
    let Ok(Ok(lease)) = addr.send(GetLease).await else {
        return Answer::Failed;
    };
    match crate::oauth::fetch_usage(&ctx.client, &ctx.config.oauth.usage_url, &lease.access).await {
        Ok(body) => {
            let now = ctx.clock.now();
            let view = ctx.sup.view().await.ok();
            let before = view
                .as_ref()
                .and_then(|v| v.accounts.iter().find(|m| m.id == *id))
                .map(|m| m.quota.clone());
            if let Some(mut q) = before {
                let announced = q.window_bench_until(now);
                q.observe_usage(&body, now);
                if let (Some(reset), None) = (announced, q.window_bench_until(now)) {
                    tracing::info!(
                        account = %id,
                        announced_reset = %crate::store::mirror::rfc3339(reset.as_millis()),
                        "the usage endpoint says the window has room again: back before its announced reset"
                    );
                    ctx.telemetry.came_back(id);
                    ctx.alerts.moment(
                        crate::alerts::Event::new(
                            crate::alerts::Kind::CameBack,
                            id.as_ref(),
                            format!(
                                "ccs: {id} has quota again before its announced reset: it serves \
                                 the next request"
                            ),
                        ),
                        now,
                    );
                }
            }
            let _ = addr.send(ObserveUsage(body)).await;
            Answer::Usage
        }
        Err(FetchError::Refused { retry_after }) => {
            tracing::warn!(account = %id, "the usage endpoint says it was asked too often: asking less");
            Answer::Refused { retry_after }
        }
        Err(e) => {
            tracing::warn!(account = %id, error = %e, "usage fetch failed");
            Answer::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn id(s: &str) -> AccountId {
        s.into()
    }

    /// Steps the schedule minute by minute over `minutes`, answering every question with
    /// `answer`; the minutes at which `a` was asked.
    fn asked_at(
        every: Duration,
        reset: u64,
        minutes: u64,
        answer: impl Fn(u64) -> Answer,
    ) -> Vec<u64> {
        let mut s = Schedule::new(every);
        let mut half = || 0.5;
        let mut asked = Vec::new();
        for m in 0..minutes {
            let now = at(m * MIN);
            for who in s.due(&[(id("a"), at(reset))], now, &mut half) {
                asked.push(m);
                s.answered(&who, answer(m), now, &mut half);
            }
        }
        asked
    }

    #[test]
    fn a_benched_account_is_asked_one_jittered_wait_after_its_bench_then_every_wait() {
        // 4 minutes stretched by a quarter: every 5 minutes, the first 5 minutes in.
        let asked = asked_at(Duration::from_secs(240), 600 * MIN, 31, |_| Answer::Usage);
        assert_eq!(asked, vec![5, 10, 15, 20, 25, 30]);
    }

    #[test]
    fn refusals_double_the_wait_and_an_answer_brings_it_back() {
        // Refused at 5 and 13: waits of 8 and 16 minutes; answered at 29, then every 5 again.
        let asked = asked_at(Duration::from_secs(240), 600 * MIN, 43, |m| {
            if m < 20 {
                Answer::Refused { retry_after: None }
            } else {
                Answer::Usage
            }
        });
        assert_eq!(asked, vec![5, 13, 29, 34, 39]);
    }

    #[test]
    fn a_retry_after_longer_than_the_doubled_wait_is_honoured() {
        let asked = asked_at(Duration::from_secs(60), 600 * MIN, 40, |m| {
            if m == 2 {
                Answer::Refused {
                    retry_after: Some(Duration::from_secs(30 * 60)),
                }
            } else {
                Answer::Usage
            }
        });
        assert_eq!(asked[..2], [2, 32]);
    }

    #[test]
    fn an_account_is_never_asked_when_its_reset_comes_first() {
        // Reset at minute 4, first question due at 5: never asked.
        assert!(asked_at(Duration::from_secs(240), 4 * MIN, 20, |_| Answer::Usage).is_empty());
    }

    #[test]
    fn an_account_no_longer_benched_is_forgotten_and_starts_over_when_benched_again() {
        let mut s = Schedule::new(Duration::from_secs(60));
        let mut zero = || 0.0;
        let reset = at(600 * MIN);
        assert!(s.due(&[(id("a"), reset)], at(0), &mut zero).is_empty());
        assert_eq!(
            s.due(&[(id("a"), reset)], at(MIN), &mut zero),
            vec![id("a")]
        );
        // Out while the question is out: forgotten, its answer ignored.
        assert!(s.due(&[], at(MIN + 1), &mut zero).is_empty());
        s.answered(&id("a"), Answer::Usage, at(MIN + 2), &mut zero);
        assert!(s.next.is_empty());
        // Benched again: one whole wait from now.
        assert!(s
            .due(&[(id("a"), reset)], at(2 * MIN), &mut zero)
            .is_empty());
        assert_eq!(
            s.due(&[(id("a"), reset)], at(3 * MIN), &mut zero),
            vec![id("a")]
        );
    }

    #[test]
    fn a_question_out_is_not_asked_again_until_answered() {
        let mut s = Schedule::new(Duration::from_secs(60));
        let mut zero = || 0.0;
        let b = [(id("a"), at(600 * MIN))];
        s.due(&b, at(0), &mut zero);
        assert_eq!(s.due(&b, at(MIN), &mut zero).len(), 1);
        assert!(s.due(&b, at(10 * MIN), &mut zero).is_empty());
    }

    #[test]
    fn the_jitter_spreads_a_pool_over_half_a_wait() {
        let mut s = Schedule::new(Duration::from_secs(600));
        let b: Vec<_> = (0..3)
            .map(|i| (id(&format!("a{i}")), at(600 * MIN)))
            .collect();
        let mut draws = [0.0, 0.5, 1.0].into_iter();
        let mut jitter = || draws.next().unwrap();
        s.due(&b, at(0), &mut jitter);
        let mut firsts: Vec<u64> = s.next.values().map(|n| n.at.unwrap() / MIN).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, vec![10, 12, 15]);
    }
}
