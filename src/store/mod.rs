//! The daemon's durable state: a sled database with one tree per kind of record (accounts,
//! tokens, quota, affinity, meta), plus the JSON mirror of the tool ccs replaces.
//!
//! Owns: opening (folders 0700, import of newer mirror files), the record conversions, the
//! flush after every token write, and rewriting the mirror after every account or token
//! change. Must not: be opened by more than one process (sled locks it; the daemon is the only
//! opener), or log a token.

mod import;
pub mod landing;
pub mod mirror;
mod port;
pub mod records;
mod usage;
mod writer;
pub use ccs_actors::ports::mark_actors_thread;

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
/// The `meta` key of the last hour's record (`records::RecentRecord`).
pub const META_RECENT: &str = "recent";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the state database at {path}: {source}\n  is another ccs daemon running with this CCS_HOME? (`ccs cliproxy status`)")]
    Db { path: PathBuf, source: sled::Error },
    /// The database's files are damaged; `file` is the one to blame when it is known.
    #[error("{}", damaged(path, file.as_deref(), source))]
    Damaged {
        path: PathBuf,
        file: Option<PathBuf>,
        source: sled::Error,
    },
    #[error("{0}")]
    Record(#[from] StoreError),
}

fn damaged(path: &std::path::Path, file: Option<&std::path::Path>, source: &sled::Error) -> String {
    match file {
        Some(f) => format!(
            "the state database's settings file {} is damaged ({source}): delete that file \
             (the database writes it again at open; the data is in {}) and start again",
            f.display(),
            path.join("db").display()
        ),
        None => format!(
            "the state database at {} is damaged ({source}): move it aside (`mv {0} {0}.damaged`) \
             and start again; ccs then takes the accounts, tokens and pools back from \
             accounts.json and auth/ and says what it could not",
            path.display()
        ),
    }
}

