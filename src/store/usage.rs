//! The telemetry's records: the `usage` tree (tokens per hour, per account, model and client
//! key, so the dashboard's charts and `ccs cliproxy usage` survive a restart; the shape is
//! `telemetry/usage.rs`'s, kept as bytes under the hour's start in big-endian milliseconds, so
//! keys sort by time), and the client keys the daemon made (`proxy/clients.rs`).

use ccs_actors::ports::StoreError;

use super::{db_err, SledStore};

const META_CLIENTS: &[u8] = b"clients";

impl SledStore {
    /// Every stored hour, oldest first.
    pub fn usage_hours(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.usage
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                let key: [u8; 8] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::damaged("a usage key", "not 8 bytes"))?;
                Ok((u64::from_be_bytes(key), v.to_vec()))
            })
            .collect()
    }

    /// Writes some hours and drops those older than `keep_from`. Batched, like utilization:
    /// the daemon saves the book at each sweep and at stop, so a crash loses at most the counts
    /// since the last sweep.
    pub fn put_usage_hours(
        &self,
        hours: &[(u64, Vec<u8>)],
        keep_from: u64,
    ) -> Result<(), StoreError> {
        let (tree, hours) = (self.usage.clone(), hours.to_vec());
        self.writer.batched("the usage hours", move || {
            let mut batch = sled::Batch::default();
            for (hour, bytes) in &hours {
                batch.insert(&hour.to_be_bytes(), bytes.as_slice());
            }
            for old in tree.range(..keep_from.to_be_bytes()).keys() {
                batch.remove(old.map_err(db_err)?);
            }
            tree.apply_batch(batch).map_err(db_err)
        })
    }

    /// The client keys the daemon made (a JSON list of names and digests).
    pub fn client_keys(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(META_CLIENTS)
            .map_err(db_err)?
            .map(|v| v.to_vec()))
    }

    /// Replaces the client keys the daemon made; flushed, since a revoked key must stay
    /// revoked across a crash.
    pub fn set_client_keys(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let (meta, bytes) = (self.meta.clone(), bytes.to_vec());
        self.writer
            .apply(move || meta.insert(META_CLIENTS, bytes).map(|_| ()).map_err(db_err))
            .wait()
    }

    /// A small record of the `meta` tree (`key` names it).
    pub fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key).map_err(db_err)?.map(|v| v.to_vec()))
    }

    /// Writes a small record of the `meta` tree, batched (what it holds can be learned again).
    pub fn set_meta(&self, key: &'static str, bytes: &[u8]) -> Result<(), StoreError> {
        let (meta, bytes) = (self.meta.clone(), bytes.to_vec());
        self.writer.batched(key, move || {
            meta.insert(key, bytes).map(|_| ()).map_err(db_err)
        })
    }

    /// Every conversation's thinking record; a record that cannot be read is named in the log
    /// and skipped (its blocks then count as no account's, which only makes a move fit more).
    pub fn thinking_records(&self) -> Vec<(String, super::records::ThinkingRecord)> {
        let mut out = Vec::new();
        for kv in self.thinking.iter() {
            let Ok((k, v)) = kv else { continue };
            let session = String::from_utf8_lossy(&k).into_owned();
            match serde_json::from_slice(&v) {
                Ok(r) => out.push((session, r)),
                Err(e) => {
                    tracing::warn!(%session, error = %e, "a thinking record cannot be read; skipped")
                }
            }
        }
        out
    }

    /// Writes one conversation's thinking record (batched: a crash may lose the last ones,
    /// which only makes a later move fit more).
    pub fn set_thinking(
        &self,
        session: &str,
        r: &super::records::ThinkingRecord,
    ) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(r).map_err(|e| StoreError::encode("a thinking record", e))?;
        let (tree, session) = (self.thinking.clone(), session.to_string());
        self.writer.batched("a thinking record", move || {
            tree.insert(session, bytes).map(|_| ()).map_err(db_err)
        })
    }

    pub fn remove_thinking(&self, session: &str) -> Result<(), StoreError> {
        let (tree, session) = (self.thinking.clone(), session.to_string());
        self.writer.batched("a thinking record's removal", move || {
            tree.remove(session).map(|_| ()).map_err(db_err)
        })
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
