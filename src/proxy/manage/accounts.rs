//! `/v0/management/accounts…`: list, add (a login's token response), remove, pause, resume,
//! rename, make default, force a refresh.

use actix_web::{web, HttpResponse};
use ccs_actors::account::{GetState, LoggedIn, Unauthorized};
use ccs_actors::lifecycle::Phase;
use ccs_actors::quota::Window;
use ccs_actors::routing::AccountId;
use ccs_actors::supervisor::{
    AddAccount, MemberView, RemoveAccount, SetPaused, SetPool, SupervisorView, DEFAULT_POOL,
};
use ccs_actors::Timestamp;

use super::{err, internal, resolve, save_pools, write, Ctx, Data};
use crate::api;
use crate::store::mirror::rfc3339;
use crate::store::{account_key, Account};

pub(crate) fn window_view(w: &Window, now: Timestamp) -> api::WindowView {
    api::WindowView {
        status: w.status.as_str().to_string(),
        utilization: w.utilization_at(now),
        resets_at: w
            .resets_at
            .filter(|r| *r > now)
            .map(|r| rfc3339(r.as_millis())),
        seen_at: w.seen_at.map(|r| rfc3339(r.as_millis())),
    }
}

fn phase_name(m: Option<&MemberView>, a: &Account) -> &'static str {
    match m {
        Some(m) => m.health.phase.as_str(),
        None if a.dead => "dead",
        None => "unknown",
    }
}

/// What one account looks like to the CLI and the dashboard; `position` is its place in
/// `pool`.
fn account_view(
    a: &Account,
    m: Option<&MemberView>,
    view: &SupervisorView,
    pool: &str,
    default: Option<&str>,
    now: Timestamp,
    last_used: Option<u64>,
) -> api::AccountView {
    let id = account_key(&a.email);
    let state = phase_name(m, a);
    let position = view
        .pools
        .get(pool)
        .and_then(|order| order.iter().position(|x| **x == *id))
        .map(|i| i + 1);
    let pools = view
        .pools
        .iter()
        .filter(|(_, members)| members.iter().any(|x| **x == *id))
        .map(|(name, _)| name.clone())
        .collect();
    let quota = m.map(|m| &m.quota);
    let cooldown = quota.and_then(|q| q.limited_until(now, None));
    let refused = m.and_then(|m| m.health.refused_until).filter(|t| *t > now);
    let fix = if state == "dead" {
        Some(format!(
            "log it in again: ccs claude --auth --add (as {})",
            a.email
        ))
    } else {
        refused.map(|t| {
            format!(
                "the API refuses this account's credential even right after a refresh; it is benched until {} and tried again then (if it keeps failing, log it in again: ccs claude --auth --add)",
                rfc3339(t.as_millis())
            )
        })
    };
    api::AccountView {
        email: a.email.clone(),
        nickname: a.nickname.clone(),
        default: default == Some(id.as_str()),
        state: state.to_string(),
        fix,
        refused_until: refused.map(|t| rfc3339(t.as_millis())),
        // What routing goes by: the supervisor hears of a pause after the store has it, and
        // a view must never say paused while requests still go there.
        paused: m.map_or(a.paused, |m| m.paused),
        plan: a.plan.clone(),
        expires_at: m.map(|m| rfc3339(m.health.expires_at.as_millis())),
        position,
        pools,
        five_hour: quota.map(|q| window_view(&q.five_hour, now)),
        seven_day: quota.map(|q| window_view(&q.seven_day, now)),
        cooldown_until: cooldown.map(|t| rfc3339(t.as_millis())),
        created_at: rfc3339(a.created_at_ms),
        last_used_at: last_used.or(a.last_used_at_ms).map(rfc3339),
    }
}

