//! What the daemon tells people without being asked: every `LOOK_EVERY` it works out which
//! alert conditions hold (`crate::alerts`: dead accounts, refreshes failing, pools all
//! limited, runways under `alerts.runway_below`) and hands them to the edges, which tell the
//! new ones once.

use std::time::Duration;

use ccs_actors::lifecycle::Phase;
use ccs_actors::supervisor::SupervisorView;
use ccs_actors::Timestamp;

use super::Ctx;
use crate::alerts::{Event, Kind};
use crate::api;

/// How often the conditions are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Refreshes that failed in a row (without the account being dead) before it is an alert.
pub const FAILED_REFRESHES: usize = 3;

pub async fn run(ctx: actix_web::web::Data<Ctx>) {
    loop {
        actix_web::rt::time::sleep(LOOK_EVERY).await;
        look(&ctx).await;
    }
}

/// One look.
pub async fn look(ctx: &Ctx) {
    let Ok(view) = ctx.sup.view().await else {
        return;
    };
    let now = ctx.clock.now();
    let runways = super::runway::of_pools(ctx, &view);
    let holding = conditions(
        &view,
        &runways,
        &ctx.telemetry.refreshes(),
        ctx.config.alerts.runway_below.0,
        now,
    );
    ctx.alerts.look(holding, now);
}

