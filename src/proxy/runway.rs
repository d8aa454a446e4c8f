//! The runway as the daemon serves it: the accounts' quota sampled into the burn meter every
//! `cliproxy.runway_sample`, and each pool's forecast (`ccs_actors::runway`) as `api::Runway`
//! for `/quota`, `/status`, the dashboard, the status line and `/metrics`.

use ccs_actors::runway::{Runway, Which};
use ccs_actors::supervisor::SupervisorView;
use ccs_actors::Timestamp;

use super::Ctx;
use crate::api;
use crate::store::mirror::rfc3339;

/// Samples for as long as the daemon runs.
pub async fn run(ctx: actix_web::web::Data<Ctx>) {
    let every = ctx.config.cliproxy.runway_sample.0;
    if every.is_zero() {
        return;
    }
    loop {
        sample(&ctx).await;
        actix_web::rt::time::sleep(every).await;
    }
}

/// One sample of every account.
pub async fn sample(ctx: &Ctx) {
    let Ok(view) = ctx.sup.view().await else {
        return;
    };
    let now = ctx.clock.now();
    ctx.figures
        .runway
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .observe_view(&view, |id| ctx.figures.served(id), now);
}

/// The runway of `pool`, now.
pub fn of_pool(ctx: &Ctx, view: &SupervisorView, pool: &str) -> api::Runway {
    let now = ctx.clock.now();
    let meter = ctx.figures.runway.lock().unwrap_or_else(|p| p.into_inner());
    let (runway, burn) = meter.forecast_pool(view, pool, now);
    view_of(pool, &runway, burn, now)
}

/// Every pool's runway, now.
pub fn of_pools(ctx: &Ctx, view: &SupervisorView) -> Vec<api::Runway> {
    view.pools.keys().map(|p| of_pool(ctx, view, p)).collect()
}

/// A forecast as the API shows it.
pub fn view_of(
    pool: &str,
    r: &Runway,
    burn: Option<ccs_actors::runway::Burn>,
    now: Timestamp,
) -> api::Runway {
    let mut v = api::Runway {
        pool: pool.to_string(),
        state: api::RunwayState::Unknown,
        dry_at: None,
        seconds: None,
        requests_per_hour: burn.map(|b| (b.requests_per_hour * 10.0).round() / 10.0),
        freed: None,
        text: String::new(),
    };
    v.state = match r {
        Runway::Unknown => api::RunwayState::Unknown,
        Runway::Idle => api::RunwayState::Idle,
        Runway::Lasts => api::RunwayState::Lasts,
        Runway::DryAt { at, freed } => {
            v.dry_at = Some(rfc3339(at.as_millis()));
            v.seconds = Some(at.since(now).as_secs());
            v.freed = freed.as_ref().map(|f| api::RunwayFreed {
                account: f.account.to_string(),
                at: rfc3339(f.at.as_millis()),
                window: match f.window {
                    Which::FiveHour => api::WindowName::FiveHour,
                    Which::Weekly => api::WindowName::SevenDay,
                },
                frees: f.frees,
            });
            if *at <= now {
                api::RunwayState::Dry
            } else {
                api::RunwayState::DryAt
            }
        }
    };
    v.text = v.describe(now.as_millis());
    v
}
