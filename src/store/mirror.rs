//! The JSON files of the tool ccs replaces (specs/anthropic.md §6): `accounts.json`
//! and `auth/claude-<email>.json`. Written as a mirror of the store after every change, read
//! at open to import what another tool (or an older ccs) left there.
//!
//! Must not: write a token file outside `auth/` (e-mail addresses are sanitised for file
//! names), or accept a file it cannot fully read (the error names the file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `claude-<email>.json`, with the address made safe as a file name: no path separators, no
/// `..`, no control characters. Injective, so two accounts never share a file: an ordinary
/// address stays as it is (what the replaced tool writes), and any other character is written
/// as `%XX` of its UTF-8 bytes (`%` itself too, and a `.` right after a `.`).
pub fn token_file_name(email: &str) -> String {
    let mut safe = String::with_capacity(email.len());
    let mut last = None;
    for c in email.chars() {
        let plain = match c {
            '/' | '\\' | ':' | '%' => false,
            '.' => last != Some('.'),
            c => !c.is_control(),
        };
        if plain {
            safe.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                safe.push_str(&format!("%{b:02X}"));
            }
        }
        last = Some(c);
    }
    format!("claude-{safe}.json")
}

/// The address a file name carries (`token_file_name` undone; a `%` not followed by two hex
/// digits stands for itself, as an older name may have it).
fn decoded(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn rfc3339(ms: u64) -> String {
    ccs_actors::Timestamp::from_millis(ms).rfc3339()
}

fn parse_time(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => {
            let t = DateTime::parse_from_rfc3339(s.trim()).ok()?;
            u64::try_from(t.timestamp_millis()).ok()
        }
        Value::Number(n) => {
            let n = n.as_f64()?;
            if !n.is_finite() || n < 0.0 {
                return None;
            }
            // Seconds or milliseconds: anything below 10^11 is seconds (year 5138 in ms).
            Some(if n < 1e11 {
                (n * 1000.0) as u64
            } else {
                n as u64
            })
        }
        _ => None,
    }
}

/// `auth/claude-<email>.json` as ccs writes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenFileOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub access_token: &'a str,
    pub refresh_token: &'a str,
    pub email: &'a str,
    /// RFC 3339, UTC.
    pub expired: String,
    /// Milliseconds since the epoch.
    pub expiry_date: u64,
    pub last_refresh: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<&'a str>,
}

impl<'a> TokenFileOut<'a> {
    /// The token file of `account` holding `rec`.
    pub fn new(
        account: &'a super::records::AccountRecord,
        rec: &'a super::records::TokenRecord,
    ) -> Self {
        TokenFileOut {
            kind: "claude",
            access_token: &rec.access_token,
            refresh_token: &rec.refresh_token,
            email: &account.email,
            expired: rfc3339(rec.expires_at_ms),
            expiry_date: rec.expires_at_ms,
            last_refresh: rfc3339(rec.updated_at_ms),
            account_uuid: account.account_uuid.as_deref(),
            organization_uuid: account.organization_uuid.as_deref(),
            organization_name: account.organization_name.as_deref(),
        }
    }
}

/// Writes `account`'s token file in `auth_dir` holding `rec` (the caller holds the mirror
/// lock).
pub fn write_token_file(
    auth_dir: &Path,
    account: &super::records::AccountRecord,
    rec: &super::records::TokenRecord,
) -> Result<(), ccs_actors::ports::StoreError> {
    let path = auth_dir.join(token_file_name(&account.email));
    crate::fsutil::write_private(&path, &TokenFileOut::new(account, rec).to_bytes())
        .map_err(|e| ccs_actors::ports::StoreError::file(&path, e))
}

impl TokenFileOut<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A token file as read: the fields we need, from any of the spellings tools use.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenFileIn {
    pub path: PathBuf,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at_ms: u64,
    pub account_uuid: Option<String>,
    pub organization_uuid: Option<String>,
    pub organization_name: Option<String>,
    /// File modification time: the creation time of an account first seen in a file. Never
    /// used to decide which token is newer (the token's expiry decides).
    pub modified_ms: u64,
}

/// The keys other tools use for the expiry (specs/anthropic.md §6).
const EXPIRY_KEYS: &[&str] = &[
    "expiry_date",
    "expired",
    "expire",
    "expires_at",
    "expiresAt",
    "expiry",
    "expires",
];

/// Why a token file of the tool ccs replaces does not read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("type is {0:?}, expected \"claude\"")]
    NotClaude(String),
    #[error("no {0}")]
    Missing(&'static str),
    #[error("no email, and the file name does not carry one")]
    NoEmail,
    #[error("no readable expiry (expiry_date, expired, expires_at, …)")]
    NoExpiry,
}

