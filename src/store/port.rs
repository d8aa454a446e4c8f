//! The actors' `Store` port over sled: which writes are flushed before they return (tokens,
//! refresh intents, dead flags, quota limits) and which are batched (utilization, bindings).

use super::*;

impl ports::Store for SledStore {
    fn save_token(&self, account: &str, token: &Token) -> Result<(), StoreError> {
        let rec = TokenRecord::new(token, self.now());
        self.tokens
            .insert(account.as_bytes(), encode(&rec))
            .map_err(db_err)?;
        let mut acct = self.account(account)?;
        if let Some(a) = acct.as_mut().filter(|a| a.dead) {
            a.dead = false;
            self.accounts
                .insert(account.as_bytes(), encode(&*a))
                .map_err(db_err)?;
        }
        self.db.flush().map_err(db_err)?;
        if let Some(a) = acct {
            // The store holds the token now; a mirror failure is reported, not fatal.
            if let Err(e) = self.write_token_file(&a, &rec) {
                tracing::warn!(error = %e, "could not update the token mirror file");
            }
        }
        Ok(())
    }

    fn save_refresh_intent(&self, account: &str, refresh: &Secret) -> Result<(), StoreError> {
        self.intents
            .insert(account.as_bytes(), ports::fingerprint(refresh).as_bytes())
            .map_err(db_err)?;
        self.db.flush().map_err(db_err)?;
        Ok(())
    }

    fn save_dead(&self, account: &str) -> Result<(), StoreError> {
        if let Some(mut a) = self.account(account)? {
            a.dead = true;
            self.accounts
                .insert(account.as_bytes(), encode(&a))
                .map_err(db_err)?;
            self.db.flush().map_err(db_err)?;
        }
        Ok(())
    }

    fn save_quota(&self, account: &str, quota: &Quota, durable: bool) -> Result<(), StoreError> {
        self.quota
            .insert(account.as_bytes(), encode(&QuotaRecord::from(quota)))
            .map_err(db_err)?;
        if durable {
            self.db.flush().map_err(db_err)?;
        }
        Ok(())
    }

    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError> {
        self.affinity
            .insert(session.as_bytes(), encode(&BindingRecord::from(binding)))
            .map_err(db_err)?;
        Ok(())
    }

    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError> {
        for s in sessions {
            self.affinity.remove(s.as_bytes()).map_err(db_err)?;
        }
        Ok(())
    }
}

impl SledStore {
    /// Whether `token` is in doubt: a refresh was sent with its refresh token and no newer
    /// token was written since.
    pub fn in_doubt(&self, account: &str, token: &Token) -> Result<bool, StoreError> {
        let intent = self.intents.get(account.as_bytes()).map_err(db_err)?;
        Ok(intent.is_some_and(|i| *i == *ports::fingerprint(&token.refresh).as_bytes()))
    }

    /// Writes everything to disk (the daemon calls it at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(db_err).map(|_| ())
    }
}
