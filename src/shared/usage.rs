//! The usage figures of a shared pool: each daemon writes its own figures of each hour to
//! `usage:HOUR` (a hash, one field per daemon, overwritten as the hour's count grows, kept as
//! long as the book keeps hours) every heartbeat, and a report reads the other daemons'
//! fields and counts them in with its own live book.

use crate::shared::SharedError;
use std::collections::HashMap;

use super::Shared;
use crate::telemetry::usage::{HOUR_MS, KEEP};

impl Shared {
    /// Writes this daemon's figures of `hours` (hour start, stored JSON).
    pub async fn push_usage(&self, hours: Vec<(u64, Vec<u8>)>) -> Result<(), SharedError> {
        if hours.is_empty() {
            return Ok(());
        }
        let keep = u64::try_from(KEEP.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        for (hour, json) in hours {
            let key = self.key("usage", &hour.to_string());
            pipe.cmd("HSET")
                .arg(&key)
                .arg(&self.daemon)
                .arg(json)
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(keep).ignore();
        }
        let mut c = self.conn()?;
        self.run(async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    /// The other daemons' figures of every hour from `first_hour` to `now_ms`.
    pub async fn peer_usage(
        &self,
        first_hour: u64,
        now_ms: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, SharedError> {
        let hours: Vec<u64> = (first_hour..=now_ms).step_by(HOUR_MS as usize).collect();
        let mut pipe = redis::pipe();
        for hour in &hours {
            pipe.cmd("HGETALL")
                .arg(self.key("usage", &hour.to_string()));
        }
        let mut c = self.conn()?;
        let answers: Vec<HashMap<String, Vec<u8>>> = self
            .run(async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(hours
            .into_iter()
            .zip(answers)
            .flat_map(|(hour, fields)| {
                fields
                    .into_iter()
                    .filter(|(daemon, _)| *daemon != self.daemon)
                    .map(move |(_, json)| (hour, json))
            })
            .collect())
    }
}
