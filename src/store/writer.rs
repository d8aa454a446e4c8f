//! The store writer: one thread that is the only path for every write once the store is open
//! (the actors' tokens, refresh intents, dead flags, quota and session bindings; the
//! management API's accounts, pools and default; the client keys; the batched records that can
//! be learned again: usage hours, thinking provenance, recent counts, learned models), one
//! method per write returning a `Write` whose `wait` or `later` says how its caller waits for
//! it, so they reach disk in the order they were asked for (a logout can never
//! be overtaken by an older token, a pause never undone by a concurrent update of the same
//! record) and never on an actor's thread or an HTTP worker. Group-committed: whatever is queued when the thread wakes is
//! written, and if any of it must be durable (a token, an intent, a dead flag, a quota limit,
//! a barrier) one sled flush covers the lot; every caller is answered, and only then are the
//! mirror files written (the mirror is a convenience for other tools, not the durable copy).
//! Batched writes (utilization, bindings) reach disk with the next flush: the next durable
//! write's, or sled's own, every 500 ms.
//!
//! Must not: answer a durable write before the flush that makes it durable, or keep the
//! database open after the store is dropped (dropping joins the thread).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ccs_actors::ports::{BoxFuture, StoreError};

use super::records::{decode, encode, AccountRecord, BindingRecord, QuotaRecord, TokenRecord};
use super::{db_err, mirror};

