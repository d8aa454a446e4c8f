//! Several daemons, one pool: the state they share through Redis (`store.backend: redis`,
//! specs/shared-store.md). Each daemon keeps its own sled store as before; this module adds
//! what the daemons must agree on: who refreshes each token (a lease with a fencing number,
//! and a compare-and-set on the token's generation: `refresh.rs`), which account each
//! conversation is bound to and which accounts are benched (written behind the request and
//! spread by pub/sub: `sync.rs`), and who is alive (`peer:` keys, renewed every few seconds).
//!
//! Must not: let a refresh go out without this daemon's lease, let an older token overwrite a
//! newer one, or put Redis on a request's critical path (requests read the supervisor's
//! snapshot; Redis writes go out behind them, in order).

mod listen;
mod refresh;
mod start;
mod sync;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

pub use listen::{apply_pools, listen};
pub use refresh::{choose_newest, Refreshes, Start};
pub use start::{catch_up, join};
pub use sync::SharedStore;

use crate::config::Redis as RedisConfig;

/// Longest wait for one Redis command; past it Redis counts as unreachable for that call.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// A daemon renews its `peer:` key this often; the key lives three times as long.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

pub use crate::config::redact_url;

/// Why a call to the shared store failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("not connected to Redis at {0} yet")]
    NotConnected(String),
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("a shared record cannot be written or read: {0}")]
    Record(#[from] serde_json::Error),
}

/// What one daemon tells the others on the `events` channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum News {
    /// `token:ACCOUNT` now holds generation `generation`.
    Token { account: String, generation: u64 },
    /// A session's binding.
    Bind { session: String, account: String },
    /// An account's limits (the quota record as sled stores it).
    Quota {
        account: String,
        quota: crate::store::records::QuotaRecord,
    },
    /// The pools and their drain order, as the daemon that changed them has them.
    Pools {
        pools: std::collections::BTreeMap<String, Vec<String>>,
    },
    /// An account was paused or resumed.
    Paused { account: String, paused: bool },
    /// An account was removed (logged out) from the pool.
    Removed { account: String },
}

/// A message on the channel: the news and which daemon sent it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Envelope {
    by: String,
    #[serde(flatten)]
    news: News,
}

pub use crate::api::{LeaseHolder, Peer};

/// What one daemon knows of one account's token in the shared store.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// The generation of the token this daemon's actor holds (written down here): a claim
    /// over a newer one in Redis adopts that instead of refreshing.
    held: u64,
    /// The newest generation Redis was seen holding, and its refresh token's fingerprint.
    latest: Option<(u64, String)>,
    /// The lease this daemon holds for its refresh in flight: (fence, the generation the
    /// refresh started from).
    claim: Option<(u64, u64)>,
    /// A token that could not reach Redis (it was away), to offer when it returns: over the
    /// generation its refresh started from, or as a new grant (`None`).
    pending: Option<(ccs_actors::Token, Option<u64>)>,
}

/// One daemon's connection to the shared store.
pub struct Shared {
    client: redis::Client,
    /// `None` until Redis first answered (a daemon may start while it is away).
    conn: RwLock<Option<ConnectionManager>>,
    joined: AtomicBool,
    prefix: String,
    /// This daemon's name among its peers (random per start).
    pub daemon: String,
    lease: Duration,
    url: String,
    clock: ccs_actors::SharedClock,
    /// What this daemon knows of each account's token in the shared store.
    book: Mutex<HashMap<String, Entry>>,
    /// Whether the last command reached Redis.
    reachable: AtomicBool,
    /// Writes kept during an outage and not yet sent (`sync.rs`).
    unsent: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// Reads the configuration; connects nothing (`try_connect` does).
    pub fn open(config: &RedisConfig, clock: ccs_actors::SharedClock) -> Result<Arc<Shared>> {
        let url = config.url.clone().unwrap_or_default();
        let shown = redact_url(&url);
        let client = redis::Client::open(url.as_str())
            .with_context(|| format!("store.redis.url {shown} is not a Redis URL"))?;
        let daemon = format!("{:016x}", rand::random::<u64>());
        Ok(Arc::new(Shared {
            client,
            conn: RwLock::new(None),
            joined: AtomicBool::new(false),
            prefix: config.prefix.clone(),
            daemon,
            lease: config.lease.0,
            url: shown,
            clock,
            book: Mutex::new(HashMap::new()),
            reachable: AtomicBool::new(false),
            unsent: Default::default(),
        }))
    }

    /// Opens and connects at once (the tests' daemons-in-a-process); joined from the start.
    pub async fn connect(
        config: &RedisConfig,
        clock: ccs_actors::SharedClock,
    ) -> Result<Arc<Shared>> {
        let shared = Shared::open(config, clock)?;
        if !shared.try_connect().await {
            anyhow::bail!(
                "cannot reach Redis at {} (store.redis.url): start it, or set store.backend: \
                 sled to run this daemon alone",
                shared.url
            );
        }
        shared.set_joined();
        Ok(shared)
    }

