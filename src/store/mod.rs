//! The daemon's durable state: a sled database with one tree per kind of record (accounts,
//! tokens, quota, affinity, meta), plus the JSON mirror of the tool ccs replaces.
//!
//! Owns: opening (folders 0700, import of newer mirror files), the record conversions, the
//! flush after every token write, and rewriting the mirror after every account or token
//! change. Must not: be opened by more than one process (sled locks it; the daemon is the only
//! opener), or log a token.

mod import;
pub mod mirror;
mod port;
pub mod records;
mod usage;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ccs_actors::ports::{self, StoreError};
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::{Secret, SharedClock, Timestamp, Token};

use crate::config::Paths;
use crate::fsutil;
use mirror::{AccountEntry, AccountsFile, DrainOrder, Provider, TokenFileIn};
use records::{
    decode, encode, AccountRecord, BindingRecord, PoolsRecord, QuotaRecord, TokenRecord, V,
};

const META_DEFAULT: &[u8] = b"default";
const META_POOLS: &[u8] = b"pools";
const META_SCHEMA: &[u8] = b"schema";
const META_RECENT: &[u8] = b"recent";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the state database at {path}: {source}\n  is another ccs daemon running with this CCS_HOME? (`ccs cliproxy status`)")]
    Db { path: PathBuf, source: sled::Error },
    #[error("{0}")]
    Record(String),
}

/// An account as the store knows it.
pub type Account = AccountRecord;