/// Where a writer's answer goes: a caller blocked on it, or a future an actor awaits.
enum Reply {
    Blocking(mpsc::Sender<Result<(), StoreError>>),
    Future(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    fn send(self, r: Result<(), StoreError>) {
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(r);
            }
            Reply::Future(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

enum Job {
    Token {
        account: String,
        rec: TokenRecord,
        reply: Reply,
    },
    Dead {
        account: String,
        reply: Reply,
    },
    /// A refresh intent (the fingerprint of the refresh token about to be sent).
    Intent {
        account: String,
        fingerprint: String,
        reply: Reply,
    },
    /// Quota state; flushed before the reply when `durable`. No reply: nobody waits.
    Quota {
        account: String,
        rec: QuotaRecord,
        durable: bool,
        reply: Option<Reply>,
    },
    /// A session binding (batched; nobody waits).
    Binding {
        session: String,
        rec: BindingRecord,
    },
    /// Bindings to forget (batched; nobody waits).
    Unbind(Vec<String>),
    /// A write that may be learned again (usage hours, thinking provenance, small records):
    /// run here in order, batched; nobody waits, and a failure is logged.
    Batched {
        what: &'static str,
        apply: Box<dyn FnOnce() -> Result<(), StoreError> + Send>,
    },
    /// A management write (accounts, pools, the default): run here, in order with every other
    /// write, and flushed before the reply.
    Apply {
        apply: Box<dyn FnOnce() -> Result<(), StoreError> + Send>,
        reply: Reply,
    },
    /// Answered once every job queued before it is durable and its mirror file written.
    Barrier(Reply),
}

impl Job {
    /// Whether the job's batch must be flushed before its replies go out.
    fn durable(&self) -> bool {
        match self {
            Job::Token { .. }
            | Job::Dead { .. }
            | Job::Intent { .. }
            | Job::Apply { .. }
            | Job::Barrier(_) => true,
            Job::Quota { durable, .. } => *durable,
            Job::Binding { .. } | Job::Unbind(_) | Job::Batched { .. } => false,
        }
    }
}

/// One write, queued once its caller says how it waits for its durability: `wait` blocks
/// (never on the actors' thread), `later` is the future of it (what the actors take).
#[must_use = "a write is queued only by `wait` or `later`"]
pub struct Write<'a> {
    writer: &'a Writer,
    make: Box<dyn FnOnce(Reply) -> Job + Send>,
}

impl Write<'_> {
    /// Queues the write and waits until it is durable.
    pub fn wait(self) -> Result<(), StoreError> {
        self.writer.blocking(self.make)
    }

    /// Queues the write; the future answers once it is durable.
    pub fn later(self) -> BoxFuture<Result<(), StoreError>> {
        self.writer.later(self.make)
    }
}

/// What the writer thread writes to.
pub(super) struct Disk {
    pub db: sled::Db,
    pub tokens: sled::Tree,
    pub accounts: sled::Tree,
    pub intents: sled::Tree,
    pub quota: sled::Tree,
    pub affinity: sled::Tree,
    pub auth_dir: PathBuf,
    pub mirror_lock: Arc<Mutex<()>>,
    /// How long each group commit's flush took (the `/metrics` store write latency).
    pub flush_seconds: prometheus_client::metrics::histogram::Histogram,
}

pub(super) struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(disk: Disk) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("ccs-store-writer".into())
            .spawn(move || run(disk, rx))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }

    /// A write of the job `make` builds around a reply, queued when its caller says how it
    /// waits.
    fn write(&self, make: impl FnOnce(Reply) -> Job + Send + 'static) -> Write<'_> {
        Write {
            writer: self,
            make: Box::new(make),
        }
    }

    /// Queues the job `make` builds around a reply, and waits for that reply. Never on the
    /// actors' thread (`mark_actors_thread`): a debug build panics there, so a test that
    /// reaches such a wait fails, and a release build logs it.
    fn blocking(&self, make: impl FnOnce(Reply) -> Job) -> Result<(), StoreError> {
        ccs_actors::ports::forbid_waiting_on_actors_thread();
        let (tx, rx) = mpsc::channel();
        self.send(make(Reply::Blocking(tx)))?;
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues the job `make` builds around a reply; the future answers with that reply.
    fn later(&self, make: impl FnOnce(Reply) -> Job) -> BoxFuture<Result<(), StoreError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.send(make(Reply::Future(tx)));
        Box::pin(async move {
            queued?;
            rx.await.unwrap_or_else(|_| Err(stopped()))
        })
    }

    /// Writes a token (durable before it answers).
    pub fn token(&self, account: &str, rec: TokenRecord) -> Write<'_> {
        let account = account.to_string();
        self.write(move |reply| Job::Token {
            account,
            rec,
            reply,
        })
    }

    /// Writes a refresh intent (durable before it answers).
    pub fn intent(&self, account: &str, fingerprint: String) -> Write<'_> {
        let account = account.to_string();
        self.write(move |reply| Job::Intent {
            account,
            fingerprint,
            reply,
        })
    }

    /// Answers once every write queued so far is durable and mirrored.
    pub fn barrier(&self) -> Write<'_> {
        self.write(Job::Barrier)
    }

    /// Marks the account dead, after every token write queued before (durable before it
    /// answers).
    pub fn dead(&self, account: &str) -> Write<'_> {
        let account = account.to_string();
        self.write(move |reply| Job::Dead { account, reply })
    }

    /// Writes quota state; answered after the flush too when `durable`.
    pub fn quota(&self, account: &str, rec: QuotaRecord, durable: bool) -> Write<'_> {
        let account = account.to_string();
        self.write(move |reply| Job::Quota {
            account,
            rec,
            durable,
            reply: Some(reply),
        })
    }

    /// Queues a batched quota write; nobody waits for it.
    pub fn quota_batched(&self, account: &str, rec: QuotaRecord) -> Result<(), StoreError> {
        self.send(Job::Quota {
            account: account.to_string(),
            rec,
            durable: false,
            reply: None,
        })
    }

    /// Runs `apply` on the writer's thread, in order with every other write (durable before
    /// it answers): the management API's records, the client keys, the recent counts.
    pub fn apply(
        &self,
        apply: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
    ) -> Write<'_> {
        self.write(move |reply| Job::Apply {
            apply: Box::new(apply),
            reply,
        })
    }

    /// Queues `apply`, a write of `what` that may be learned again: in order with every other
    /// write, batched (it reaches disk with the next flush); nobody waits for it.
    pub fn batched(
        &self,
        what: &'static str,
        apply: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.send(Job::Batched {
            what,
            apply: Box::new(apply),
        })
    }

    /// Queues a binding; nobody waits for it.
    pub fn binding(&self, session: &str, rec: BindingRecord) -> Result<(), StoreError> {
        self.send(Job::Binding {
            session: session.to_string(),
            rec,
        })
    }

    /// Queues the removal of bindings; nobody waits for it.
    pub fn unbind(&self, sessions: &[String]) -> Result<(), StoreError> {
        self.send(Job::Unbind(sessions.to_vec()))
    }
}

