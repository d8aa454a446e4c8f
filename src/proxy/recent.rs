//! What `ccs cliproxy status` shows of the last hour, kept across a restart: the per-minute
//! request counts and the supervisor's hop events, saved in the store's meta tree at each
//! sweep and at a stop, restored at start.
//!
//! Must not: keep anything that grows with traffic (the counts are 60 buckets, the events
//! the supervisor's bounded list).

use ccs_actors::routing::AccountId;
use ccs_actors::supervisor::{HopEvent, HopReason, RestoreEvents};
use ccs_actors::Timestamp;

use super::Ctx;
use crate::store::records::{HopRecord, RecentRecord};

/// Writes the counts and events now.
pub async fn save(ctx: &Ctx) {
    let events = ctx.sup.view().await.map(|v| v.events).unwrap_or_default();
    let record = RecentRecord {
        requests_per_minute: ctx.figures.recent_snapshot(),
        events: events
            .iter()
            .map(|e| HopRecord {
                at_ms: e.at.as_millis(),
                session: e.session.clone(),
                from: e.from.to_string(),
                to: e.to.to_string(),
                reason: e.reason.as_str().to_string(),
            })
            .collect(),
    };
    if let Err(e) = ctx.store.set_recent(&record) {
        tracing::warn!(error = %e, "cannot keep the recent counts for the next start");
    }
}

fn event(r: &HopRecord) -> Option<HopEvent> {
    Some(HopEvent {
        at: Timestamp::from_millis(r.at_ms),
        session: r.session.clone(),
        from: AccountId::from(r.from.as_str()),
        to: AccountId::from(r.to.as_str()),
        reason: HopReason::parse(&r.reason)?,
    })
}

/// Puts back what the last run kept. A record that cannot be read is said (the log and
/// `ccs cliproxy status`): the last hour then starts empty.
pub async fn restore(ctx: &Ctx) {
    let record = match ctx.store.recent() {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            ctx.store.note(format!(
                "{e}: the last hour's requests and hops start empty"
            ));
            return;
        }
    };
    ctx.figures.restore_recent(&record.requests_per_minute);
    let events: Vec<HopEvent> = record.events.iter().filter_map(event).collect();
    if !events.is_empty() {
        let _ = ctx.sup.addr().send(RestoreEvents(events)).await;
    }
}