/// Every account, with positions in `pool`.
pub(super) async fn account_views(
    ctx: &Ctx,
    pool: &str,
) -> Result<Vec<api::AccountView>, HttpResponse> {
    let view = ctx.sup.view().await.map_err(internal)?;
    let accounts = ctx.store.accounts().map_err(internal)?;
    let default = ctx.store.default_account().map_err(internal)?;
    let now = ctx.clock.now();
    Ok(accounts
        .iter()
        .map(|a| {
            let id = account_key(&a.email);
            let m = view.accounts.iter().find(|m| *m.id == *id);
            account_view(
                a,
                m,
                &view,
                pool,
                default.as_deref(),
                now,
                ctx.figures.last_used_ms(&id),
            )
        })
        .collect())
}

pub(super) async fn list_accounts(ctx: Data) -> HttpResponse {
    match account_views(&ctx, DEFAULT_POOL).await {
        Ok(accounts) => HttpResponse::Ok().json(api::Accounts { accounts }),
        Err(r) => r,
    }
}

pub(super) async fn add_account(ctx: Data, body: web::Json<api::AddAccount>) -> HttpResponse {
    match add(&ctx, body.into_inner()).await {
        Ok(added) => HttpResponse::Ok().json(added),
        Err(r) => r,
    }
}

/// Takes in a login's outcome: a new account, or new credentials for a known one (which
/// leaves Dead this way only).
pub(crate) async fn add(ctx: &Ctx, b: api::AddAccount) -> Result<api::Added, HttpResponse> {
    let Some(email) = b
        .token_response
        .email()
        .map(str::to_string)
        .or(b.email.clone())
    else {
        return Err(err(
            400,
            "the token response names no e-mail address; pass `email`",
        ));
    };
    let now = ctx.clock.now();
    let Some(token) = b.token_response.token(now, None) else {
        return Err(err(400, "the token response has no refresh_token"));
    };
    let id = account_key(&email);
    let existing = ctx.store.account(&id).map_err(internal)?;
    let created = existing.is_none();
    let mut account = match existing {
        Some(a) => a,
        None => {
            let e = email.clone();
            write(ctx, move |s| s.new_account(&e)).await?
        }
    };
    account.dead = false;
    let tr = &b.token_response;
    account.plan = b.plan.or(account.plan);
    account.account_uuid = tr
        .account
        .as_ref()
        .and_then(|a| a.uuid.clone())
        .or(b.account_uuid)
        .or(account.account_uuid);
    account.organization_uuid = tr
        .organization
        .as_ref()
        .and_then(|o| o.uuid.clone())
        .or(b.organization_uuid)
        .or(account.organization_uuid);
    account.organization_name = tr
        .organization
        .as_ref()
        .and_then(|o| o.name.clone())
        .or(b.organization_name)
        .or(account.organization_name);
    let paused = account.paused;
    write(ctx, move |s| s.put_account(&account)).await?;
    let id: AccountId = id.as_str().into();
    match ctx.sup.account(&id).await {
        // A known account: the actor persists the new token before using it.
        Some(addr) => {
            if addr.send(LoggedIn(token)).await.is_err() {
                return Err(internal("the account actor stopped"));
            }
        }
        None => {
            ccs_actors::ports::Store::persist_token(&*ctx.store, &id, &token)
                .await
                .map_err(internal)?;
            if let Some(shared) = &ctx.shared {
                share_new_account(ctx, shared, &id, &token).await;
            }
            let added = ctx
                .sup
                .add(AddAccount {
                    id: id.clone(),
                    initial: ccs_actors::account::Initial::Token(token),
                    quota: Default::default(),
                    paused,
                    pools: vec![],
                })
                .await;
            added.map_err(internal)?;
        }
    }
    save_pools(ctx).await?;
    tracing::info!(account = %email, created, "account logged in");
    ctx.telemetry
        .changed(&email, if created { "added" } else { "logged in again" });
    let account = account_views(ctx, DEFAULT_POOL)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.email == email);
    Ok(api::Added { created, account })
}

