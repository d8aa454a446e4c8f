//! A daemon joining the shared pool at start: the accounts the peers know and this daemon
//! does not are copied here, and for each account the newest token between this daemon's
//! sled copy and Redis's wins (specs/shared-store.md, S6), before any account actor starts.

use crate::shared::SharedError;
use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use ccs_actors::ports::Store as _;

use super::{choose_newest, Shared, Start};
use crate::store::records::AccountRecord;
use crate::store::{account_key, SledStore};

impl Shared {
    async fn hash(&self, name: &str) -> Result<HashMap<String, String>, SharedError> {
        let key = format!("{}:{name}", self.prefix);
        let mut c = self.conn()?;
        self.run(async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await
    }

    /// A peer's account record (`accounts` hash), if the pool has one by that id.
    pub async fn account_record(&self, id: &str) -> Result<Option<AccountRecord>, SharedError> {
        let key = format!("{}:accounts", self.prefix);
        let (mut c, id) = (self.conn()?, id.to_string());
        let json: Option<String> = self
            .run(async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(id)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Shares an account logged in here: its record, then its token as a new grant (the
    /// peers hear of the token and add the account). A removal of it before is forgotten.
    pub async fn share_account(
        &self,
        id: &str,
        record: &AccountRecord,
        token: &ccs_actors::Token,
    ) -> Result<(), SharedError> {
        self.put_account(id, record).await?;
        let key = format!("{}:removed", self.prefix);
        let (mut c, account) = (self.conn()?, id.to_string());
        self.run(async move {
            redis::cmd("HDEL")
                .arg(key)
                .arg(account)
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.offer(id, token, None).await.map(|_| ())
    }

    /// Removes an account from the pool: its record, token, lease and limits go, a tombstone
    /// stays (so a daemon that was down meanwhile removes it too at its next start instead of
    /// offering it back), and the peers hear of it.
    pub async fn share_removal(&self, id: &str) -> Result<(), SharedError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(format!("{}:accounts", self.prefix))
            .arg(id)
            .ignore()
            .cmd("HSET")
            .arg(format!("{}:removed", self.prefix))
            .arg(id)
            .arg(self.now_ms())
            .ignore()
            .cmd("DEL")
            .arg(self.key("token", id))
            .arg(self.key("lease", id))
            .arg(self.key("fence", id))
            .arg(self.key("quota", id))
            .ignore();
        let mut c = self.conn()?;
        self.run(async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        self.entry(id, |e| *e = Default::default());
        self.tell(super::News::Removed {
            account: id.to_string(),
        })
        .await
    }

    async fn put_account(&self, id: &str, record: &AccountRecord) -> Result<(), SharedError> {
        let key = format!("{}:accounts", self.prefix);
        let json = serde_json::to_string(record)?;
        let (mut c, id) = (self.conn()?, id.to_string());
        self.run(async move {
            redis::cmd("HSET")
                .arg(key)
                .arg(id)
                .arg(json)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}

/// A write to this daemon's store, made on the blocking pool: a write waits for its flush,
/// and `join` runs on the actors' thread when a daemon joins late (Redis was away at its
/// start), where no actor may wait on disk.
async fn off_thread<T: Send + 'static>(
    store: &Arc<SledStore>,
    write: impl FnOnce(&SledStore) -> Result<T, ccs_actors::ports::StoreError> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || write(&store))
        .await
        .context("the store's worker stopped")??)
}

/// Joins the shared pool: copies the peers' accounts in, writes this daemon's accounts out,
/// and leaves each account's newest token in the local store for `load` to start it from.
pub async fn join(store: &Arc<SledStore>, shared: &Shared) -> Result<()> {
    let unreachable = |e: SharedError| anyhow::anyhow!("{e}");
    let theirs = shared
        .hash("accounts")
        .await
        .map_err(unreachable)
        .context("reading the shared pool's accounts")?;
    // Accounts removed from the pool while this daemon was away go here too (unless logged in
    // here again since).
    let removed = shared
        .hash("removed")
        .await
        .map_err(unreachable)
        .context("reading the shared pool's removed accounts")?;
    for a in store.accounts()? {
        let id = account_key(&a.email);
        let at: Option<u64> = removed.get(id.as_str()).and_then(|t| t.parse().ok());
        if at.is_some_and(|t| t >= a.created_at_ms) && !theirs.contains_key(id.as_str()) {
            tracing::info!(account = %id, "removed from the shared pool while this daemon was away: removing it here");
            let gone = id.as_str().to_string();
            off_thread(store, move |s| s.remove_account(&gone)).await?;
        }
    }
    let mine: HashMap<String, AccountRecord> = store
        .accounts()?
        .into_iter()
        .map(|a| (account_key(&a.email).as_str().to_string(), a))
        .collect();
    for (id, json) in &theirs {
        if mine.contains_key(id) {
            continue;
        }
        match serde_json::from_str::<AccountRecord>(json) {
            Ok(record) => {
                tracing::info!(account = %id, "joining an account a peer daemon logged in");
                off_thread(store, move |s| s.put_account(&record)).await?;
            }
            Err(e) => {
                tracing::warn!(account = %id, error = %e, "an unreadable account record in the shared store")
            }
        }
    }
    for (id, record) in &mine {
        if !theirs.contains_key(id) {
            shared.put_account(id, record).await.map_err(unreachable)?;
        }
    }
    for record in store.accounts()? {
        let id = account_key(&record.email);
        let local = store.token(&id)?;
        let remote = shared.read_token(&id).await.map_err(unreachable)?;
        match choose_newest(local.as_ref(), remote) {
            Start::Nothing => {}
            Start::Same(_) => {
                if let Some(t) = &local {
                    shared.now_holds(&id, t);
                }
            }
            Start::Shared(generation, token) => {
                tracing::info!(account = %id, generation, "a peer's token is newer than this daemon's copy: starting from it");
                store.persist_token(&id, &token).await?;
                shared.now_holds(&id, &token);
            }
            Start::Local { over } => {
                let token = local.expect("Start::Local comes with a local token");
                match shared.offer(&id, &token, over).await.map_err(unreachable)? {
                    Some(generation) => {
                        tracing::info!(account = %id, generation, "this daemon's token is the newest: written to the shared store")
                    }
                    None => {
                        // A peer wrote a newer one in between: start from that.
                        if let Some((_, newer)) =
                            shared.read_token(&id).await.map_err(unreachable)?
                        {
                            store.persist_token(&id, &newer).await?;
                            shared.now_holds(&id, &newer);
                        }
                    }
                }
            }
        }
        if let Some(quota) = shared.read_quota(&id).await.map_err(unreachable)? {
            store.persist_quota(&id, &quota, true).await?;
        }
    }
    // The pool's drain order is the pool's: a joining daemon takes it (for the accounts it
    // has); the first daemon writes its own.
    match shared.pools().await.map_err(unreachable)? {
        Some(pools) => {
            let known: std::collections::HashSet<String> = store
                .accounts()?
                .iter()
                .map(|a| account_key(&a.email).as_str().to_string())
                .collect();
            let pools: std::collections::BTreeMap<String, Vec<String>> = pools
                .into_iter()
                .map(|(name, members)| {
                    (
                        name,
                        members.into_iter().filter(|m| known.contains(m)).collect(),
                    )
                })
                .collect();
            off_thread(store, move |s| s.set_pools(&pools)).await?;
        }
        None => shared.share_pools(store.pools()?).await,
    }
    Ok(())
}

/// After a late join (the daemon started while Redis was away, its actors already running):
/// the accounts the pool added start here, and every account hears of the token the join left
/// in the store (a newer one from the pool is adopted; the same one changes nothing), and the
/// pools are the pool's.
pub async fn catch_up(
    shared: &Shared,
    store: &Arc<SledStore>,
    sup: &ccs_actors::supervisor::SupervisorHandle,
) -> Result<()> {
    for record in store.accounts()? {
        let id = account_key(&record.email);
        let Some(token) = store.token(&id)? else {
            continue;
        };
        shared.now_holds(&id, &token);
        match sup.account(&id.as_str().into()).await {
            Some(addr) => addr.do_send(ccs_actors::account::PeerToken(token)),
            None => {
                sup.add(ccs_actors::supervisor::AddAccount {
                    id: id.as_str().into(),
                    initial: ccs_actors::account::Initial::Token(token),
                    quota: store.quota(&id)?,
                    paused: record.paused,
                    pools: vec![],
                })
                .await?;
            }
        }
    }
    super::apply_pools(sup, store, store.pools()?).await;
    Ok(())
}
