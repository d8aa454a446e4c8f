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
use serde::Deserialize;
use serde_json::{json, Value};

use super::{err, internal, resolve, save_pools, Ctx, Data};
use crate::oauth::TokenResponse;
use crate::store::mirror::rfc3339;
use crate::store::{account_key, Account};

pub(super) fn window_json(w: &Window, now: Timestamp) -> Value {
    json!({
        "status": w.status.as_str(),
        "utilization": w.utilization_at(now),
        "resets_at": w.resets_at.filter(|r| *r > now).map(|r| rfc3339(r.as_millis())),
        "seen_at": w.seen_at.map(|r| rfc3339(r.as_millis())),
    })
}

fn phase_name(m: Option<&MemberView>, a: &Account) -> &'static str {
    match m {
        Some(m) => m.health.phase.as_str(),
        None if a.dead => "dead",
        None => "unknown",
    }
}

/// One account as the CLI shows it.
fn account_json(
    a: &Account,
    m: Option<&MemberView>,
    view: &SupervisorView,
    default: Option<&str>,
    now: Timestamp,
    last_used: Option<u64>,
) -> Value {
    let id = account_key(&a.email);
    let state = phase_name(m, a);
    let position = view
        .pools
        .get(DEFAULT_POOL)
        .and_then(|order| order.iter().position(|x| **x == *id))
        .map(|i| i + 1);
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
    json!({
        "email": a.email,
        "nickname": a.nickname,
        "default": default == Some(id.as_str()),
        "state": state,
        "fix": fix,
        "refused_until": refused.map(|t| rfc3339(t.as_millis())),
        "paused": a.paused,
        "plan": a.plan,
        "expires_at": m.map(|m| rfc3339(m.health.expires_at.as_millis())),
        "position": position,
        "five_hour": quota.map(|q| window_json(&q.five_hour, now)),
        "seven_day": quota.map(|q| window_json(&q.seven_day, now)),
        "cooldown_until": cooldown.map(|t| rfc3339(t.as_millis())),
        "created_at": rfc3339(a.created_at_ms),
        "last_used_at": last_used.or(a.last_used_at_ms).map(rfc3339),
    })
}

pub(super) async fn accounts_value(ctx: &Ctx) -> Result<Value, HttpResponse> {
    let view = ctx.sup.view().await.map_err(internal)?;
    let accounts = ctx.store.accounts().map_err(internal)?;
    let default = ctx.store.default_account().map_err(internal)?;
    let now = ctx.clock.now();
    let list: Vec<Value> = accounts
        .iter()
        .map(|a| {
            let id = account_key(&a.email);
            let m = view.accounts.iter().find(|m| *m.id == *id);
            account_json(a, m, &view, default.as_deref(), now, ctx.last_used_ms(&id))
        })
        .collect();
    Ok(json!({"accounts": list}))
}