/// The alert conditions that hold in `view`.
pub fn conditions(
    view: &SupervisorView,
    runways: &[api::Runway],
    refreshes: &[api::RefreshRecord],
    runway_below: Duration,
    now: Timestamp,
) -> Vec<Event> {
    let mut out = Vec::new();
    for m in &view.accounts {
        let who = m.id.to_string();
        if m.health.phase == Phase::Dead {
            out.push(Event::new(
                Kind::AccountDead,
                &who,
                format!(
                    "ccs: {who} needs a new login (its grant is gone): run `ccs claude --auth --add` \
                     and log in as {who}, or use the dashboard's Accounts page"
                ),
            ));
            continue;
        }
        let failed = refreshes
            .iter()
            .rev()
            .filter(|r| r.account == who)
            .take(FAILED_REFRESHES)
            .filter(|r| r.outcome == "transient" || r.outcome == "unknown")
            .count();
        if failed == FAILED_REFRESHES {
            out.push(Event::new(
                Kind::RefreshFailing,
                &who,
                format!(
                    "ccs: {who}'s token refresh failed {FAILED_REFRESHES} times in a row; it serves \
                     while its token lasts (see `ccs cliproxy status` for the errors)"
                ),
            ));
        }
    }
    for (pool, members) in &view.pools {
        let accounts: Vec<_> = members
            .iter()
            .filter_map(|id| view.accounts.iter().find(|m| m.id == *id))
            .collect();
        let limited = !accounts.is_empty()
            && accounts.iter().all(|m| {
                m.health.phase == Phase::Dead
                    || m.paused
                    || m.quota.limited_until(now, None).is_some()
            });
        if limited {
            let back = accounts
                .iter()
                .filter(|m| m.health.phase != Phase::Dead && !m.paused)
                .filter_map(|m| m.quota.limited_until(now, None))
                .min();
            let when = back.map_or(String::new(), |t| {
                format!(
                    "; the first is back at {}",
                    crate::store::mirror::rfc3339(t.as_millis())
                )
            });
            out.push(Event::new(
                Kind::PoolLimited,
                pool,
                format!(
                    "ccs: every account of the pool {pool} is limited, paused or dead: requests get \
                     429{when}"
                ),
            ));
            continue;
        }
        if let Some(r) = runways.iter().find(|r| r.pool == *pool) {
            if r.state == api::RunwayState::DryAt && r.dry_within(runway_below) {
                out.push(Event::new(
                    Kind::RunwayLow,
                    pool,
                    format!("ccs: pool {pool}: {}", r.text),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ccs_actors::lifecycle::Health;
    use ccs_actors::quota::{Quota, Status, Window};
    use ccs_actors::routing::AccountId;
    use ccs_actors::supervisor::MemberView;

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    fn member(id: &str, phase: Phase, limited: bool, paused: bool) -> MemberView {
        let mut quota = Quota::default();
        if limited {
            quota.five_hour = Window {
                status: Status::Rejected,
                utilization: 1.0,
                resets_at: Some(NOW.plus(Duration::from_secs(3600))),
                seen_at: Some(NOW),
            };
        }
        MemberView {
            id: AccountId::from(id),
            health: Health {
                phase,
                expires_at: NOW.plus(Duration::from_secs(3600)),
                retry_at: None,
                refused_until: None,
            },
            quota,
            paused,
        }
    }

    fn view(members: Vec<MemberView>) -> SupervisorView {
        let ids = members.iter().map(|m| m.id.clone()).collect();
        SupervisorView {
            accounts: members,
            pools: BTreeMap::from([("claude".to_string(), ids)]),
            bindings: BTreeMap::new(),
            events: Vec::new(),
            routed: 0,
        }
    }

    fn refresh(account: &str, outcome: &str) -> api::RefreshRecord {
        api::RefreshRecord {
            at: String::new(),
            account: account.into(),
            outcome: outcome.into(),
            millis: 1,
        }
    }

    fn runway(state: api::RunwayState, seconds: Option<u64>) -> api::Runway {
        api::Runway {
            pool: "claude".into(),
            state,
            dry_at: None,
            seconds,
            requests_per_hour: Some(60.0),
            freed: None,
            text: "at this pace the pool lasts until 17:05".into(),
        }
    }

    fn kinds(e: &[Event]) -> Vec<(Kind, &str)> {
        e.iter().map(|e| (e.kind, e.subject.as_str())).collect()
    }

    const HALF_HOUR: Duration = Duration::from_secs(1800);

    #[test]
    fn each_condition_holds_when_it_should() {
        let fine = view(vec![
            member("a", Phase::Fresh, false, false),
            member("b", Phase::Fresh, false, false),
        ]);
        assert!(conditions(&fine, &[], &[], HALF_HOUR, NOW).is_empty());

        // Dead: an alert per dead account, never also "refresh failing".
        let v = view(vec![
            member("a", Phase::Dead, false, false),
            member("b", Phase::Fresh, false, false),
        ]);
        let failing = vec![refresh("a", "transient"); 3];
        assert_eq!(
            kinds(&conditions(&v, &[], &failing, HALF_HOUR, NOW)),
            [(Kind::AccountDead, "a")]
        );

        // Three failed refreshes in a row, the latest three; an ok in between clears it.
        let three = [
            refresh("b", "ok"),
            refresh("b", "transient"),
            refresh("b", "unknown"),
            refresh("b", "transient"),
        ];
        assert_eq!(
            kinds(&conditions(&fine, &[], &three, HALF_HOUR, NOW)),
            [(Kind::RefreshFailing, "b")]
        );
        let mended = [
            refresh("b", "transient"),
            refresh("b", "transient"),
            refresh("b", "ok"),
        ];
        assert!(conditions(&fine, &[], &mended, HALF_HOUR, NOW).is_empty());

        // All limited, paused or dead: the pool is limited, and its runway is not also low.
        let v = view(vec![
            member("a", Phase::Fresh, true, false),
            member("b", Phase::Fresh, false, true),
        ]);
        let low = [runway(api::RunwayState::DryAt, Some(600))];
        let e = conditions(&v, &low, &[], HALF_HOUR, NOW);
        assert_eq!(kinds(&e), [(Kind::PoolLimited, "claude")]);
        assert!(e[0].text.contains("the first is back at"), "{}", e[0].text);

        // A runway under the threshold is low; at or over it, or not dry at all, it is not.
        assert_eq!(
            kinds(&conditions(&fine, &low, &[], HALF_HOUR, NOW)),
            [(Kind::RunwayLow, "claude")]
        );
        for r in [
            runway(api::RunwayState::DryAt, Some(1800)),
            runway(api::RunwayState::Lasts, None),
            runway(api::RunwayState::Unknown, None),
        ] {
            assert!(conditions(&fine, &[r], &[], HALF_HOUR, NOW).is_empty());
        }
    }
}
