//! `/v0/management/usage` (tokens per account and model over 24 h or 7 days, from the usage
//! book) and `/v0/management/session` (the account serving one conversation, for Claude
//! Code's status line).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{err, internal, Data};
use crate::api;

#[derive(Deserialize)]
pub(super) struct UsageQuery {
    span: Option<String>,
}

/// `24h` or `7d` (also `1d`, `8d`): the spans the book can answer.
pub(crate) fn span(name: &str) -> Option<Duration> {
    let hours = match name {
        "24h" | "1d" => 24,
        "7d" => 7 * 24,
        "8d" => 8 * 24,
        _ => return None,
    };
    Some(Duration::from_secs(hours * 3600))
}

pub(super) async fn usage(ctx: Data, q: web::Query<UsageQuery>) -> HttpResponse {
    let name = q.span.as_deref().unwrap_or("24h");
    let Some(span) = span(name) else {
        return err(400, format!("span {name:?}: use 24h or 7d"));
    };
    let t = &ctx.telemetry;
    let now = t.now_ms();
    // A shared pool: the other daemons' figures count too (as of their last heartbeat).
    let others = match &ctx.shared {
        Some(shared) => {
            let first = crate::telemetry::usage::UsageBook::first_hour(now, span);
            match shared.peer_usage(first, now).await {
                Ok(o) => o,
                Err(e) => {
                    return err(
                        503,
                        format!(
                            "the shared store is unreachable, so the pool's figures are not: {e}"
                        ),
                    )
                }
            }
        }
        None => Vec::new(),
    };
    HttpResponse::Ok().json(t.usage.report_with(now, span, name, &others))
}

#[derive(Deserialize)]
pub(super) struct SessionQuery {
    id: String,
}

/// Turns after a hop during which the status line says where the conversation came from.
const MOVED_SHOWN_FOR: Duration = Duration::from_secs(10 * 60);

pub(super) async fn session(ctx: Data, q: web::Query<SessionQuery>) -> HttpResponse {
    let view = match ctx.sup.view().await {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let now = ctx.clock.now();
    let bound = view.bindings.get(&q.id).map(|b| b.account.clone());
    let moved_from = view
        .events
        .iter()
        .rev()
        .find(|e| e.session == q.id && now.since(e.at) <= MOVED_SHOWN_FOR)
        .map(|e| e.from.to_string());
    let member = bound
        .as_ref()
        .and_then(|a| view.accounts.iter().find(|m| m.id == *a));
    let nickname = bound
        .as_ref()
        .and_then(|a| ctx.store.account(a).ok().flatten().map(|acc| acc.nickname));
    let reread_tokens = match (&moved_from, &bound) {
        (Some(_), Some(a)) => ctx.telemetry.reread(&q.id, a),
        _ => None,
    };
    let pools: Vec<&String> = view
        .pools
        .iter()
        .filter(|(name, members)| match &bound {
            Some(a) => members.contains(a),
            None => name.as_str() == ccs_actors::supervisor::DEFAULT_POOL,
        })
        .map(|(name, _)| name)
        .collect();
    let runway = pools
        .into_iter()
        .map(|p| crate::proxy::runway::of_pool(&ctx, &view, p))
        .min_by_key(|r| r.seconds.unwrap_or(u64::MAX));
    HttpResponse::Ok().json(api::SessionView {
        alert: ctx.alerts.active(now).first().map(api::Alert::short),
        runway,
        reread_tokens,
        account: bound.map(|a| a.to_string()),
        nickname,
        five_hour: member.map(|m| m.quota.five_hour.utilization_at(now)),
        seven_day: member.map(|m| m.quota.seven_day.utilization_at(now)),
        moved_from,
    })
}