pub(super) async fn list_accounts(ctx: Data) -> HttpResponse {
    match accounts_value(&ctx).await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub(super) struct AddBody {
    /// The authority's token response, as the login received it.
    token_response: TokenResponse,
    /// Used when the token response names no e-mail (then the profile endpoint did).
    email: Option<String>,
    plan: Option<String>,
    account_uuid: Option<String>,
    organization_uuid: Option<String>,
    organization_name: Option<String>,
}

pub(super) async fn add_account(ctx: Data, body: web::Json<AddBody>) -> HttpResponse {
    let b = body.into_inner();
    let Some(email) = b
        .token_response
        .email()
        .map(str::to_string)
        .or(b.email.clone())
    else {
        return err(
            400,
            "the token response names no e-mail address; pass `email`",
        );
    };
    let now = ctx.clock.now();
    let Some(token) = b.token_response.token(now, None) else {
        return err(400, "the token response has no refresh_token");
    };
    let id = account_key(&email);
    let existing = match ctx.store.account(&id) {
        Ok(a) => a,
        Err(e) => return internal(e),
    };
    let created = existing.is_none();
    let mut account = match existing {
        Some(a) => a,
        None => match ctx.store.new_account(&email) {
            Ok(a) => a,
            Err(e) => return internal(e),
        },
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
    if let Err(e) = ctx.store.put_account(&account) {
        return internal(e);
    }
    let id: AccountId = id.as_str().into();
    match ctx.sup.account(&id).await {
        // A known account: the actor persists the new token before using it.
        Some(addr) => {
            if addr.send(LoggedIn(token)).await.is_err() {
                return internal("the account actor stopped");
            }
        }
        None => {
            if let Err(e) = ccs_actors::ports::Store::save_token(&*ctx.store, &id, &token) {
                return internal(e);
            }
            let added = ctx
                .sup
                .add(AddAccount {
                    id: id.clone(),
                    initial: ccs_actors::account::Initial::Token(token),
                    quota: Default::default(),
                    paused: account.paused,
                    pools: vec![],
                })
                .await;
            if let Err(e) = added {
                return internal(e);
            }
        }
    }
    let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    if let Err(e) = save_pools(&ctx, &pools) {
        return internal(e);
    }
    tracing::info!(account = %email, created, "account logged in");
    let v = accounts_value(&ctx).await.unwrap_or(Value::Null);
    let this = v["accounts"]
        .as_array()
        .and_then(|l| l.iter().find(|a| a["email"] == email).cloned())
        .unwrap_or(Value::Null);
    HttpResponse::Ok().json(json!({"created": created, "account": this}))
}

pub(super) async fn remove_account(ctx: Data, who: web::Path<String>) -> HttpResponse {
    let a = match resolve(&ctx, &who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = account_key(&a.email);
    let _ = ctx.sup.addr().send(RemoveAccount(id.as_str().into())).await;
    if let Err(e) = ctx.store.remove_account(&id) {
        return internal(e);
    }
    let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    if let Err(e) = save_pools(&ctx, &pools) {
        return internal(e);
    }
    HttpResponse::Ok().json(json!({"removed": a.email}))
}

async fn set_paused(ctx: &Ctx, who: &str, paused: bool) -> HttpResponse {
    let mut a = match resolve(ctx, who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    a.paused = paused;
    a.paused_at_ms = paused.then(|| ctx.clock.now().as_millis());
    if let Err(e) = ctx.store.put_account(&a) {
        return internal(e);
    }
    let _ = ctx
        .sup
        .addr()
        .send(SetPaused {
            id: account_key(&a.email).as_str().into(),
            paused,
        })
        .await;
    HttpResponse::Ok().json(json!({"email": a.email, "paused": paused}))
}

pub(super) async fn pause(ctx: Data, who: web::Path<String>) -> HttpResponse {
    set_paused(&ctx, &who, true).await
}

pub(super) async fn resume(ctx: Data, who: web::Path<String>) -> HttpResponse {
    set_paused(&ctx, &who, false).await
}

#[derive(Deserialize)]
pub(super) struct Rename {
    nickname: String,
}

pub(super) async fn rename(
    ctx: Data,
    who: web::Path<String>,
    body: web::Json<Rename>,
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
    if let Err(e) = ctx.store.put_account(&a) {
        return internal(e);
    }
    HttpResponse::Ok().json(json!({"email": a.email, "nickname": a.nickname}))
}

pub(super) async fn set_default(ctx: Data, who: web::Path<String>) -> HttpResponse {
    let a = match resolve(&ctx, &who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = account_key(&a.email);
    if let Err(e) = ctx.store.set_default(&id) {
        return internal(e);
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
    let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    if let Err(e) = save_pools(&ctx, &pools) {
        return internal(e);
    }
    HttpResponse::Ok().json(json!({"default": a.email}))
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
    let result = addr
        .send(Unauthorized {
            generation: state.generation,
        })
        .await;
    let state = addr.send(GetState).await.ok();
    let phase = state
        .as_ref()
        .map(|s| s.machine.phase)
        .unwrap_or(Phase::Dead);
    match (result, phase) {
        (Ok(Ok(_)), _) => {
            HttpResponse::Ok().json(json!({"email": a.email, "state": phase.as_str()}))
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
                .and_then(|s| s.machine.retry_at)
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
