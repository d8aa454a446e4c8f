//! What the daemons tell each other besides tokens: session bindings and account limits.
//!
//! `SharedStore` is the actors' `Store` port for a daemon in a shared pool: every write goes to
//! its own sled store as before (tokens and benches durable there first), and bindings and
//! limits then go to Redis behind the request, in order, on one task (`bind:S` with the
//! affinity TTL, `quota:A` until its latest reset), each with a message on the `events`
//! channel (`listen.rs` applies the peers' messages).

use crate::shared::SharedError;
use std::sync::Arc;
use std::time::Duration;

use ccs_actors::ports::{Persisting, Store, StoreError};
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::supervisor::{PeerBound, SupervisorHandle};
use ccs_actors::{Secret, Token};
use tokio::sync::mpsc;

use super::{News, Shared};
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
    /// Thinking blocks an answer here produced (`thinking:S`, a hash of block → account,
    /// living as long as the binding), read by a peer about to fit the conversation.
    Thinking {
        session: String,
        account: String,
        blocks: Vec<String>,
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
            // Each answer's blocks are news of their own: none replaces another.
            Op::Thinking {
                session, blocks, ..
            } => format!("thinking:{session}:{}", blocks.join(",")),
        }
    }
}

/// The actors' store in a shared pool: sled here, Redis for what the peers must see.
pub struct SharedStore {
    local: Arc<SledStore>,
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Op>,
    /// Asks the writer to try its backlog now and say how much is left (a clean stop).
    flush: mpsc::UnboundedSender<tokio::sync::oneshot::Sender<usize>>,
}

impl SharedStore {
    /// Starts the task that writes to Redis in order (must run inside a tokio runtime).
    pub fn start(
        local: Arc<SledStore>,
        shared: Arc<Shared>,
        affinity_ttl: Duration,
    ) -> Arc<SharedStore> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (flush, flushes) = mpsc::unbounded_channel();
        tokio::spawn(write_in_order(shared.clone(), rx, flushes, affinity_ttl));
        Arc::new(SharedStore {
            local,
            shared,
            queue: tx,
            flush,
        })
    }

    /// Sends what was kept during an outage, if Redis answers within `within` (a clean stop
    /// leaves nothing behind that it could send); how many writes are still unsent.
    pub async fn drain(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if self.flush.send(tx).is_err() {
                return self.shared.unsent();
            }
            let left = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(n)) => n,
                _ => return self.shared.unsent(),
            };
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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

    /// Where the conversations' thinking provenance tells the peers of the blocks answers
    /// here produced: written to Redis behind the request, in order.
    pub fn thinking_sink(&self) -> crate::proxy::continuity::PeerSink {
        let queue = self.queue.clone();
        Box::new(move |session, account, ids| {
            let _ = queue.send(Op::Thinking {
                session: session.to_string(),
                account: account.to_string(),
                blocks: ids.iter().map(crate::proxy::continuity::id_hex).collect(),
            });
        })
    }

    fn send(&self, op: Op) {
        // The task ends only with the runtime; a write after that has nowhere to go.
        let _ = self.queue.send(op);
    }
}

impl Store for SharedStore {
    fn persist_token(&self, account: &str, token: &Token) -> Persisting {
        // The machine's answer waits for the write here only; a token Redis has not seen (a
        // login) goes out on the Redis task, in order with the writes queued before it.
        let write = self.local.persist_token(account, token);
        self.offer_if_new(account, token);
        write
    }

    fn persist_refresh_intent(&self, account: &str, refresh: &Secret) -> Persisting {
        self.local.persist_refresh_intent(account, refresh)
    }

