//! The management API (`/v0/management/*`): everything the CLI reads or changes goes through
//! here, because the daemon is the only process that opens the store. Guarded by the
//! management secret, with a lockout after five failures from one address.
//!
//! Must not: return a token, or change the store without telling the supervisor (and the other
//! way round).

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use ccs_actors::account::{GetLease, GetState, LoggedIn, ObserveUsage, Unauthorized};
use ccs_actors::lifecycle::Phase;
use ccs_actors::quota::Window;
use ccs_actors::routing::AccountId;
use ccs_actors::supervisor::{
    AddAccount, DeletePool, MemberView, RemoveAccount, SetPaused, SetPool, SupervisorView,
    DEFAULT_POOL,
};
use ccs_actors::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::oauth::TokenResponse;
use crate::store::mirror::rfc3339;
use crate::store::{account_key, Account};

type Data = web::Data<Ctx>;

fn err(status: u16, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({"error": message.into()}))
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    err(500, e.to_string())
}

/// Finds an account by e-mail or nickname; the error lists the known ones.
fn resolve(ctx: &Ctx, who: &str) -> Result<Account, HttpResponse> {
    let accounts = ctx.store.accounts().map_err(internal)?;
    let key = account_key(who);
    if let Some(a) = accounts
        .iter()
        .find(|a| account_key(&a.email) == key || a.nickname.eq_ignore_ascii_case(who))
    {
        return Ok(a.clone());
    }
    let known: Vec<String> = accounts
        .iter()
        .map(|a| format!("{} ({})", a.nickname, a.email))
        .collect();
    Err(err(
        404,
        if known.is_empty() {
            format!("no account {who:?}: none is logged in yet (run `ccs claude --auth`)")
        } else {
            format!("no account {who:?}; known accounts: {}", known.join(", "))
        },
    ))
}

fn window_json(w: &Window, now: Timestamp) -> Value {
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
        "last_used_at": a.last_used_at_ms.map(rfc3339),
    })
}

async fn accounts_value(ctx: &Ctx) -> Result<Value, HttpResponse> {
    let view = ctx.sup.view().await.map_err(internal)?;
    let accounts = ctx.store.accounts().map_err(internal)?;
    let default = ctx.store.default_account().map_err(internal)?;
    let now = ctx.clock.now();
    let list: Vec<Value> = accounts
        .iter()
        .map(|a| {
            let id = account_key(&a.email);
            let m = view.accounts.iter().find(|m| *m.id == *id);
            account_json(a, m, &view, default.as_deref(), now)
        })
        .collect();
    Ok(json!({"accounts": list}))
}

macro_rules! guard {
    ($ctx:expr, $req:expr) => {
        if let Err(r) = $ctx.management_ok($req.headers(), $req.peer_addr().map(|a| a.ip())) {
            return r;
        }
    };
}

async fn list_accounts(ctx: Data, req: HttpRequest) -> HttpResponse {
    guard!(ctx, req);
    match accounts_value(&ctx).await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct AddBody {
    /// The authority's token response, as the login received it.
    token_response: TokenResponse,
    /// Used when the token response names no e-mail (then the profile endpoint did).
    email: Option<String>,
    plan: Option<String>,
    account_uuid: Option<String>,
    organization_uuid: Option<String>,
    organization_name: Option<String>,
}

async fn add_account(ctx: Data, req: HttpRequest, body: web::Json<AddBody>) -> HttpResponse {
    guard!(ctx, req);
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

fn save_pools(
    ctx: &Ctx,
    pools: &BTreeMap<String, Vec<AccountId>>,
) -> Result<(), ccs_actors::ports::StoreError> {
    let plain: BTreeMap<String, Vec<String>> = pools
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|a| a.to_string()).collect()))
        .collect();
    ctx.store.set_pools(&plain)
}

