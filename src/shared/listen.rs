//! The peers' news, applied to this daemon: tokens to the account actors (`PeerToken`),
//! bindings to the supervisor (`PeerBound`), limits (`PeerQuota`), pauses and pools, and
//! accounts a peer logged in. After an outage: the tokens kept meanwhile are offered, and any
//! newer token in Redis adopted.

use crate::shared::SharedError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ccs_actors::account::{PeerQuota, PeerToken};
use ccs_actors::ports::Store;
use ccs_actors::quota::Quota;
use ccs_actors::supervisor::{AccountAddr, PeerBound, SupervisorHandle};
use ccs_actors::Token;
use futures_util::StreamExt;

use super::{Envelope, News, Shared};
use crate::store::SledStore;

/// Applies the peers' news to this daemon until the runtime stops; reconnects after an outage
/// (every second) and then reconciles: offers the tokens kept meanwhile and adopts every
/// newer token a peer wrote.
pub async fn listen(shared: Arc<Shared>, sup: SupervisorHandle, store: Arc<SledStore>) {
    let mut first = true;
    loop {
        match subscribe(&shared).await {
            Ok(mut pubsub) => {
                if !first {
                    reconcile(&shared, &sup).await;
                }
                first = false;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Envelope>(&payload) {
                        Ok(env) if env.by != shared.daemon => {
                            hear(&shared, &sup, &store, env.news).await
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "an unreadable message on the shared store's channel")
                        }
                    }
                }
                tracing::warn!("lost the shared store's channel: reconnecting");
            }
            Err(e) => {
                tracing::debug!(error = %e, "the shared store's channel is not reachable yet")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe(shared: &Shared) -> Result<redis::aio::PubSub, SharedError> {
    let connect = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(shared.channel()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(super::OP_TIMEOUT, connect).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(SharedError::Redis(e)),
        Err(_) => Err(SharedError::Timeout(super::OP_TIMEOUT)),
    }
}

async fn account_addr(
    sup: &SupervisorHandle,
    account: &str,
) -> Option<actix::Addr<ccs_actors::account::AccountActor>> {
    sup.addr()
        .send(AccountAddr(account.into()))
        .await
        .ok()
        .flatten()
}

async fn hear(shared: &Shared, sup: &SupervisorHandle, store: &Arc<SledStore>, news: News) {
    if !shared.joined() {
        // Not joined yet (started while Redis was away): the join reads everything anyway.
        return;
    }
    match news {
        News::Token {
            account,
            generation,
        } => {
            if generation <= shared.held(&account) {
                return;
            }
            match account_addr(sup, &account).await {
                Some(addr) => {
                    if let Ok(Some((_, token))) = shared.read_token(&account).await {
                        addr.do_send(PeerToken(token));
                    }
                }
                None => adopt_account(shared, sup, store, &account).await,
            }
        }
        News::Bind { session, account } => sup.addr().do_send(PeerBound {
            session,
            account: account.as_str().into(),
        }),
        News::Quota { account, quota } => {
            if let Some(addr) = account_addr(sup, &account).await {
                addr.do_send(PeerQuota(Quota::from(&quota)));
            }
        }
        News::Pools { pools } => apply_pools(sup, store, pools).await,
        News::Removed { account } => {
            tracing::info!(
                account,
                "a peer daemon removed this account from the pool: removing it here"
            );
            // A later login of it starts over at generation 1: forget the old generations.
            shared.entry(&account, |e| *e = Default::default());
            let _ = sup
                .addr()
                .send(ccs_actors::supervisor::RemoveAccount(
                    account.as_str().into(),
                ))
                .await;
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.remove_account(&account)).await;
            if let Ok(view) = sup.view().await {
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || s.set_pools(&view.pools)).await;
            }
        }
        News::Paused { account, paused } => {
            let id: ccs_actors::routing::AccountId = account.as_str().into();
            let at = paused.then(|| shared.now_ms());
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                s.update_account(&account, move |a| {
                    a.paused = paused;
                    a.paused_at_ms = at;
                })
            })
            .await;
            let _ = sup
                .addr()
                .send(ccs_actors::supervisor::SetPaused { id, paused })
                .await;
        }
    }
}

