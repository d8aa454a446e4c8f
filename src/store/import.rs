//! Importing the mirror at open: token files and `accounts.json` written by the tool ccs
//! replaces (or by an older ccs), taken in only when their token is newer by its own content.
//! A file that cannot be read is passed over with a warning (a damaged `accounts.json` is moved
//! aside and rewritten from the store), since the store holds everything; and when the store
//! held no account, the notes say what came back from the files and what did not.
//! Must not: import a token older than the store's, or stop the daemon for a stray file.

use super::*;

impl SledStore {
    /// Reads the mirror files, passing over those it cannot read, and imports what is newer
    /// than the store. Returns notes for the log: what was passed over, what was recovered.
    pub(super) fn import_mirror(&self) -> Result<Vec<String>, OpenError> {
        let mut notes = Vec::new();
        let store_was_empty = self.accounts.is_empty();
        let accounts_path = self.paths.accounts_json();
        let mut changed = false;
        let accounts_file = match AccountsFile::read(&accounts_path) {
            Ok(f) => f,
            Err(reason) => {
                let aside = accounts_path
                    .with_extension(format!("json.damaged-{}", self.now().as_millis()));
                let moved = std::fs::rename(&accounts_path, &aside).is_ok();
                notes.push(format!(
                    "{}: {reason}; {} and rewrote it from the store",
                    accounts_path.display(),
                    if moved {
                        format!("moved it to {}", aside.display())
                    } else {
                        "left it".to_string()
                    }
                ));
                changed = true;
                None
            }
        };
        let mut token_files: Vec<TokenFileIn> = Vec::new();
        let auth = self.paths.auth_dir();
        let entries = std::fs::read_dir(&auth).map_err(|source| OpenError::Io {
            path: auth.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| OpenError::Io {
                path: auth.clone(),
                source,
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("claude-") && name.ends_with(".json")) {
                continue;
            }
            let path = entry.path();
            match mirror::read_token_file(&path) {
                Ok(file) => token_files.push(file),
                Err(reason) => notes.push(format!(
                    "{}: {reason}; passed over (it is not a token file ccs can read: fix or \
                     move it)",
                    path.display()
                )),
            }
        }
        token_files.sort_by(|a, b| {
            a.modified_ms
                .cmp(&b.modified_ms)
                .then(a.email.cmp(&b.email))
        });

        let rec_err = OpenError::Record;
        let listed = accounts_file.as_ref().and_then(AccountsFile::claude);
        let mut imported = 0;
        let mut lost_accounts = Vec::new();
        for file in &token_files {
            let id = account_key(&file.email);
            let existing = self.account(&id).map_err(rec_err)?;
            if existing.is_none() && !store_was_empty && entry_listed(listed, &id) {
                // accounts.json lists it and its token file is here: the database lost it.
                lost_accounts.push(file.email.clone());
            }
            let entry = listed.and_then(|p| {
                p.accounts
                    .iter()
                    .find(|(k, _)| account_key(k) == id)
                    .map(|(_, e)| e)
            });
            let current = self.token_record(&id).map_err(rec_err)?;
            // Newer by the token's own content, never by file time: a backup restored over the
            // mirror has a fresh mtime but an old, rotated-away refresh token, and importing it
            // would kill the account at its next refresh. Tokens are issued with a fixed life, so
            // the one that expires later was issued later.
            let newer = match &current {
                None => true,
                Some(rec) if rec.refresh_token == file.refresh_token => false,
                Some(rec) if file.expires_at_ms > rec.expires_at_ms => true,
                Some(rec) => {
                    if rec.access_token != file.access_token {
                        tracing::warn!(file = %file.path.display(), "a token file holds an older token than the store (it expires sooner): kept the store's");
                    }
                    false
                }
            };
            let mut account = match existing {
                Some(a) => a,
                None => {
                    let nickname = match entry.map(|e| e.nickname.clone()).filter(|n| !n.is_empty())
                    {
                        Some(n) => n,
                        None => unique_nickname(&file.email, &self.accounts().map_err(rec_err)?),
                    };
                    AccountRecord {
                        v: V,
                        email: file.email.clone(),
                        nickname,
                        created_at_ms: entry
                            .and_then(|e| AccountsFile::time_ms(&e.created_at))
                            .unwrap_or(file.modified_ms),
                        last_used_at_ms: entry.and_then(|e| AccountsFile::time_ms(&e.last_used_at)),
                        paused: entry.is_some_and(|e| e.paused),
                        paused_at_ms: entry.and_then(|e| AccountsFile::time_ms(&e.paused_at)),
                        dead: false,
                        plan: entry.and_then(|e| e.tier.clone()),
                        account_uuid: None,
                        organization_uuid: None,
                        organization_name: None,
                        order: self.next_order().map_err(rec_err)?,
                    }
                }
            };
            if !newer {
                continue;
            }
            tracing::info!(file = %file.path.display(), "importing a newer token file");
            account.dead = false;
            account.account_uuid = file.account_uuid.clone().or(account.account_uuid);
            account.organization_uuid =
                file.organization_uuid.clone().or(account.organization_uuid);
            account.organization_name =
                file.organization_name.clone().or(account.organization_name);
            let rec = TokenRecord {
                v: V,
                access_token: file.access_token.clone(),
                refresh_token: file.refresh_token.clone(),
                expires_at_ms: file.expires_at_ms,
                updated_at_ms: file.modified_ms.max(self.now().as_millis()),
            };
            self.accounts
                .insert(id.as_bytes(), encode(&account))
                .map_err(|e| OpenError::Record(StoreError::database(e)))?;
            self.tokens
                .insert(id.as_bytes(), encode(&rec))
                .map_err(|e| OpenError::Record(StoreError::database(e)))?;
            changed = true;
            imported += 1;
        }
        if !lost_accounts.is_empty() {
            notes.push(format!(
                "the state database had lost {} (damaged?): taken back from {} with their \
                 tokens; their quota windows and session bindings start afresh",
                lost_accounts.join(", "),
                auth.display()
            ));
        }
        if let Some(note) = self.restore_lost_pools(listed).map_err(rec_err)? {
            notes.push(note);
            changed = true;
        }
        changed |= self
            .rename_token_files(&token_files, &mut notes)
            .map_err(rec_err)?;
        if store_was_empty && imported > 0 {
            notes.push(format!(
                "the state database held no account: took {imported} account(s) and their \
                 tokens from {} and {}; pools, session bindings and quota windows are not in \
                 those files and start afresh",
                accounts_path.display(),
                auth.display()
            ));
        }
        if let Some(default) = listed.and_then(|p| p.default.as_ref()) {
            if self.default_account().map_err(rec_err)?.is_none()
                && self
                    .account(&account_key(default))
                    .map_err(rec_err)?
                    .is_some()
            {
                self.meta
                    .insert(META_DEFAULT, account_key(default).as_bytes())
                    .map_err(|e| OpenError::Record(StoreError::database(e)))?;
                changed = true;
            }
        }
        if changed {
            self.db
                .flush()
                .map_err(|e| OpenError::Record(StoreError::database(e)))?;
            if self.default_account().map_err(rec_err)?.is_none() {
                if let Some(first) = self.accounts().map_err(rec_err)?.first() {
                    self.meta
                        .insert(META_DEFAULT, account_key(&first.email).as_bytes())
                        .map_err(|e| OpenError::Record(StoreError::database(e)))?;
                }
            }
            self.write_accounts_json().map_err(rec_err)?;
        }
        Ok(notes)
    }

    /// Token files an older ccs named so that two addresses could share a name (`a/b@x` and
    /// `a_b@x`): each account's file is written again, from the store, under its own name, and
    /// the old one removed unless it is now another account's (then that one is rewritten
    /// too). Whether any file moved.
    fn rename_token_files(
        &self,
        files: &[TokenFileIn],
        notes: &mut Vec<String>,
    ) -> Result<bool, StoreError> {
        let auth = self.paths.auth_dir();
        let accounts = self.accounts()?;
        let write = |a: &AccountRecord| -> Result<(), StoreError> {
            let Some(rec) = self.token_record(&account_key(&a.email))? else {
                return Ok(());
            };
            let _guard = self.mirror_lock.lock().unwrap_or_else(|p| p.into_inner());
            mirror::write_token_file(&auth, a, &rec)
        };
        let mut moved = false;
        for file in files {
            let want = auth.join(mirror::token_file_name(&file.email));
            if file.path == want {
                continue;
            }
            let Some(owner) = accounts.iter().find(|a| a.email == file.email) else {
                continue;
            };
            write(owner)?;
            let other = accounts
                .iter()
                .find(|a| auth.join(mirror::token_file_name(&a.email)) == file.path);
            match other {
                Some(other) => write(other)?,
                None => {
                    std::fs::remove_file(&file.path).map_err(|e| StoreError::file(&file.path, e))?
                }
            }
            notes.push(format!(
                "{}: the token file of {} had a name another address could share; it is now {}",
                file.path.display(),
                file.email,
                want.display()
            ));
            moved = true;
        }
        Ok(moved)
    }

    /// Pools `accounts.json` names that the database does not have (it was damaged, or is
    /// older than the file): taken back, with the members the database knows. What it says.
    fn restore_lost_pools(&self, listed: Option<&Provider>) -> Result<Option<String>, StoreError> {
        let Some(listed) = listed.filter(|p| !p.pools.is_empty()) else {
            return Ok(None);
        };
        let mut pools = self.pools()?;
        let known: Vec<String> = self
            .accounts()?
            .iter()
            .map(|a| account_key(&a.email))
            .collect();
        let mut back = Vec::new();
        for (name, members) in &listed.pools {
            if pools.contains_key(name) {
                continue;
            }
            let members: Vec<String> = members
                .iter()
                .map(|m| account_key(m))
                .filter(|m| known.contains(m))
                .collect();
            pools.insert(name.clone(), members);
            back.push(name.clone());
        }
        if back.is_empty() {
            return Ok(None);
        }
        let default = ccs_actors::supervisor::DEFAULT_POOL;
        if !pools.contains_key(default) {
            // The default pool's order went with the rest: the file's drain order, then any
            // account it does not name, in login order.
            let mut order: Vec<String> = listed
                .drain_order
                .iter()
                .flat_map(|d| d.ordered_ids.iter().map(|m| account_key(m)))
                .filter(|m| known.contains(m))
                .collect();
            for k in &known {
                if !order.contains(k) {
                    order.push(k.clone());
                }
            }
            pools.insert(default.to_string(), order);
        }
        self.set_pools(&pools)?;
        Ok(Some(format!(
            "the state database had lost the pool(s) {} (damaged?): taken back from {}",
            back.join(", "),
            self.paths.accounts_json().display()
        )))
    }
}

/// Whether `accounts.json` lists the account `id`.
fn entry_listed(listed: Option<&Provider>, id: &str) -> bool {
    listed.is_some_and(|p| p.accounts.keys().any(|k| account_key(k) == id))
}
