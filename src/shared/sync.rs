//! What the daemons tell each other besides tokens: session bindings and account limits.
//!
//! `SharedStore` is the actors' `Store` port for a daemon in a shared pool: every write goes to
//! its own sled store as before (tokens and benches durable there first), and bindings and
//! limits then go to Redis behind the request, in order, on one task (`bind:S` with the
//! affinity TTL, `quota:A` until its latest reset), each with a message on the `events`
//! channel. `listen` applies the peers' messages to this daemon's supervisor and accounts, and
//! when Redis comes back after an outage offers what it kept meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ccs_actors::account::{PeerQuota, PeerToken};
use ccs_actors::ports::{Persisting, Store, StoreError};
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::supervisor::{AccountAddr, PeerBound, SupervisorHandle};
use ccs_actors::{Secret, Token};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Envelope, News, Shared};
use crate::store::records::QuotaRecord;
use crate::store::SledStore;

/// A write for Redis, queued behind the request that caused it.
#[derive(Clone, Debug)]
enum Op {
    Bind {
        session: String,
        account: String,
    },
    Unbind(Vec<String>),
    Quota {
        account: String,
        record: QuotaRecord,
    },
    /// A token Redis has not seen (a login): a new grant.
    Offer {
        account: String,
        token: Token,
    },
}

impl Op {
    /// Ops with the same key replace each other in the backlog kept while Redis is away.
    fn key(&self) -> String {
        match self {
            Op::Bind { session, .. } => format!("bind:{session}"),
            Op::Unbind(sessions) => format!("unbind:{}", sessions.join(",")),
            Op::Quota { account, .. } => format!("quota:{account}"),
            Op::Offer { account, .. } => format!("token:{account}"),
        }
    }
}

/// The actors' store in a shared pool: sled here, Redis for what the peers must see.
pub struct SharedStore {
    local: Arc<SledStore>,
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Op>,
}

impl SharedStore {
    /// Starts the task that writes to Redis in order (must run inside a tokio runtime).
    pub fn start(
        local: Arc<SledStore>,
        shared: Arc<Shared>,
        affinity_ttl: Duration,
    ) -> Arc<SharedStore> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_in_order(shared.clone(), rx, affinity_ttl));
        Arc::new(SharedStore {
            local,
            shared,
            queue: tx,
        })
    }

    /// A token that is neither Redis's (a commit, a peer's) nor waiting to be offered is a new
    /// grant (a login): offered behind the writes before it.
    fn offer_if_new(&self, account: &str, token: &Token) {
        if !self.shared.now_holds(account, token) {
            self.send(Op::Offer {
                account: account.to_string(),
                token: token.clone(),
            });
        }
    }

    fn send(&self, op: Op) {
        // The task ends only with the runtime; a write after that has nowhere to go.
        let _ = self.queue.send(op);
    }
}

impl Store for SharedStore {
    fn save_token(&self, account: &str, token: &Token) -> Result<(), StoreError> {
        self.local.save_token(account, token)?;
        self.offer_if_new(account, token);
        Ok(())
    }

    fn persist_token(&self, account: &str, token: &Token) -> Persisting {
        // Durable here first (the answer waits for that only); a token Redis has not seen
        // then goes out behind it, in order with the other writes.
        let write = self.local.persist_token(account, token);
        self.offer_if_new(account, token);
        write
    }

    fn save_refresh_intent(&self, account: &str, refresh: &Secret) -> Result<(), StoreError> {
        self.local.save_refresh_intent(account, refresh)
    }

    fn persist_refresh_intent(&self, account: &str, refresh: &Secret) -> Persisting {
        self.local.persist_refresh_intent(account, refresh)
    }

    fn save_dead(&self, account: &str) -> Result<(), StoreError> {
        self.local.save_dead(account)
    }

    fn persist_dead(&self, account: &str) -> Persisting {
        self.local.persist_dead(account)
    }

    fn save_quota(&self, account: &str, quota: &Quota, durable: bool) -> Result<(), StoreError> {
        self.local.save_quota(account, quota, durable)?;
        if durable {
            self.send(Op::Quota {
                account: account.to_string(),
                record: QuotaRecord::from(quota),
            });
        }
        Ok(())
    }

