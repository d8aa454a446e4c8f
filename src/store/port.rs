//! The actors' `Store` port over sled: which writes are flushed before they return (tokens,
//! refresh intents, dead flags, quota limits) and which are batched (utilization, bindings).
//! Every one goes through the store writer's thread (`writer.rs`), in order, and answers with
//! the future of its durability, which the actors await without blocking their thread.

use super::*;

impl ports::Store for SledStore {
    fn persist_token(&self, account: &str, token: &Token) -> ports::Persisting {
        ports::Persisting::Pending(
            self.writer
                .token(account, TokenRecord::new(token, self.now()))
                .later(),
        )
    }

    fn persist_refresh_intent(&self, account: &str, refresh: &Secret) -> ports::Persisting {
        ports::Persisting::Pending(
            self.writer
                .intent(account, ports::fingerprint(refresh))
                .later(),
        )
    }

    fn persist_dead(&self, account: &str) -> ports::Persisting {
        ports::Persisting::Pending(self.writer.dead(account).later())
    }

    fn persist_quota(&self, account: &str, quota: &Quota, durable: bool) -> ports::Persisting {
        let rec = QuotaRecord::from(quota);
        if durable {
            ports::Persisting::Pending(self.writer.quota(account, rec, true).later())
        } else {
            ports::Persisting::Done(self.writer.quota_batched(account, rec))
        }
    }

    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError> {
        self.writer.binding(session, BindingRecord::from(binding))
    }

    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError> {
        self.writer.unbind(sessions)
    }
}

impl SledStore {
    /// Whether `token` is in doubt: a refresh was sent with its refresh token and no newer
    /// token was written since.
    pub fn in_doubt(&self, account: &str, token: &Token) -> Result<bool, StoreError> {
        let intent = self.intents.get(account.as_bytes()).map_err(db_err)?;
        Ok(intent.is_some_and(|i| *i == *ports::fingerprint(&token.refresh).as_bytes()))
    }

    /// Waits until every token write queued so far is durable and its mirror file written
    /// (the mirror follows the durable write; other tools reading it see it a moment later).
    pub fn sync_mirror(&self) -> Result<(), StoreError> {
        self.writer.barrier().wait()
    }

    /// Writes everything to disk (the daemon calls it at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.writer.barrier().wait()?;
        self.db.flush().map_err(db_err).map(|_| ())
    }
}