pub fn read_token_file(path: &Path) -> Result<TokenFileIn, TokenFileError> {
    let bytes = std::fs::read(path)?;
    let v: Value = serde_json::from_slice(&bytes)?;
    let obj = v.as_object().ok_or(TokenFileError::NotAnObject)?;
    if let Some(kind) = obj.get("type").and_then(Value::as_str) {
        if kind != "claude" {
            return Err(TokenFileError::NotClaude(kind.to_string()));
        }
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let access_token = text("access_token").ok_or(TokenFileError::Missing("access_token"))?;
    let refresh_token = text("refresh_token").ok_or(TokenFileError::Missing("refresh_token"))?;
    let email = match text("email") {
        Some(e) => e,
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("claude-"))
            .and_then(|n| n.strip_suffix(".json"))
            .map(decoded)
            .filter(|e| e.contains('@'))
            .ok_or(TokenFileError::NoEmail)?,
    };
    let expires_at_ms = EXPIRY_KEYS
        .iter()
        .find_map(|k| obj.get(*k).and_then(parse_time))
        .ok_or(TokenFileError::NoExpiry)?;
    let modified_ms = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(TokenFileIn {
        path: path.to_path_buf(),
        email,
        access_token,
        refresh_token,
        expires_at_ms,
        account_uuid: text("account_uuid"),
        organization_uuid: text("organization_uuid"),
        organization_name: text("organization_name"),
        modified_ms,
    })
}

/// `accounts.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountsFile {
    pub version: u32,
    #[serde(default)]
    pub providers: BTreeMap<String, Provider>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountEntry>,
    #[serde(
        default,
        rename = "drainOrder",
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_order: Option<DrainOrder>,
    /// ccs's own: the pools besides the default one (members in drain order), so a state
    /// database that lost them can say so and take them back at open. Other tools ignore it.
    #[serde(
        default,
        rename = "ccsPools",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub pools: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountEntry {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub nickname: String,
    #[serde(default)]
    pub token_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainOrder {
    pub mode: String,
    #[serde(default)]
    pub ordered_ids: Vec<String>,
}

impl AccountsFile {
    pub fn read(path: &Path) -> Result<Option<AccountsFile>, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("not a valid accounts file: {e}"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn claude(&self) -> Option<&Provider> {
        self.providers.get("claude")
    }

    pub fn time_ms(s: &Option<String>) -> Option<u64> {
        s.as_ref()
            .and_then(|s| parse_time(&Value::String(s.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_folder() {
        assert_eq!(
            token_file_name("alice@example.com"),
            "claude-alice@example.com.json"
        );
        assert_eq!(token_file_name("a_b@x"), "claude-a_b@x.json");
        assert_eq!(
            token_file_name("../../etc/passwd"),
            "claude-.%2E%2F.%2E%2Fetc%2Fpasswd.json"
        );
        assert_eq!(token_file_name("a/b\\c@x"), "claude-a%2Fb%5Cc@x.json");
        for nasty in ["x@y/../..", "....@x", "a\u{1b}[31m@x", "%2F@x"] {
            let name = token_file_name(nasty);
            assert!(!name.contains("..") && !name.contains('/'), "{name}");
            assert!(!name.chars().any(char::is_control), "{name}");
        }
    }

    #[test]
    fn two_addresses_never_share_a_file() {
        let addresses = [
            "a/b@x",
            "a_b@x",
            "a\\b@x",
            "a:b@x",
            "a%2Fb@x",
            "a%b@x",
            "a..b@x",
            "a.%2Eb@x",
            "a.b@x",
            "a\u{7}b@x",
            "a_b@x.",
            "a_b@x..",
        ];
        let names: std::collections::HashSet<String> =
            addresses.iter().map(|a| token_file_name(a)).collect();
        assert_eq!(names.len(), addresses.len(), "{names:?}");
        for a in addresses {
            let name = token_file_name(a);
            let inner = &name["claude-".len()..name.len() - ".json".len()];
            assert_eq!(decoded(inner), a, "{name}");
        }
    }

    #[test]
    fn expiry_is_read_from_any_known_key() {
        let dir = tempfile::tempdir().unwrap();
        for (key, val, want) in [
            ("expiry_date", "1760000000000", 1_760_000_000_000u64),
            ("expired", "\"2025-10-09T08:53:20Z\"", 1_760_000_000_000),
            (
                "expires_at",
                "\"2025-10-09T16:53:20+08:00\"",
                1_760_000_000_000,
            ),
            ("expiresAt", "1760000000", 1_760_000_000_000),
        ] {
            let p = dir.path().join("claude-a@x.json");
            std::fs::write(
                &p,
                format!(r#"{{"access_token":"a","refresh_token":"r","{key}":{val}}}"#),
            )
            .unwrap();
            let t = read_token_file(&p).unwrap();
            assert_eq!(t.expires_at_ms, want, "{key}");
            assert_eq!(t.email, "a@x", "email from the file name");
        }
    }
}