    /// Connects if not yet connected; answers whether it is. The connection then reconnects
    /// by itself after an outage.
    pub async fn try_connect(&self) -> bool {
        if self.conn().is_ok() {
            return true;
        }
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let made = tokio::time::timeout(
            OP_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), manager),
        )
        .await;
        match made {
            Ok(Ok(conn)) => {
                *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                self.reachable.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Whether this daemon has joined the pool (`join`): until then it neither claims a
    /// lease nor adopts a peer's token, since it does not yet know which token is newest.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// Writes kept during an outage and not yet sent to Redis.
    pub fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Relaxed)
    }

    pub(crate) fn set_unsent(&self, n: usize) {
        self.unsent.store(n, Ordering::Relaxed);
    }

    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// The Redis URL, its password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Runs one Redis call with the command timeout, noting whether Redis answered.
    async fn run<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, SharedError> {
        let out = match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout(OP_TIMEOUT)),
        };
        let was = self.reachable.swap(out.is_ok(), Ordering::Relaxed);
        match (&out, was) {
            (Err(e), true) => {
                tracing::warn!(error = %e, "the shared store (Redis) is unreachable: serving from this daemon's snapshot; no refresh until it returns")
            }
            (Ok(_), false) => tracing::info!("the shared store (Redis) is back"),
            _ => {}
        }
        out
    }

    fn conn(&self) -> Result<ConnectionManager, SharedError> {
        self.conn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| SharedError::NotConnected(self.url.clone()))
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }

    /// Publishes `news` to the other daemons.
    async fn tell(&self, news: News) -> Result<(), SharedError> {
        let payload = serde_json::to_string(&Envelope {
            by: self.daemon.clone(),
            news,
        })?;
        let mut c = self.conn()?;
        let channel = self.channel();
        self.run(async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Says this daemon is alive for three heartbeats.
    pub async fn heartbeat(&self, url: &str) -> Result<(), SharedError> {
        let key = self.key("peer", &self.daemon);
        let mut c = self.conn()?;
        let ttl = u64::try_from((HEARTBEAT * 3).as_millis()).unwrap_or(u64::MAX);
        let url = url.to_string();
        self.run(async move {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("url")
                .arg(url)
                .arg("version")
                .arg(env!("CARGO_PKG_VERSION"))
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Says this daemon is gone (a clean stop), so status stops listing it at once.
    pub async fn leave(&self) {
        let key = self.key("peer", &self.daemon);
        let Ok(mut c) = self.conn() else {
            return;
        };
        let _ = self
            .run(async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await })
            .await;
    }

    /// Every key under `PREFIX:kind:`, with the part after it.
    async fn scan(&self, kind: &str) -> Result<Vec<(String, String)>, SharedError> {
        let pattern = format!("{}:{kind}:*", self.prefix);
        let strip = format!("{}:{kind}:", self.prefix);
        let mut c = self.conn()?;
        let keys: Vec<String> = self
            .run(async move {
                let mut out = Vec::new();
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut c)
                        .await?;
                    out.extend(batch);
                    if next == 0 {
                        break Ok(out);
                    }
                    cursor = next;
                }
            })
            .await?;
        Ok(keys
            .into_iter()
            .map(|k| {
                let name = k.strip_prefix(&strip).unwrap_or(&k).to_string();
                (k, name)
            })
            .collect())
    }

    /// The daemons alive now (their `peer:` keys), this one included.
    pub async fn peers(&self) -> Result<Vec<Peer>, SharedError> {
        let mut out = Vec::new();
        for (key, id) in self.scan("peer").await? {
            let mut c = self.conn()?;
            let fields: HashMap<String, String> = self
                .run(async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
                .await?;
            out.push(Peer {
                me: id == self.daemon,
                url: fields.get("url").cloned().unwrap_or_default(),
                version: fields.get("version").cloned().unwrap_or_default(),
                id,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The refresh leases held now, and by whom.
    pub async fn leases(&self) -> Result<Vec<LeaseHolder>, SharedError> {
        let mut out = Vec::new();
        for (key, account) in self.scan("lease").await? {
            let mut c = self.conn()?;
            let (value, ttl): (Option<String>, i64) = self
                .run(async move {
                    redis::pipe()
                        .cmd("GET")
                        .arg(&key)
                        .cmd("PTTL")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let Some(value) = value else { continue };
            let (daemon, fence) = value.rsplit_once(':').unwrap_or((value.as_str(), "0"));
            out.push(LeaseHolder {
                account,
                daemon: daemon.to_string(),
                fence: fence.parse().unwrap_or(0),
                expires_in_ms: u64::try_from(ttl).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| a.account.cmp(&b.account));
        Ok(out)
    }

    /// The store as `ccs cliproxy status` shows it.
    pub async fn status(&self) -> crate::api::StoreStatus {
        crate::api::StoreStatus {
            backend: "redis".into(),
            redis_url: Some(self.url.clone()),
            peers: self.peers().await.unwrap_or_default(),
            leases: self.leases().await.unwrap_or_default(),
            reachable: Some(self.reachable()),
            daemon: Some(self.daemon.clone()),
        }
    }

    /// Whether Redis persists what it is told (`appendonly yes`): tokens are the one thing
    /// that must not be lost, so a daemon warns at start when it does not.
    pub async fn durability_warning(&self) -> Option<String> {
        let mut c = match self.conn() {
            Ok(c) => c,
            Err(e) => return Some(e.to_string()),
        };
        let answer: Result<Vec<String>, SharedError> = self
            .run(async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("appendonly")
                    .query_async(&mut c)
                    .await
            })
            .await;
        match answer {
            Ok(v) if v.get(1).map(String::as_str) == Some("yes") => None,
            Ok(_) => Some(
                "Redis runs without `appendonly yes`: a Redis restart can lose the newest tokens \
                 (each daemon keeps its own copy, but a token only Redis held would be gone); \
                 set appendonly yes and appendfsync everysec (specs/shared-store.md)"
                    .into(),
            ),
            Err(e) => Some(format!(
                "cannot ask Redis whether it persists (CONFIG GET appendonly: {e}); make sure \
                 it runs with appendonly yes"
            )),
        }
    }
}
