//! `/v0/management/pools…`: list, set and delete named pools of accounts.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use ccs_actors::routing::AccountId;
use ccs_actors::supervisor::{DeletePool, SetPool, DEFAULT_POOL};
use serde::Deserialize;
use serde_json::json;

use super::{err, internal, resolve, save_pools, Data};
use crate::store::account_key;

pub(super) async fn pools(ctx: Data) -> HttpResponse {
    match ctx.sup.view().await {
        Ok(v) => HttpResponse::Ok().json(json!({"pools": v.pools.iter().map(|(k, m)| (k.clone(), m.iter().map(|a| a.to_string()).collect::<Vec<_>>())).collect::<BTreeMap<_, _>>()})),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(super) struct PoolBody {
    accounts: Vec<String>,
}

pub(super) async fn set_pool(
    ctx: Data,
    name: web::Path<String>,
    body: web::Json<PoolBody>,
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
    let pools = ctx.sup.view().await.map(|v| v.pools).unwrap_or_default();
    if let Err(e) = save_pools(&ctx, &pools) {
        return internal(e);
    }
    if let Some(head) = head {
        if let Err(e) = ctx.store.set_default(&head) {
            return internal(e);
        }
    }
    HttpResponse::Ok().json(json!({"pool": name, "accounts": pools.get(&name).map(|m| m.iter().map(|a| a.to_string()).collect::<Vec<_>>())}))
}

pub(super) async fn delete_pool(ctx: Data, name: web::Path<String>) -> HttpResponse {
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