    fn persist_quota(&self, account: &str, quota: &Quota, durable: bool) -> Persisting {
        let write = self.local.persist_quota(account, quota, durable);
        if durable {
            self.send(Op::Quota {
                account: account.to_string(),
                record: QuotaRecord::from(quota),
            });
        }
        write
    }

    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError> {
        self.local.save_binding(session, binding)?;
        self.send(Op::Bind {
            session: session.to_string(),
            account: binding.account.to_string(),
        });
        Ok(())
    }

    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError> {
        self.local.remove_bindings(sessions)?;
        if !sessions.is_empty() {
            self.send(Op::Unbind(sessions.to_vec()));
        }
        Ok(())
    }
}

impl Shared {
    /// Until when Redis keeps an account's limits: its latest reset or backoff, at least a
    /// second, at most eight days.
    fn quota_ttl(&self, record: &QuotaRecord) -> Duration {
        let now = self.now_ms();
        let latest = [
            record.five_hour.resets_at_ms,
            record.seven_day.resets_at_ms,
            record.backoff_until_ms,
        ]
        .into_iter()
        .chain(record.families.values().map(|w| w.resets_at_ms))
        .flatten()
        .max()
        .unwrap_or(0);
        Duration::from_millis(latest.saturating_sub(now))
            .clamp(Duration::from_secs(1), ccs_actors::quota::MAX_RESET_AHEAD)
    }

    async fn apply(&self, op: &Op, affinity_ttl: Duration) -> Result<(), String> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut c = self.conn();
        match op {
            Op::Bind { session, account } => {
                let key = self.key("bind", session);
                let (value, ttl) = (account.clone(), ms(affinity_ttl));
                self.run(async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
                self.tell(News::Bind {
                    session: session.clone(),
                    account: account.clone(),
                })
                .await
            }
            Op::Unbind(sessions) => {
                let keys: Vec<String> = sessions.iter().map(|s| self.key("bind", s)).collect();
                self.run(async move { redis::cmd("DEL").arg(keys).query_async::<()>(&mut c).await })
                    .await
            }
            Op::Offer { account, token } => self.offer(account, token, None).await.map(|_| ()),
            Op::Quota { account, record } => {
                let key = self.key("quota", account);
                let json = serde_json::to_string(record).map_err(|e| e.to_string())?;
                let ttl = ms(self.quota_ttl(record));
                self.run(async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(json)
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
                self.tell(News::Quota {
                    account: account.clone(),
                    quota: record.clone(),
                })
                .await
            }
        }
    }

    /// The limits Redis holds for `account`, if any.
    pub async fn read_quota(&self, account: &str) -> Result<Option<Quota>, String> {
        let key = self.key("quota", account);
        let mut c = self.conn();
        let json: Option<String> = self
            .run(async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(json
            .and_then(|j| serde_json::from_str::<QuotaRecord>(&j).ok())
            .map(|r| Quota::from(&r)))
    }
}

/// Writes the queued ops to Redis in order. While Redis is away the newest op per key is kept
/// and written, in order, once it answers again.
async fn write_in_order(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    affinity_ttl: Duration,
) {
    let mut backlog: Vec<Op> = Vec::new();
    while let Some(op) = rx.recv().await {
        if !backlog.is_empty() {
            // Redis was away: the backlog first, in order, while it answers.
            let mut kept = Vec::new();
            for old in backlog.drain(..) {
                if !kept.is_empty() || shared.apply(&old, affinity_ttl).await.is_err() {
                    kept.push(old);
                }
            }
            backlog = kept;
        }
        if !backlog.is_empty() || shared.apply(&op, affinity_ttl).await.is_err() {
            let key = op.key();
            backlog.retain(|o| o.key() != key);
            backlog.push(op);
        }
    }
}

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

async fn subscribe(shared: &Shared) -> Result<redis::aio::PubSub, String> {
    let connect = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(shared.channel()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(super::OP_TIMEOUT, connect).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
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
    let (s, id, t, paused) = (
        store.clone(),
        account.to_string(),
        token.clone(),
        record.paused,
    );
    let written = tokio::task::spawn_blocking(move || {
        s.put_account(&record)?;
        s.save_token(&id, &t)
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
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
    for (account, token) in shared.offer_pending().await {
        if let Some(addr) = account_addr(sup, &account).await {
            addr.do_send(PeerToken(token));
        }
    }
    let Ok(view) = sup.view().await else { return };
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
    tracing::info!("reconciled with the shared store after its outage");
}