/// A shared pool: the peers hear of an account logged in here (its record, then its token);
/// Redis unreachable, the token is offered when it returns (the record at the next start).
async fn share_new_account(
    ctx: &Ctx,
    shared: &crate::shared::Shared,
    id: &AccountId,
    token: &ccs_actors::Token,
) {
    let record = match ctx.store.account(id) {
        Ok(Some(r)) => r,
        _ => return,
    };
    if let Err(e) = shared.share_account(id, &record, token).await {
        tracing::warn!(account = %id, error = %e, "the shared store did not hear of the new account; peers learn of it when it returns");
    }
}

pub(super) async fn remove_account(ctx: Data, who: web::Path<String>) -> HttpResponse {
    let a = match resolve(&ctx, &who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = account_key(&a.email);
    if let Some(shared) = &ctx.shared {
        if let Err(e) = shared.share_removal(&id).await {
            return err(
                503,
                format!(
                    "the shared store is unreachable, so {} cannot leave the pool now (the \
                     other daemons would keep it): try again when Redis answers ({e})",
                    a.email
                ),
            );
        }
    }
    let _ = ctx.sup.addr().send(RemoveAccount(id.as_str().into())).await;
    if let Err(r) = write(&ctx, move |s| s.remove_account(&id)).await {
        return r;
    }
    if let Err(r) = save_pools(&ctx).await {
        return r;
    }
    ctx.telemetry.changed(&a.email, "logged out");
    HttpResponse::Ok().json(api::Removed { removed: a.email })
}

async fn set_paused(ctx: &Ctx, who: &str, paused: bool) -> HttpResponse {
    let a = match resolve(ctx, who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    // The store, the supervisor and the peers hear of this change in the order the changes
    // were made.
    let _turn = ctx.account_changes.lock().await;
    let at = paused.then(|| ctx.clock.now().as_millis());
    let id = account_key(&a.email);
    let change = move |a: &mut Account| {
        a.paused = paused;
        a.paused_at_ms = at;
    };
    match write(ctx, move |s| s.update_account(&id, change)).await {
        Ok(Some(_)) => {}
        Ok(None) => return err(404, format!("{} was removed meanwhile", a.email)),
        Err(r) => return r,
    }
    let _ = ctx
        .sup
        .addr()
        .send(SetPaused {
            id: account_key(&a.email).as_str().into(),
            paused,
        })
        .await;
    if let Some(shared) = &ctx.shared {
        shared
            .share_paused(account_key(&a.email).as_str(), paused)
            .await;
    }
    HttpResponse::Ok().json(api::Paused {
        email: a.email,
        paused,
    })
}

pub(super) async fn pause(ctx: Data, who: web::Path<String>) -> HttpResponse {
    set_paused(&ctx, &who, true).await
}

pub(super) async fn resume(ctx: Data, who: web::Path<String>) -> HttpResponse {
    set_paused(&ctx, &who, false).await
}

pub(super) async fn rename(
    ctx: Data,
    who: web::Path<String>,
    body: web::Json<api::Rename>,
) -> HttpResponse {
    let mut a = match resolve(&ctx, &who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let new = body.nickname.trim();
    let valid = !new.is_empty()
        && new
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return err(
            400,
            format!("nickname {new:?}: use letters, digits, '-', '_' or '.'"),
        );
    }
    let accounts = ctx.store.accounts().unwrap_or_default();
    if let Some(other) = accounts
        .iter()
        .find(|o| o.nickname.eq_ignore_ascii_case(new) && o.email != a.email)
    {
        return err(409, format!("nickname {new:?} is taken by {}", other.email));
    }
    a.nickname = new.to_string();
    let (id, nickname) = (account_key(&a.email), a.nickname.clone());
    match write(&ctx, move |s| {
        s.update_account(&id, move |a| a.nickname = nickname)
    })
    .await
    {
        Ok(Some(_)) => {}
        Ok(None) => return err(404, format!("{} was removed meanwhile", a.email)),
        Err(r) => return r,
    }
    HttpResponse::Ok().json(api::Renamed {
        email: a.email,
        nickname: a.nickname,
    })
}

pub(super) async fn set_default(ctx: Data, who: web::Path<String>) -> HttpResponse {
    let a = match resolve(&ctx, &who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = account_key(&a.email);
    let key = id.clone();
    if let Err(r) = write(&ctx, move |s| s.set_default(&key)).await {
        return r;
    }
    // New conversations of the default pool start on the default account: it heads the
    // pool's drain order (specs/routing.md R8).
    let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    let id: AccountId = id.as_str().into();
    let mut order: Vec<AccountId> = vec![id.clone()];
    order.extend(
        pools
            .get(DEFAULT_POOL)
            .into_iter()
            .flatten()
            .filter(|m| **m != id)
            .cloned(),
    );
    let _ = ctx
        .sup
        .addr()
        .send(SetPool {
            name: DEFAULT_POOL.to_string(),
            members: order,
        })
        .await;
    if let Err(r) = save_pools(&ctx).await {
        return r;
    }
    HttpResponse::Ok().json(api::DefaultSet { default: a.email })
}

pub(super) async fn force_refresh(ctx: Data, who: web::Path<String>) -> HttpResponse {
    let a = match resolve(&ctx, &who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(addr) = ctx
        .sup
        .account(&account_key(&a.email).as_str().into())
        .await
    else {
        return err(404, format!("{} has no running actor", a.email));
    };
    let Ok(state) = addr.send(GetState).await else {
        return internal("the account actor stopped");
    };
    let expires_at = state.machine.expires_at();
    let wait = ctx.config.oauth.refresh_timeout.0;
    let asked = addr.send(Unauthorized {
        generation: state.generation,
    });
    let Ok(result) = tokio::time::timeout(wait, asked).await else {
        // The call is out and its answer is still awaited: it is not given up (it carries the
        // grant's only live refresh token), and the account serves on its current token.
        let now = ctx.clock.now();
        let serving = if now < expires_at {
            format!(
                "it serves on its current token until {}",
                crate::store::mirror::rfc3339(expires_at.as_millis())
            )
        } else {
            "its current token has expired, so it takes no requests until the answer comes".into()
        };
        return HttpResponse::Accepted().json(api::Refreshed {
            email: a.email.clone(),
            state: Phase::Refreshing.as_str().to_string(),
            waiting: Some(format!(
                "the token endpoint has not answered within {} s; ccs keeps waiting for its \
                 answer (up to {} s) and never sends the old refresh token meanwhile; {serving}. \
                 `ccs cliproxy quota` shows when it is done",
                wait.as_secs(),
                crate::oauth::refresh_hard_bound(&ctx.config).as_secs()
            )),
        });
    };
    let state = addr.send(GetState).await.ok();
    let phase = state
        .as_ref()
        .map(|s| s.machine.phase())
        .unwrap_or(Phase::Dead);
    match (result, phase) {
        (Ok(Ok(_)), _) => {
            HttpResponse::Ok().json(api::Refreshed {
                email: a.email,
                state: phase.as_str().to_string(),
                waiting: None,
            })
        }
        (_, Phase::Dead) => err(
            502,
            format!(
                "refreshing {} failed: the authority says the grant is gone; log the account in again with `ccs claude --auth --add`",
                a.email
            ),
        ),
        _ => {
            let retry = state
                .and_then(|s| s.machine.retry_at())
                .map(|t| format!(" at {}", crate::store::mirror::rfc3339(t.as_millis())))
                .unwrap_or_default();
            err(
                502,
                format!(
                    "refreshing {} failed for now (the token endpoint did not give a usable answer); it is retried automatically{retry}, nothing to do",
                    a.email
                ),
            )
        }
    }
}
