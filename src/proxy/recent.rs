//! What `ccs cliproxy status` shows of the last hour, kept across a restart: the per-minute
//! request counts and the supervisor's hop events, saved in the store's meta tree at each
//! sweep and at a stop, restored at start.
//!
//! Must not: keep anything that grows with traffic (the counts are 60 buckets, the events
//! the supervisor's bounded list).

use ccs_actors::routing::AccountId;
use ccs_actors::supervisor::{HopEvent, HopReason, RestoreEvents};
use ccs_actors::Timestamp;
use serde_json::{json, Value};

use super::Ctx;

/// Writes the counts and events now.
pub async fn save(ctx: &Ctx) {
    let events = ctx.sup.view().await.map(|v| v.events).unwrap_or_default();
    let value = json!({
        "requests_per_minute": ctx.recent_snapshot(),
        "events": events.iter().map(|e| json!({
            "at_ms": e.at.as_millis(),
            "session": e.session,
            "from": e.from.to_string(),
            "to": e.to.to_string(),
            "reason": e.reason.as_str(),
        })).collect::<Vec<_>>(),
    });
    if let Err(e) = ctx.store.set_recent(&value) {
        tracing::warn!(error = %e, "cannot keep the recent counts for the next start");
    }
}

fn event(v: &Value) -> Option<HopEvent> {
    Some(HopEvent {
        at: Timestamp::from_millis(v["at_ms"].as_u64()?),
        session: v["session"].as_str()?.to_string(),
        from: AccountId::from(v["from"].as_str()?),
        to: AccountId::from(v["to"].as_str()?),
        reason: HopReason::parse(v["reason"].as_str()?)?,
    })
}

/// Puts back what the last run kept (nothing when it kept nothing or it cannot be read).
pub async fn restore(ctx: &Ctx) {
    let Ok(Some(v)) = ctx.store.recent() else {
        return;
    };
    let buckets: Vec<(u64, u64)> =
        serde_json::from_value(v["requests_per_minute"].clone()).unwrap_or_default();
    ctx.restore_recent(&buckets);
    let events: Vec<HopEvent> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(event)
        .collect();
    if !events.is_empty() {
        let _ = ctx.sup.addr().send(RestoreEvents(events)).await;
    }
}