/// A peer's pools: each one it names takes its members (those this daemon has) in its order;
/// written down here too.
pub async fn apply_pools(
    sup: &SupervisorHandle,
    store: &Arc<SledStore>,
    pools: std::collections::BTreeMap<String, Vec<String>>,
) {
    let Ok(view) = sup.view().await else { return };
    let known: std::collections::HashSet<&str> = view.accounts.iter().map(|m| &*m.id).collect();
    for (name, members) in pools {
        let members = members
            .iter()
            .filter(|m| known.contains(m.as_str()))
            .map(|m| m.as_str().into())
            .collect();
        let _ = sup
            .addr()
            .send(ccs_actors::supervisor::SetPool { name, members })
            .await;
    }
    if let Ok(view) = sup.view().await {
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.set_pools(&view.pools)).await;
    }
}

/// A peer logged in an account this daemon does not have: it joins here too (written down,
/// then started, in the default pool).
async fn adopt_account(
    shared: &Shared,
    sup: &SupervisorHandle,
    store: &Arc<SledStore>,
    account: &str,
) {
    let (Ok(Some(record)), Ok(Some((_, token)))) = (
        shared.account_record(account).await,
        shared.read_token(account).await,
    ) else {
        return;
    };
    let (s, paused) = (store.clone(), record.paused);
    let written = match tokio::task::spawn_blocking(move || s.put_account(&record)).await {
        Ok(Ok(())) => store.persist_token(account, &token).await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ccs_actors::ports::StoreError::WriterStopped),
    };
    if written.is_err() {
        tracing::warn!(account, "could not write down an account a peer logged in");
        return;
    }
    shared.now_holds(account, &token);
    tracing::info!(
        account,
        "a peer daemon logged this account in: it joins here too"
    );
    let added = sup
        .add(ccs_actors::supervisor::AddAccount {
            id: account.into(),
            initial: ccs_actors::account::Initial::Token(token),
            quota: Quota::default(),
            paused,
            pools: vec![],
        })
        .await;
    if let (Ok(()), Ok(view)) = (added, sup.view().await) {
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.set_pools(&view.pools)).await;
    }
}

/// After an outage: what this daemon kept goes to Redis, and every newer token there comes
/// here.
async fn reconcile(shared: &Shared, sup: &SupervisorHandle) {
    if !shared.joined() {
        return;
    }
    for (account, token) in shared.offer_pending().await {
        if let Some(addr) = account_addr(sup, &account).await {
            addr.do_send(PeerToken(token));
        }
    }
    let Ok(view) = sup.view().await else { return };
    // A peer's bench sent while this daemon was not yet listening again is in `quota:A`
    // (kept until its reset): taken when it limits the account now and this daemon knows of
    // no limit on it, never over one of its own (which its writer may still be sending).
    let now = shared.clock.now();
    for m in view
        .accounts
        .iter()
        .filter(|m| m.quota.available(now, None))
    {
        if let Ok(Some(q)) = shared.read_quota(&m.id).await {
            if q.available(now, None) {
                continue;
            }
            if let Some(addr) = account_addr(sup, &m.id).await {
                addr.do_send(PeerQuota(q));
            }
        }
    }
    let mut newer: HashMap<String, Token> = HashMap::new();
    for m in &view.accounts {
        if let Ok(Some((g, t))) = shared.read_token(&m.id).await {
            if g > shared.held(&m.id) {
                newer.insert(m.id.to_string(), t);
            }
        }
    }
    for (account, token) in newer {
        if let Some(addr) = account_addr(sup, &account).await {
            addr.do_send(PeerToken(token));
        }
    }
    // "Reconciled" only once nothing kept during the outage is left to send (the writer
    // says it when its backlog is empty, `sync.rs`).
    match shared.unsent() {
        0 => tracing::info!("reconciled with the shared store after its outage"),
        n => tracing::info!(
            unsent = n,
            "the shared store is back: its newer tokens are taken; the writes kept during its \
             outage are being sent"
        ),
    }
}
