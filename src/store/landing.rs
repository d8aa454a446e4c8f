//! Where a refresh's answer lands first. Refresh tokens rotate the moment the authority
//! answers, so the time from its answer to durable storage is a window in which a crash loses
//! the grant. The refresher closes it where the answer is read: before the token goes anywhere
//! (to the account actor, the machine, the store writer), it is written and synced to
//! `cliproxy/landing/<account>.json` on the same thread. At the next open, a landed token that
//! answers the refresh of the stored one (the stored refresh token's fingerprint is the one it
//! names as `previous`) is taken into the store; any other landing is stale and removed.
//!
//! Only for a daemon of its own (`store.backend: sled`): in a shared pool a token becomes the
//! pool's by the compare-and-set in Redis, and a landed one the pool never saw must not win.
//!
//! Must not: hold a token readable by others (0600 in a 0700 folder), or take in a landed
//! token over a newer stored one.

use std::path::{Path, PathBuf};

use ccs_actors::{Secret, Token};
use serde::{Deserialize, Serialize};

use super::records::TokenRecord;
use crate::fsutil;

/// A refresh's answer as it landed.
#[derive(Serialize, Deserialize)]
struct Landed {
    v: u32,
    account: String,
    /// The fingerprint of the refresh token this answer replaced.
    previous: String,
    access_token: String,
    refresh_token: String,
    expires_at_ms: u64,
    landed_at_ms: u64,
}

/// The folder the answers land in.
#[derive(Clone, Debug)]
pub struct Landing {
    dir: PathBuf,
}

/// A landing file's size is a whole number of these.
const PAGE: usize = 4096;

fn file_name(account: &str) -> String {
    // The account key as hex: any address is a safe, distinct file name.
    let hex: String = account.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.json")
}

impl Landing {
    pub fn at(dir: PathBuf) -> Landing {
        Landing { dir }
    }

    /// Writes `token`, the answer to the refresh of `previous`, and syncs it: it survives a
    /// crash from here on. Returns when it was written (from then on it survives the process
    /// being killed; the sync after it, the machine going down).
    pub fn land(
        &self,
        account: &str,
        previous: &Secret,
        token: &Token,
        now_ms: u64,
    ) -> std::io::Result<std::time::Instant> {
        let landed = Landed {
            v: 1,
            account: account.to_string(),
            previous: ccs_actors::ports::fingerprint(previous),
            access_token: token.access.expose().to_string(),
            refresh_token: token.refresh.expose().to_string(),
            expires_at_ms: token.expires_at.as_millis(),
            landed_at_ms: now_ms,
        };
        let mut bytes = serde_json::to_vec(&landed).map_err(std::io::Error::other)?;
        // Whole pages, padded with blanks (still JSON): the file keeps its length from one
        // answer to the next, so one data sync makes it durable (no rename, no folder sync but
        // the first time), and a torn write fails to parse instead of passing as a token.
        bytes.resize(bytes.len().div_ceil(PAGE) * PAGE, b' ');
        let path = self.dir.join(file_name(account));
        let (file, created) = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::OpenOptionsExt;
                fsutil::private_dir(&self.dir)?;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&path)?;
                (f, true)
            }
            Err(e) => return Err(e),
        };
        std::os::unix::fs::FileExt::write_all_at(&file, &bytes, 0)?;
        file.set_len(bytes.len() as u64)?;
        let written = std::time::Instant::now();
        file.sync_data()?;
        if created {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(written)
    }

    /// Forgets `account`'s landed answer (a logout).
    pub fn remove(&self, account: &str) {
        let _ = std::fs::remove_file(self.dir.join(file_name(account)));
    }

    /// Every landed answer that replaces the token `stored` holds for its account, as the
    /// record to store; every landing file is removed once read (`adopted` is called first for
    /// the ones taken, so none is removed before the store holds it).
    pub fn recover(
        &self,
        stored: impl Fn(&str) -> Option<TokenRecord>,
        mut adopted: impl FnMut(&str, TokenRecord) -> bool,
    ) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let keep = match read(&path) {
                Some(l) => {
                    let replaces = stored(&l.account).is_some_and(|cur| {
                        ccs_actors::ports::fingerprint(&Secret::new(cur.refresh_token.clone()))
                            == l.previous
                    });
                    let record = TokenRecord {
                        v: super::records::V,
                        access_token: l.access_token,
                        refresh_token: l.refresh_token,
                        expires_at_ms: l.expires_at_ms,
                        updated_at_ms: l.landed_at_ms,
                    };
                    if replaces && adopted(&l.account, record) {
                        taken.push(l.account);
                        false
                    } else {
                        // Adopting failed: left for the next open.
                        replaces
                    }
                }
                None => false,
            };
            if !keep {
                let _ = std::fs::remove_file(&path);
            }
        }
        taken
    }
}

fn read(path: &Path) -> Option<Landed> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccs_actors::Timestamp;

    fn token(n: u32) -> Token {
        Token {
            access: Secret::new(format!("access-{n}")),
            refresh: Secret::new(format!("refresh-{n}")),
            expires_at: Timestamp::from_millis(1_000 + u64::from(n)),
        }
    }

    fn record(t: &Token) -> TokenRecord {
        TokenRecord::new(t, Timestamp::from_millis(1))
    }

    #[test]
    fn an_answer_to_the_stored_tokens_refresh_is_taken_and_a_stale_one_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let landing = Landing::at(dir.path().join("landing"));
        // a's refresh of token 1 answered token 2; b's landing answers a token b no longer
        // holds (the store moved on).
        landing
            .land("a@x", &token(1).refresh, &token(2), 5)
            .unwrap();
        landing
            .land("b@x", &token(7).refresh, &token(8), 5)
            .unwrap();
        let stored = |id: &str| match id {
            "a@x" => Some(record(&token(1))),
            _ => Some(record(&token(9))),
        };
        let mut got = Vec::new();
        let taken = landing.recover(stored, |id, rec| {
            got.push((id.to_string(), rec.refresh_token.clone()));
            true
        });
        assert_eq!(taken, vec!["a@x".to_string()]);
        assert_eq!(got, vec![("a@x".to_string(), "refresh-2".to_string())]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("landing"))
                .unwrap()
                .count(),
            0,
            "every landing read is gone"
        );
        assert_eq!(
            crate::fsutil::mode(&dir.path().join("landing")).unwrap(),
            0o700
        );
    }

    #[test]
    fn a_landing_the_store_could_not_take_stays_for_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let landing = Landing::at(dir.path().join("landing"));
        landing
            .land("a@x", &token(1).refresh, &token(2), 5)
            .unwrap();
        let stored = |_: &str| Some(record(&token(1)));
        assert!(landing.recover(stored, |_, _| false).is_empty());
        assert_eq!(
            landing.recover(stored, |_, _| true),
            vec!["a@x".to_string()]
        );
    }
}
