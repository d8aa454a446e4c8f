//! The stored shapes: versioned, serialisable records, kept apart from the in-memory types of
//! `ccs-actors` (which are not serialisable by design). Conversion is by hand, here, in both
//! directions.
//!
//! Must not: store a lifecycle phase of Refreshing (only `dead` is stored; everything else is
//! re-derived from the token at load), or change a record's meaning without bumping `v`.

use std::collections::BTreeMap;

use ccs_actors::quota::{Quota, Status, Window};
use ccs_actors::routing::Binding;
use ccs_actors::{Secret, Timestamp, Token};
use serde::{Deserialize, Serialize};

/// The record version this build writes and reads.
pub const V: u32 = 1;

/// One logged-in account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub v: u32,
    pub email: String,
    pub nickname: String,
    pub created_at_ms: u64,
    pub last_used_at_ms: Option<u64>,
    /// Logged in and refreshed, but takes no traffic.
    pub paused: bool,
    pub paused_at_ms: Option<u64>,
    /// The grant is gone; a new login clears it.
    pub dead: bool,
    /// Pro / Max / Team, from the profile endpoint.
    pub plan: Option<String>,
    pub account_uuid: Option<String>,
    pub organization_uuid: Option<String>,
    pub organization_name: Option<String>,
    /// Login order: the default pool's drain order unless the user set one.
    pub order: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub v: u32,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at_ms: u64,
    /// When this record was written; a mirror file newer than this is imported at open.
    pub updated_at_ms: u64,
}

impl TokenRecord {
    pub fn new(token: &Token, now: Timestamp) -> Self {
        TokenRecord {
            v: V,
            access_token: token.access.expose().to_string(),
            refresh_token: token.refresh.expose().to_string(),
            expires_at_ms: token.expires_at.as_millis(),
            updated_at_ms: now.as_millis(),
        }
    }

    pub fn token(&self) -> Token {
        Token {
            access: Secret::new(self.access_token.clone()),
            refresh: Secret::new(self.refresh_token.clone()),
            expires_at: Timestamp::from_millis(self.expires_at_ms),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    pub status: String,
    pub utilization: f64,
    pub resets_at_ms: Option<u64>,
    pub seen_at_ms: Option<u64>,
}

impl From<&Window> for WindowRecord {
    fn from(w: &Window) -> Self {
        WindowRecord {
            status: w.status.as_str().to_string(),
            utilization: w.utilization,
            resets_at_ms: w.resets_at.map(Timestamp::as_millis),
            seen_at_ms: w.seen_at.map(Timestamp::as_millis),
        }
    }
}

impl From<&WindowRecord> for Window {
    fn from(r: &WindowRecord) -> Self {
        Window {
            status: match r.status.as_str() {
                "allowed" => Status::Allowed,
                "allowed_warning" => Status::AllowedWarning,
                "rejected" => Status::Rejected,
                _ => Status::Unknown,
            },
            utilization: r.utilization,
            resets_at: r.resets_at_ms.map(Timestamp::from_millis),
            seen_at: r.seen_at_ms.map(Timestamp::from_millis),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub v: u32,
    pub five_hour: WindowRecord,
    pub seven_day: WindowRecord,
    pub families: BTreeMap<String, WindowRecord>,
    pub backoff_until_ms: Option<u64>,
    pub backoff_step: u32,
}

impl From<&Quota> for QuotaRecord {
    fn from(q: &Quota) -> Self {
        QuotaRecord {
            v: V,
            five_hour: (&q.five_hour).into(),
            seven_day: (&q.seven_day).into(),
            families: q
                .families
                .iter()
                .map(|(k, w)| (k.clone(), w.into()))
                .collect(),
            backoff_until_ms: q.backoff_until.map(Timestamp::as_millis),
            backoff_step: q.backoff_step,
        }
    }
}

impl From<&QuotaRecord> for Quota {
    fn from(r: &QuotaRecord) -> Self {
        Quota {
            five_hour: (&r.five_hour).into(),
            seven_day: (&r.seven_day).into(),
            families: r
                .families
                .iter()
                .map(|(k, w)| (k.clone(), w.into()))
                .collect(),
            backoff_until: r.backoff_until_ms.map(Timestamp::from_millis),
            backoff_step: r.backoff_step,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub v: u32,
    pub account: String,
    pub last_used_ms: u64,
}

impl From<&Binding> for BindingRecord {
    fn from(b: &Binding) -> Self {
        BindingRecord {
            v: V,
            account: b.account.to_string(),
            last_used_ms: b.last_used.as_millis(),
        }
    }
}

impl From<&BindingRecord> for Binding {
    fn from(r: &BindingRecord) -> Self {
        Binding {
            account: r.account.as_str().into(),
            last_used: Timestamp::from_millis(r.last_used_ms),
        }
    }
}

/// Named pools and their drain order (the default pool's order included once the user set it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolsRecord {
    pub v: u32,
    pub pools: BTreeMap<String, Vec<String>>,
}

/// Why a record does not decode.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("record version {found}; this build reads version {reads} (upgrade ccs)")]
    Version { found: u32, reads: u32 },
}

/// Decodes a record, refusing versions this build does not know.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, RecordError> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let Version { v } = serde_json::from_slice(bytes)?;
    if v != V {
        return Err(RecordError::Version { found: v, reads: V });
    }
    Ok(serde_json::from_slice(bytes)?)
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Which account produced each thinking block of one conversation (specs/continuity.md C2):
/// digests only, never a block. Kept as long as the conversation's binding would be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThinkingRecord {
    pub v: u32,
    /// When the conversation last produced a block.
    pub touched_ms: u64,
    /// Block digest (32 hex digits) and the account that produced it, oldest first.
    pub blocks: Vec<(String, String)>,
}

/// The last hour as `ccs cliproxy status` shows it, kept across a restart (`proxy/recent.rs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentRecord {
    /// (minute, requests) buckets.
    pub requests_per_minute: Vec<(u64, u64)>,
    pub events: Vec<HopRecord>,
}

/// One hop between accounts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HopRecord {
    pub at_ms: u64,
    pub session: String,
    pub from: String,
    pub to: String,
    /// `HopReason::as_str`.
    pub reason: String,
}