/// Whether sled's `conf` reads as the three lines it writes (the checksum after them is not
/// checked here).
fn conf_reads(conf: &std::path::Path) -> bool {
    let Ok(bytes) = std::fs::read(conf) else {
        return true;
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    ["segment_size: ", "use_compression: ", "version: "]
        .iter()
        .all(|want| lines.next().is_some_and(|l| l.starts_with(want)))
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
    /// Conversation → which account produced each of its thinking blocks.
    thinking: sled::Tree,
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

    /// Adds what a reader of the store found damaged to those notes, and logs it.
    pub fn note(&self, what: String) {
        tracing::warn!("{what}");
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
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
    StoreError::database(e)
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
        let db = open_db(&path).map_err(|source| match source {
            sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => {
                let conf = path.join("conf");
                OpenError::Damaged {
                    file: (!conf_reads(&conf)).then_some(conf),
                    path: path.clone(),
                    source,
                }
            }
            source => OpenError::Db {
                path: path.clone(),
                source,
            },
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
            thinking: tree("thinking")?,
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
        for account in landing::Landing::at(paths.landing_dir()).recover(
            |id| store.token_record(id).ok().flatten(),
            |id, rec| {
                store.tokens.insert(id.as_bytes(), encode(&rec)).is_ok() && store.db.flush().is_ok()
            },
        ) {
            tracing::info!(
                account,
                "took the token from its refresh answer that landed just before the daemon \
                 stopped (it had not reached the database)"
            );
        }
        for note in store.import_mirror()? {
            store.note(note);
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
        accounts_in(&self.accounts)
    }

    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        account_in(&self.accounts, id)
    }

    pub fn token(&self, id: &str) -> Result<Option<Token>, StoreError> {
        Ok(self.token_record(id)?.map(|r| r.token()))
    }

    fn token_record(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| decode(&v).map_err(|e| StoreError::damaged("a token record", e)))
            .transpose()
    }

    pub fn quota(&self, id: &str) -> Result<Quota, StoreError> {
        Ok(self
            .quota
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| {
                decode::<QuotaRecord>(&v).map_err(|e| StoreError::damaged("a quota record", e))
            })
            .transpose()?
            .map(|r| Quota::from(&r))
            .unwrap_or_default())
    }

    pub fn bindings(&self) -> Result<Vec<(String, Binding)>, StoreError> {
        bindings_in(&self.affinity)
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
            .map(|v| {
                decode::<PoolsRecord>(&v).map_err(|e| StoreError::damaged("the pools record", e))
            })
            .transpose()?
            .map(|r| r.pools)
            .unwrap_or_default())
    }

    // ---- writes ---------------------------------------------------------------------------

    /// Adds or replaces an account record (not its token) and rewrites `accounts.json`.
    pub fn put_account(&self, account: &Account) -> Result<(), StoreError> {
        let id = account_key(&account.email);
        let rec = encode(account);
        let (accounts, meta) = (self.accounts.clone(), self.meta.clone());
        self.writer
            .apply(move || {
                accounts.insert(id.as_bytes(), rec).map_err(db_err)?;
                if meta.get(META_DEFAULT).map_err(db_err)?.is_none() {
                    meta.insert(META_DEFAULT, id.as_bytes()).map_err(db_err)?;
                }
                Ok(())
            })
            .wait()?;
        self.write_accounts_json()
    }

    /// Changes the record of account `id` by `change`, read and written on the store writer's
    /// thread, so no other write of it can come between (a pause is never undone by a
    /// concurrent update of the account's last use); rewrites `accounts.json`. `None`: no such
    /// account.
    pub fn update_account(
        &self,
        id: &str,
        change: impl FnOnce(&mut Account) + Send + 'static,
    ) -> Result<Option<Account>, StoreError> {
        let key = id.to_string();
        let accounts = self.accounts.clone();
        let updated = Arc::new(Mutex::new(None));
        let out = updated.clone();
        self.writer
            .apply(move || {
                let Some(mut a) = account_in(&accounts, &key)? else {
                    return Ok(());
                };
                change(&mut a);
                accounts
                    .insert(key.as_bytes(), encode(&a))
                    .map_err(db_err)?;
                *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
                Ok(())
            })
            .wait()?;
        let updated = updated.lock().unwrap_or_else(|p| p.into_inner()).take();
        if updated.is_some() {
            self.write_accounts_json()?;
        }
        Ok(updated)
    }

    pub fn set_default(&self, id: &str) -> Result<(), StoreError> {
        let (meta, id) = (self.meta.clone(), id.to_string());
        self.writer
            .apply(move || {
                meta.insert(META_DEFAULT, id.as_bytes())
                    .map(|_| ())
                    .map_err(db_err)
            })
            .wait()?;
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
        let (meta, bytes) = (self.meta.clone(), encode(&rec));
        self.writer
            .apply(move || meta.insert(META_POOLS, bytes).map(|_| ()).map_err(db_err))
            .wait()?;
        self.write_accounts_json()
    }

    /// What the daemon keeps across a restart for its status: recent hop events and request
    /// counts. Batched through the writer: saved every sweep and at a clean stop (whose last
    /// flush comes after it), so a crash loses the minutes since the last sweep.
    pub fn set_recent(&self, recent: &records::RecentRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(recent)
            .map_err(|e| StoreError::encode("the recent counts record", e))?;
        let meta = self.meta.clone();
        self.writer.batched("the recent counts record", move || {
            meta.insert(META_RECENT, bytes).map(|_| ()).map_err(db_err)
        })
    }

    /// The last run's recent record; one that cannot be read is an error naming why.
    pub fn recent(&self) -> Result<Option<records::RecentRecord>, StoreError> {
        match self.meta.get(META_RECENT).map_err(db_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::damaged("the recent counts record", e)),
        }
    }

    /// Removes an account with its token, quota, bindings and token file.
    pub fn remove_account(&self, id: &str) -> Result<bool, StoreError> {
        let Some(account) = self.account(id)? else {
            return Ok(false);
        };
        landing::Landing::at(self.paths.landing_dir()).remove(id);
        // On the writer's thread, after every write queued before (none of them can bring
        // back a token, quota or binding of the account once it is gone).
        let trees = (
            self.accounts.clone(),
            self.tokens.clone(),
            self.quota.clone(),
            self.affinity.clone(),
            self.meta.clone(),
        );
        let key = id.to_string();
        self.writer
            .apply(move || {
                let (accounts, tokens, quota, affinity, meta) = trees;
                accounts.remove(key.as_bytes()).map_err(db_err)?;
                tokens.remove(key.as_bytes()).map_err(db_err)?;
                quota.remove(key.as_bytes()).map_err(db_err)?;
                for (session, b) in bindings_in(&affinity)? {
                    if *b.account == *key {
                        affinity.remove(session.as_bytes()).map_err(db_err)?;
                    }
                }
                if meta.get(META_DEFAULT).map_err(db_err)?.as_deref() == Some(key.as_bytes()) {
                    match accounts_in(&accounts)?.first() {
                        Some(next) => {
                            meta.insert(META_DEFAULT, account_key(&next.email).as_bytes())
                        }
                        None => meta.remove(META_DEFAULT),
                    }
                    .map_err(db_err)?;
                }
                Ok(())
            })
            .wait()?;
        // The writer answers before it writes a batch's mirror files: wait for those too, so
        // a token file written for a token queued before cannot outlive this removal.
        self.writer.barrier().wait()?;
        let file = self
            .paths
            .auth_dir()
            .join(mirror::token_file_name(&account.email));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::file(&file, e)),
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
            pools: pools
                .into_iter()
                .filter(|(name, _)| name != ccs_actors::supervisor::DEFAULT_POOL)
                .collect(),
        };
        let file = AccountsFile {
            version: 1,
            providers: [("claude".to_string(), provider)].into_iter().collect(),
        };
        let path = self.paths.accounts_json();
        let _guard = self.mirror_lock.lock().unwrap_or_else(|p| p.into_inner());
        fsutil::write_private(&path, &file.to_bytes()).map_err(|e| StoreError::file(&path, e))
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

// ---- reads over a tree: the store's own, and the writer's jobs (which cannot borrow it) ----

fn accounts_in(tree: &sled::Tree) -> Result<Vec<Account>, StoreError> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (_, v) = kv.map_err(db_err)?;
        out.push(
            decode::<AccountRecord>(&v).map_err(|e| StoreError::damaged("an account record", e))?,
        );
    }
    out.sort_by_key(|a| (a.order, a.email.clone()));
    Ok(out)
}

fn account_in(tree: &sled::Tree, id: &str) -> Result<Option<Account>, StoreError> {
    tree.get(id.as_bytes())
        .map_err(db_err)?
        .map(|v| decode(&v).map_err(|e| StoreError::damaged("an account record", e)))
        .transpose()
}

fn bindings_in(tree: &sled::Tree) -> Result<Vec<(String, Binding)>, StoreError> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (k, v) = kv.map_err(db_err)?;
        let r: BindingRecord =
            decode(&v).map_err(|e| StoreError::damaged("a session binding", e))?;
        out.push((String::from_utf8_lossy(&k).into_owned(), Binding::from(&r)));
    }
    Ok(out)
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