fn stopped() -> StoreError {
    StoreError::WriterStopped
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the queue is written.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(disk: Disk, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // Every write of the batch, then one flush for all of them if any must be durable.
        let must_flush = batch.iter().any(Job::durable);
        let mut done = Vec::with_capacity(batch.len());
        let mut mirrors = Vec::new();
        let mut barriers = Vec::new();
        for job in batch {
            match job {
                Job::Token {
                    account,
                    rec,
                    reply,
                } => {
                    let r = disk.put_token(&account, &rec);
                    if let Ok(Some(acct)) = &r {
                        mirrors.push((acct.clone(), rec));
                    }
                    done.push((reply, r.map(|_| ())));
                }
                Job::Dead { account, reply } => done.push((reply, disk.put_dead(&account))),
                Job::Intent {
                    account,
                    fingerprint,
                    reply,
                } => {
                    let r = disk
                        .intents
                        .insert(account.as_bytes(), fingerprint.as_bytes())
                        .map(|_| ())
                        .map_err(db_err);
                    done.push((reply, r));
                }
                Job::Quota {
                    account,
                    rec,
                    reply,
                    ..
                } => {
                    let r = disk
                        .quota
                        .insert(account.as_bytes(), encode(&rec))
                        .map(|_| ())
                        .map_err(db_err);
                    match reply {
                        Some(reply) => done.push((reply, r)),
                        None => log_batched(r, "quota state"),
                    }
                }
                Job::Binding { session, rec } => {
                    let r = disk.affinity.insert(session.as_bytes(), encode(&rec));
                    log_batched(r.map(|_| ()).map_err(db_err), "a session binding");
                }
                Job::Unbind(sessions) => {
                    for s in sessions {
                        let r = disk.affinity.remove(s.as_bytes());
                        log_batched(r.map(|_| ()).map_err(db_err), "a binding's removal");
                    }
                }
                Job::Apply { apply, reply } => done.push((reply, apply())),
                Job::Batched { what, apply } => {
                    if let Err(e) = apply() {
                        tracing::warn!(error = %e, "cannot write {what}");
                    }
                }
                Job::Barrier(reply) => barriers.push(reply),
            }
        }
        let flushed = if must_flush {
            let t = std::time::Instant::now();
            let flushed = disk.db.flush().map(|_| ()).map_err(db_err);
            disk.flush_seconds.observe(t.elapsed().as_secs_f64());
            flushed
        } else {
            Ok(())
        };
        // Every reply carries the flush's outcome: a copy per caller.
        let flush_result = || flushed.as_ref().map(|_| ()).map_err(StoreError::clone);
        for (reply, r) in done {
            reply.send(r.and_then(|()| flush_result()));
        }
        // The store holds the tokens now; the mirror follows, and a failure there is reported,
        // not fatal.
        if flushed.is_ok() {
            for (acct, rec) in mirrors {
                if let Err(e) = disk.mirror(&acct, &rec) {
                    tracing::warn!(error = %e, "could not update the token mirror file");
                }
            }
        }
        for reply in barriers {
            reply.send(flush_result());
        }
    }
}

/// A batched write nobody waits for: a failure is logged (sled's next flush may still carry the
/// rest).
fn log_batched(r: Result<(), StoreError>, what: &str) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not write {what}");
    }
}

impl Disk {
    fn account(&self, id: &str) -> Result<Option<AccountRecord>, StoreError> {
        self.accounts
            .get(id.as_bytes())
            .map_err(db_err)?
            .map(|v| decode(&v).map_err(|e| StoreError::damaged("a token record", e)))
            .transpose()
    }

    /// Inserts the token (and clears a dead flag); returns the account for the mirror.
    fn put_token(
        &self,
        account: &str,
        rec: &TokenRecord,
    ) -> Result<Option<AccountRecord>, StoreError> {
        self.tokens
            .insert(account.as_bytes(), encode(rec))
            .map_err(db_err)?;
        let mut acct = self.account(account)?;
        if let Some(a) = acct.as_mut().filter(|a| a.dead) {
            a.dead = false;
            self.accounts
                .insert(account.as_bytes(), encode(&*a))
                .map_err(db_err)?;
        }
        Ok(acct)
    }

    fn put_dead(&self, account: &str) -> Result<(), StoreError> {
        if let Some(mut a) = self.account(account)? {
            a.dead = true;
            self.accounts
                .insert(account.as_bytes(), encode(&a))
                .map_err(db_err)?;
        }
        Ok(())
    }

    fn mirror(&self, account: &AccountRecord, rec: &TokenRecord) -> Result<(), StoreError> {
        let _guard = self.mirror_lock.lock().unwrap_or_else(|p| p.into_inner());
        mirror::write_token_file(&self.auth_dir, account, rec)
    }
}