async fn remove_account(ctx: Data, req: HttpRequest, who: web::Path<String>) -> HttpResponse {
    guard!(ctx, req);
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

async fn pause(ctx: Data, req: HttpRequest, who: web::Path<String>) -> HttpResponse {
    guard!(ctx, req);
    set_paused(&ctx, &who, true).await
}

async fn resume(ctx: Data, req: HttpRequest, who: web::Path<String>) -> HttpResponse {
    guard!(ctx, req);
    set_paused(&ctx, &who, false).await
}

#[derive(Deserialize)]
struct Rename {
    nickname: String,
}

async fn rename(
    ctx: Data,
    req: HttpRequest,
    who: web::Path<String>,
    body: web::Json<Rename>,
) -> HttpResponse {
    guard!(ctx, req);
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

async fn set_default(ctx: Data, req: HttpRequest, who: web::Path<String>) -> HttpResponse {
    guard!(ctx, req);
    let a = match resolve(&ctx, &who) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Err(e) = ctx.store.set_default(&account_key(&a.email)) {
        return internal(e);
    }
    HttpResponse::Ok().json(json!({"default": a.email}))
}

async fn force_refresh(ctx: Data, req: HttpRequest, who: web::Path<String>) -> HttpResponse {
    guard!(ctx, req);
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

async fn pools(ctx: Data, req: HttpRequest) -> HttpResponse {
    guard!(ctx, req);
    match ctx.sup.view().await {
        Ok(v) => HttpResponse::Ok().json(json!({"pools": v.pools.iter().map(|(k, m)| (k.clone(), m.iter().map(|a| a.to_string()).collect::<Vec<_>>())).collect::<BTreeMap<_, _>>()})),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct PoolBody {
    accounts: Vec<String>,
}

async fn set_pool(
    ctx: Data,
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Json<PoolBody>,
) -> HttpResponse {
    guard!(ctx, req);
    let name = name.into_inner();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !valid {
        return err(
            400,
            format!("pool name {name:?}: use letters, digits, '-' or '_'"),
        );
    }
    let mut members: Vec<AccountId> = Vec::new();
    for who in &body.accounts {
        match resolve(&ctx, who) {
            Ok(a) => {
                let id: AccountId = account_key(&a.email).as_str().into();
                if !members.contains(&id) {
                    members.push(id);
                }
            }
            Err(r) => return r,
        }
    }
    let _ = ctx
        .sup
        .addr()
        .send(SetPool {
            name: name.clone(),
            members,
        })
        .await;
    let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    if let Err(e) = save_pools(&ctx, &pools) {
        return internal(e);
    }
    HttpResponse::Ok().json(json!({"pool": name, "accounts": pools.get(&name).map(|m| m.iter().map(|a| a.to_string()).collect::<Vec<_>>())}))
}

async fn delete_pool(ctx: Data, req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    guard!(ctx, req);
    if name.as_str() == DEFAULT_POOL {
        return err(400, "the default pool 'claude' cannot be deleted");
    }
    match ctx.sup.addr().send(DeletePool(name.to_string())).await {
        Ok(true) => {
            let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
            if let Err(e) = save_pools(&ctx, &pools) {
                return internal(e);
            }
            HttpResponse::Ok().json(json!({"deleted": name.as_str()}))
        }
        _ => err(404, format!("no pool {:?}", name.as_str())),
    }
}

async fn events(ctx: Data, req: HttpRequest) -> HttpResponse {
    guard!(ctx, req);
    match ctx.sup.view().await {
        Ok(v) => HttpResponse::Ok().json(json!({"events": v.events.iter().map(|e| json!({
            "at": rfc3339(e.at.as_millis()),
            "session": e.session,
            "from": e.from.to_string(),
            "to": e.to.to_string(),
            "reason": e.reason.as_str(),
        })).collect::<Vec<_>>()})),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct QuotaQuery {
    /// Fetch the usage endpoint for accounts whose data is older than this many seconds.
    max_age: Option<u64>,
    /// The pool whose next account to report (default `claude`).
    pool: Option<String>,
}

async fn quota(ctx: Data, req: HttpRequest, q: web::Query<QuotaQuery>) -> HttpResponse {
    guard!(ctx, req);
    if let Some(max_age) = q.max_age {
        let view = match ctx.sup.view().await {
            Ok(v) => v,
            Err(e) => return internal(e),
        };
        for m in view
            .accounts
            .iter()
            .filter(|m| m.health.phase != Phase::Dead)
        {
            if !ctx.usage_due(&m.id, Duration::from_secs(max_age)) {
                continue;
            }
            let Some(addr) = ctx.sup.account(&m.id).await else {
                continue;
            };
            let Ok(Ok(lease)) = addr.send(GetLease).await else {
                continue;
            };
            match crate::oauth::fetch_usage(&ctx.client, &ctx.config.oauth.usage_url, &lease.access)
                .await
            {
                Ok(body) => {
                    let _ = addr.send(ObserveUsage(body)).await;
                }
                Err(e) => tracing::warn!(account = %m.id, error = %e, "usage fetch failed"),
            }
        }
        // Let the published health reach the supervisor before reading it back.
        tokio::task::yield_now().await;
    }
    let pool = q.pool.clone().unwrap_or_else(|| DEFAULT_POOL.to_string());
    let next = ctx
        .sup
        .addr()
        .send(ccs_actors::supervisor::Peek {
            pool: pool.clone(),
            family: None,
        })
        .await
        .ok()
        .flatten()
        .map(|a| a.to_string());
    match accounts_value(&ctx).await {
        Ok(mut v) => {
            v["pool"] = json!(pool);
            v["next_for_new_sessions"] = json!(next);
            HttpResponse::Ok().json(v)
        }
        Err(r) => r,
    }
}

async fn status(ctx: Data, req: HttpRequest) -> HttpResponse {
    guard!(ctx, req);
    let view = match ctx.sup.view().await {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let now = ctx.clock.now();
    let hour_ago = now.minus(Duration::from_secs(3600));
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &view.accounts {
        *by_state.entry(m.health.phase.as_str()).or_default() += 1;
    }
    let paused = view.accounts.iter().filter(|m| m.paused).count();
    HttpResponse::Ok().json(json!({
        "state": "running",
        "url": ctx.url,
        "pid": std::process::id(),
        "uptime_secs": ctx.started.elapsed().as_secs(),
        "accounts": view.accounts.len(),
        "by_state": by_state,
        "paused": paused,
        "requests_last_hour": ctx.requests_last_hour(),
        "hops_last_hour": view.events.iter().filter(|e| e.at >= hour_ago).count(),
        "sessions": view.bindings.len(),
    }))
}

async fn shutdown(ctx: Data, req: HttpRequest) -> HttpResponse {
    guard!(ctx, req);
    let _ = ctx.shutdown.send(true);
    HttpResponse::Ok().json(json!({"stopping": true}))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v0/management")
            .route("/status", web::get().to(status))
            .route("/accounts", web::get().to(list_accounts))
            .route("/accounts", web::post().to(add_account))
            .route("/accounts/{who}", web::delete().to(remove_account))
            .route("/accounts/{who}/pause", web::post().to(pause))
            .route("/accounts/{who}/resume", web::post().to(resume))
            .route("/accounts/{who}/rename", web::post().to(rename))
            .route("/accounts/{who}/default", web::post().to(set_default))
            .route("/accounts/{who}/refresh", web::post().to(force_refresh))
            .route("/pools", web::get().to(pools))
            .route("/pools/{name}", web::put().to(set_pool))
            .route("/pools/{name}", web::delete().to(delete_pool))
            .route("/events", web::get().to(events))
            .route("/quota", web::get().to(quota))
            .route("/shutdown", web::post().to(shutdown)),
    );
}