pub struct SledStore {
    paths: Paths,
    clock: SharedClock,
    accounts: sled::Tree,
    tokens: sled::Tree,
    quota: sled::Tree,
    affinity: sled::Tree,
    /// Account → fingerprint of the refresh token a refresh was last sent with.
    intents: sled::Tree,
    meta: sled::Tree,
    /// Hour → tokens per account and model (`usage.rs`).
    usage: sled::Tree,
    db: sled::Db,
    /// How long the store writer's flushes take, for `/metrics`.
    pub flush_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Serialises mirror rewrites, so two writers never interleave their temp files (shared
    /// with the store writer's thread).
    mirror_lock: Arc<Mutex<()>>,
    /// What opening passed over or recovered (also logged), for status and tests.
    notes: Mutex<Vec<String>>,
    /// The only path for token and dead-flag writes: ordered, off the actors' thread,
    /// group-committed. Declared last: dropped (and joined) after nothing else writes.
    writer: writer::Writer,
}

impl SledStore {
    /// What opening passed over or recovered (damaged mirror files, an empty database).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How long opening waits for a lock that a stopping process is still releasing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the database, waiting (bounded) while its file lock is held: sled lets go of the lock
/// up to half a second after its last handle is dropped, so a daemon restarted at once would
/// otherwise be refused by the one that just stopped. A lock still held after the wait belongs
/// to a running daemon, and the error says so.
fn open_db(path: &std::path::Path) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::Other
                    && e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn db_err(e: sled::Error) -> StoreError {
    StoreError(e.to_string())
}

impl SledStore {
    /// Opens (creating if needed) the store under `paths`, then imports mirror files that are
    /// newer than the store's records. A mirror file that cannot be read fully is an error
    /// naming it, and then nothing at all is imported.
    pub fn open(paths: &Paths, clock: SharedClock) -> Result<SledStore, OpenError> {
        let home = paths.home.clone();
        match fsutil::home_dir(&home) {
            Ok(Some(m)) => tracing::warn!(
                home = %home.display(),
                "CCS_HOME lets others in (mode {m:o}); ccs keeps its secrets in 0700 folders below it and leaves your folder's mode alone (chmod 700 it to close it)"
            ),
            Ok(None) => {}
            Err(source) => return Err(OpenError::Io { path: home, source }),
        }
        for dir in [paths.cliproxy(), paths.auth_dir()] {
            fsutil::private_dir(&dir).map_err(|source| OpenError::Io {
                path: dir.clone(),
                source,
            })?;
            // A temp file left by a process killed mid-write may hold a token.
            match fsutil::remove_stale_temp_files(&dir) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(dir = %dir.display(), n, "removed temp files left by an interrupted write")
                }
                Err(source) => return Err(OpenError::Io { path: dir, source }),
            }
        }
        let path = paths.store_dir();
        let db = open_db(&path).map_err(|source| OpenError::Db {
            path: path.clone(),
            source,
        })?;
        fsutil::private_dir(&path)
            .and_then(|()| fsutil::privatize_tree(&path))
            .map_err(|source| OpenError::Io {
                path: path.clone(),
                source,
            })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| OpenError::Db {
                path: path.clone(),
                source,
            })
        };
        let mirror_lock = Arc::new(Mutex::new(()));
        let flush_seconds = prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
        );
        let writer = writer::Writer::start(writer::Disk {
            db: db.clone(),
            tokens: tree("tokens")?,
            accounts: tree("accounts")?,
            intents: tree("intents")?,
            quota: tree("quota")?,
            affinity: tree("affinity")?,
            auth_dir: paths.auth_dir(),
            mirror_lock: mirror_lock.clone(),
            flush_seconds: flush_seconds.clone(),
        })
        .map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
        let store = SledStore {
            paths: paths.clone(),
            clock,
            accounts: tree("accounts")?,
            tokens: tree("tokens")?,
            quota: tree("quota")?,
            affinity: tree("affinity")?,
            intents: tree("intents")?,
            meta: tree("meta")?,
            usage: tree("usage")?,
            db,
            flush_seconds,
            mirror_lock: mirror_lock.clone(),
            writer,
            notes: Mutex::default(),
        };
        store
            .meta
            .insert(META_SCHEMA, V.to_string().as_bytes())
            .map_err(|source| OpenError::Db {
                path: path.clone(),
                source,
            })?;
        for note in store.import_mirror()? {
            tracing::warn!("{note}");
            store
                .notes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(note);
        }
        Ok(store)
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---- reads ----------------------------------------------------------------------------

    /// Every account, in login order.
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut out = Vec::new();
        for kv in self.accounts.iter() {
            let (_, v) = kv.map_err(db_err)?;
            out.push(decode::<AccountRecord>(&v).map_err(StoreError)?);
        }
        out.sort_by_key(|a| (a.order, a.email.clone()));
        Ok(out)
    }

    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.accounts
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| decode(&v).map_err(StoreError))
            .transpose()
    }

    pub fn token(&self, id: &str) -> Result<Option<Token>, StoreError> {
        Ok(self.token_record(id)?.map(|r| r.token()))
    }

    fn token_record(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| decode(&v).map_err(StoreError))
            .transpose()
    }

    pub fn quota(&self, id: &str) -> Result<Quota, StoreError> {
        Ok(self
            .quota
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| decode::<QuotaRecord>(&v).map_err(StoreError))
            .transpose()?
            .map(|r| Quota::from(&r))
            .unwrap_or_default())
    }

    pub fn bindings(&self) -> Result<Vec<(String, Binding)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.affinity.iter() {
            let (k, v) = kv.map_err(db_err)?;
            let r: BindingRecord = decode(&v).map_err(StoreError)?;
            out.push((String::from_utf8_lossy(&k).into_owned(), Binding::from(&r)));
        }
        Ok(out)
    }

    pub fn default_account(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(META_DEFAULT)
            .map_err(db_err)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn pools(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        Ok(self
            .meta
            .get(META_POOLS)
            .map_err(db_err)?
            .map(|v| decode::<PoolsRecord>(&v).map_err(StoreError))
            .transpose()?
            .map(|r| r.pools)
            .unwrap_or_default())
    }

    // ---- writes ---------------------------------------------------------------------------

    /// Adds or replaces an account record (not its token) and rewrites `accounts.json`.
    pub fn put_account(&self, account: &Account) -> Result<(), StoreError> {
        let id = account_key(&account.email);
        self.accounts
            .insert(id.as_bytes(), encode(account))
            .map_err(db_err)?;
        if self.default_account()?.is_none() {
            self.meta
                .insert(META_DEFAULT, id.as_bytes())
                .map_err(db_err)?;
        }
        self.db.flush().map_err(db_err)?;
        self.write_accounts_json()
    }

    pub fn set_default(&self, id: &str) -> Result<(), StoreError> {
        self.meta
            .insert(META_DEFAULT, id.as_bytes())
            .map_err(db_err)?;
        self.db.flush().map_err(db_err)?;
        self.write_accounts_json()
    }

    /// Saves every pool's members in drain order (e-mail keys or account ids alike).
    pub fn set_pools<S: AsRef<str>>(
        &self,
        pools: &BTreeMap<String, Vec<S>>,
    ) -> Result<(), StoreError> {
        let rec = PoolsRecord {
            v: V,
            pools: pools
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.iter().map(|a| a.as_ref().to_string()).collect(),
                    )
                })
                .collect(),
        };
        self.meta.insert(META_POOLS, encode(&rec)).map_err(db_err)?;
        self.db.flush().map_err(db_err)?;
        self.write_accounts_json()
    }

    /// What the daemon keeps across a restart for its status: recent hop events and request
    /// counts (an opaque JSON value of the daemon's). Batched: a crash loses the last minutes.
    pub fn set_recent(&self, recent: &serde_json::Value) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(recent).map_err(|e| StoreError(e.to_string()))?;
        self.meta.insert(META_RECENT, bytes).map_err(db_err)?;
        Ok(())
    }

    pub fn recent(&self) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .meta
            .get(META_RECENT)
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Removes an account with its token, quota, bindings and token file.
    pub fn remove_account(&self, id: &str) -> Result<bool, StoreError> {
        let Some(account) = self.account(id)? else {
            return Ok(false);
        };
        // Every write the actors queued lands first, so none of it can bring back a token,
        // quota or binding of the account after it is gone.
        self.writer.barrier()?;
        self.accounts.remove(id.as_bytes()).map_err(db_err)?;
        self.tokens.remove(id.as_bytes()).map_err(db_err)?;
        self.quota.remove(id.as_bytes()).map_err(db_err)?;
        for (session, b) in self.bindings()? {
            if &*b.account == id {
                self.affinity.remove(session.as_bytes()).map_err(db_err)?;
            }
        }
        if self.default_account()?.as_deref() == Some(id) {
            match self.accounts()?.first() {
                Some(next) => self
                    .meta
                    .insert(META_DEFAULT, account_key(&next.email).as_bytes()),
                None => self.meta.remove(META_DEFAULT),
            }
            .map_err(db_err)?;
        }
        self.db.flush().map_err(db_err)?;
        let file = self
            .paths
            .auth_dir()
            .join(mirror::token_file_name(&account.email));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError(format!("{}: {e}", file.display()))),
        }
        self.write_accounts_json()?;
        Ok(true)
    }

    // ---- the mirror -----------------------------------------------------------------------

    fn write_accounts_json(&self) -> Result<(), StoreError> {
        let accounts = self.accounts()?;
        let default = self
            .default_account()?
            .and_then(|d| accounts.iter().find(|a| account_key(&a.email) == d))
            .map(|a| a.email.clone());
        let pools = self.pools()?;
        let ordered_ids = pools
            .get(ccs_actors::supervisor::DEFAULT_POOL)
            .cloned()
            .unwrap_or_else(|| accounts.iter().map(|a| a.email.clone()).collect());
        let provider = Provider {
            default,
            accounts: accounts
                .iter()
                .map(|a| {
                    let entry = AccountEntry {
                        email: a.email.clone(),
                        nickname: a.nickname.clone(),
                        token_file: mirror::token_file_name(&a.email),
                        created_at: Some(mirror::rfc3339(a.created_at_ms)),
                        last_used_at: a.last_used_at_ms.map(mirror::rfc3339),
                        paused: a.paused,
                        paused_at: a.paused_at_ms.map(mirror::rfc3339),
                        tier: a.plan.clone(),
                    };
                    (a.email.clone(), entry)
                })
                .collect(),
            drain_order: Some(DrainOrder {
                mode: "fill-first".into(),
                ordered_ids,
            }),
        };
        let file = AccountsFile {
            version: 1,
            providers: [("claude".to_string(), provider)].into_iter().collect(),
        };
        let path = self.paths.accounts_json();
        let _guard = self.mirror_lock.lock().unwrap_or_else(|p| p.into_inner());
        fsutil::write_private(&path, &file.to_bytes())
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))
    }

    fn next_order(&self) -> Result<u64, StoreError> {
        Ok(self
            .accounts()?
            .iter()
            .map(|a| a.order + 1)
            .max()
            .unwrap_or(0))
    }

    /// A new account record for `email`, next in login order, with a unique nickname.
    pub fn new_account(&self, email: &str) -> Result<Account, StoreError> {
        Ok(AccountRecord {
            v: V,
            email: email.to_string(),
            nickname: unique_nickname(email, &self.accounts()?),
            created_at_ms: self.now().as_millis(),
            last_used_at_ms: None,
            paused: false,
            paused_at_ms: None,
            dead: false,
            plan: None,
            account_uuid: None,
            organization_uuid: None,
            organization_name: None,
            order: self.next_order()?,
        })
    }
}

/// The store key of an account: its e-mail address, lower-cased.
pub fn account_key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// The e-mail's local part, made unique among `existing` with `-2`, `-3`, … (`john@x` → `john`,
/// then `john-2`).
pub fn unique_nickname(email: &str, existing: &[Account]) -> String {
    let base: String = email
        .split('@')
        .next()
        .unwrap_or(email)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let base = if base.is_empty() {
        "account".to_string()
    } else {
        base.to_ascii_lowercase()
    };
    let taken = |n: &str| existing.iter().any(|a| a.nickname.eq_ignore_ascii_case(n));
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken(n))
        .unwrap_or(base)
}
