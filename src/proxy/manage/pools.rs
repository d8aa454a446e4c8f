//! `/v0/management/pools…`: list, set and delete named pools of accounts.

use actix_web::{web, HttpResponse};
use ccs_actors::routing::AccountId;
use ccs_actors::supervisor::{DeletePool, SetPool, DEFAULT_POOL};

use super::{err, internal, resolve, save_pools, write, Data};
use crate::api;
use crate::store::account_key;

fn names(members: &[AccountId]) -> Vec<String> {
    members.iter().map(|a| a.to_string()).collect()
}

pub(super) async fn pools(ctx: Data) -> HttpResponse {
    match ctx.sup.view().await {
        Ok(v) => HttpResponse::Ok().json(api::Pools {
            pools: v.pools.iter().map(|(k, m)| (k.clone(), names(m))).collect(),
        }),
        Err(e) => internal(e),
    }
}

pub(super) async fn set_pool(
    ctx: Data,
    name: web::Path<String>,
    body: web::Json<api::SetPool>,
) -> HttpResponse {
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
    // One change at a time, so the store keeps the pools the supervisor routes by.
    let _turn = ctx.account_changes.lock().await;
    // The default account is the head of the default pool (specs/routing.md R8).
    let head = (name == DEFAULT_POOL)
        .then(|| members.first().cloned())
        .flatten();
    let _ = ctx
        .sup
        .addr()
        .send(SetPool {
            name: name.clone(),
            members,
        })
        .await;
    if let Err(r) = save_pools(&ctx).await {
        return r;
    }
    if let Some(head) = head {
        if let Err(r) = write(&ctx, move |s| s.set_default(&head)).await {
            return r;
        }
    }
    let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    HttpResponse::Ok().json(api::PoolSet {
        accounts: pools.get(&name).map(|m| names(m)).unwrap_or_default(),
        pool: name,
    })
}

pub(super) async fn delete_pool(ctx: Data, name: web::Path<String>) -> HttpResponse {
    if name.as_str() == DEFAULT_POOL {
        return err(400, "the default pool 'claude' cannot be deleted");
    }
    let _turn = ctx.account_changes.lock().await;
    match ctx.sup.addr().send(DeletePool(name.to_string())).await {
        Ok(true) => {
            if let Err(r) = save_pools(&ctx).await {
                return r;
            }
            HttpResponse::Ok().json(api::PoolDeleted {
                deleted: name.into_inner(),
            })
        }
        _ => err(404, format!("no pool {:?}", name.as_str())),
    }
}
