//! The `usage` tree: tokens per hour, per account and model, so the dashboard's charts and
//! `ccs cliproxy usage` survive a restart. The shape is the telemetry's (`telemetry/usage.rs`);
//! the store keeps bytes under the hour's start (big-endian milliseconds, so keys sort by time).

use ccs_actors::ports::StoreError;

use super::{db_err, SledStore};

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
                    .map_err(|_| StoreError("a usage key is not 8 bytes".into()))?;
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
        let mut batch = sled::Batch::default();
        for (hour, bytes) in hours {
            batch.insert(&hour.to_be_bytes(), bytes.as_slice());
        }
        for old in self.usage.range(..keep_from.to_be_bytes()).keys() {
            batch.remove(old.map_err(db_err)?);
        }
        self.usage.apply_batch(batch).map_err(db_err)
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