    fn persist_dead(&self, account: &str) -> Persisting {
        self.local.persist_dead(account)
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
    /// Tells the peers this daemon's pools changed (and keeps them for a daemon joining).
    pub async fn share_pools(&self, pools: std::collections::BTreeMap<String, Vec<String>>) {
        let key = format!("{}:pools", self.prefix);
        let json = serde_json::to_string(&pools).unwrap_or_default();
        let Ok(mut c) = self.conn() else {
            return;
        };
        let kept = self
            .run(async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if kept.is_ok() {
            let _ = self.tell(News::Pools { pools }).await;
        }
    }

    /// Tells the peers an account was paused or resumed.
    pub async fn share_paused(&self, account: &str, paused: bool) {
        let news = News::Paused {
            account: account.to_string(),
            paused,
        };
        if let Err(e) = self.tell(news).await {
            tracing::warn!(account, error = %e, "the peers did not hear of the pause");
        }
    }

    /// The pools the shared pool keeps, if any daemon wrote them.
    pub async fn pools(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<String, Vec<String>>>, SharedError> {
        let key = format!("{}:pools", self.prefix);
        let mut c = self.conn()?;
        let json: Option<String> = self
            .run(async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

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

    /// `SET key value PX ttl`, then the news to the peers.
    async fn set_and_tell(
        &self,
        key: String,
        value: String,
        ttl: Duration,
        news: News,
    ) -> Result<(), SharedError> {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut c = self.conn()?;
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
        self.tell(news).await
    }

    async fn apply(&self, op: &Op, affinity_ttl: Duration) -> Result<(), SharedError> {
        match op {
            Op::Bind { session, account } => {
                let news = News::Bind {
                    session: session.clone(),
                    account: account.clone(),
                };
                self.set_and_tell(
                    self.key("bind", session),
                    account.clone(),
                    affinity_ttl,
                    news,
                )
                .await
            }
            Op::Unbind(sessions) => {
                let keys: Vec<String> = sessions.iter().map(|s| self.key("bind", s)).collect();
                let mut c = self.conn()?;
                self.run(async move { redis::cmd("DEL").arg(keys).query_async::<()>(&mut c).await })
                    .await
            }
            Op::Offer { account, token } => self.offer(account, token, None).await.map(|_| ()),
            Op::Thinking {
                session,
                account,
                blocks,
            } => {
                let key = self.key("thinking", session);
                let ttl = u64::try_from(affinity_ttl.as_millis()).unwrap_or(u64::MAX);
                let mut pipe = redis::pipe();
                pipe.atomic().cmd("HSET").arg(&key);
                for b in blocks {
                    pipe.arg(b).arg(account);
                }
                pipe.ignore().cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
                let mut c = self.conn()?;
                self.run(async move { pipe.query_async::<()>(&mut c).await })
                    .await
            }
            Op::Quota { account, record } => {
                let json = serde_json::to_string(record)?;
                let news = News::Quota {
                    account: account.clone(),
                    quota: record.clone(),
                };
                let ttl = self.quota_ttl(record);
                self.set_and_tell(self.key("quota", account), json, ttl, news)
                    .await
            }
        }
    }

    /// Before a conversation this daemon has no binding for is routed: a peer may have bound
    /// it (the request before went to another daemon). Its binding is applied here first.
    /// Redis unreachable or silent on it: routed as a new conversation.
    pub async fn recall_binding(&self, sup: &SupervisorHandle, session: &str) {
        if sup.bound(session) {
            return;
        }
        let key = self.key("bind", session);
        let Ok(mut c) = self.conn() else {
            return;
        };
        let found: Result<Option<String>, SharedError> = self
            .run(async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await;
        if let Ok(Some(account)) = found {
            let bound = PeerBound {
                session: session.to_string(),
                account: account.as_str().into(),
            };
            let _ = sup.addr().send(bound).await;
        }
    }

    /// Before a request of `session` is fitted: who made each of its thinking blocks on the
    /// peers (`thinking:S`), added to `provenance`. Whether Redis named a block not known here.
    pub async fn recall_thinking(
        &self,
        provenance: &crate::proxy::continuity::Provenance,
        session: &str,
    ) -> bool {
        let key = self.key("thinking", session);
        let Ok(mut c) = self.conn() else {
            return false;
        };
        let found: Result<Vec<(String, String)>, SharedError> = self
            .run(async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await;
        // Grouped by account: one addition (and one write to the local store) each.
        let mut by_account: std::collections::HashMap<String, Vec<_>> = Default::default();
        for (id, account) in found.unwrap_or_default() {
            if let Some(id) = crate::proxy::continuity::id_from_hex(&id) {
                by_account.entry(account).or_default().push(id);
            }
        }
        let now = self.now_ms();
        by_account.iter().fold(false, |learned, (account, ids)| {
            !provenance.heard(session, account, ids, now).is_empty() || learned
        })
    }

    /// The limits Redis holds for `account`, if any.
    pub async fn read_quota(&self, account: &str) -> Result<Option<Quota>, SharedError> {
        let key = self.key("quota", account);
        let mut c = self.conn()?;
        let json: Option<String> = self
            .run(async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(json
            .and_then(|j| serde_json::from_str::<QuotaRecord>(&j).ok())
            .map(|r| Quota::from(&r)))
    }
}

/// How often a backlog kept during an outage is tried again when nothing new comes to write.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Writes the queued ops to Redis in order. While Redis is away the newest op per key is kept;
/// it is written, in order, once Redis answers again: tried every `RETRY_EVERY` whether or
/// not a new write comes (a quiet daemon catches up too), and at once when a flush asks.
async fn write_in_order(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    mut flushes: mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<usize>>,
    affinity_ttl: Duration,
) {
    let mut backlog: Vec<Op> = Vec::new();
    loop {
        let op = tokio::select! {
            op = rx.recv() => match op {
                Some(op) => Some(op),
                None => return,
            },
            Some(asked) = flushes.recv() => {
                send_backlog(&shared, &mut backlog, affinity_ttl).await;
                let _ = asked.send(backlog.len());
                continue;
            }
            _ = tokio::time::sleep(RETRY_EVERY), if !backlog.is_empty() => None,
        };
        send_backlog(&shared, &mut backlog, affinity_ttl).await;
        if let Some(op) = op {
            if !backlog.is_empty() || shared.apply(&op, affinity_ttl).await.is_err() {
                let key = op.key();
                backlog.retain(|o| o.key() != key);
                backlog.push(op);
            }
        }
        shared.set_unsent(backlog.len());
    }
}

/// The backlog, in order, while Redis answers; says so when it is all sent.
async fn send_backlog(shared: &Shared, backlog: &mut Vec<Op>, affinity_ttl: Duration) {
    if backlog.is_empty() {
        return;
    }
    let had = backlog.len();
    let mut kept = Vec::new();
    for old in backlog.drain(..) {
        if !kept.is_empty() || shared.apply(&old, affinity_ttl).await.is_err() {
            kept.push(old);
        }
    }
    *backlog = kept;
    shared.set_unsent(backlog.len());
    if backlog.is_empty() {
        tracing::info!(
            writes = had,
            "reconciled with the shared store: every write kept during its outage is sent"
        );
    }
}
