//! The credential an account holds: an OAuth access token, its refresh token and its expiry.
//!
//! Owns the `Secret` wrapper that keeps token strings out of logs and debug output. Must not:
//! know how tokens are obtained (the `Refresher` does) or stored (the `Store` does).

use std::fmt;

use crate::clock::Timestamp;

/// A string that must never be printed. `Debug` and `Display` show only its length.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The raw value, for the one place that must send it (an HTTP header, a file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} chars redacted>)", self.0.len())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// One grant's current credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub access: Secret,
    /// Rotates on every refresh: the previous one stops working at the authority at once, which
    /// is why a new one must be persisted before anything else sees it.
    pub refresh: Secret,
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let t = Token {
            access: Secret::new("sk-ant-oat01-abcdef"),
            refresh: Secret::new("sk-ant-ort01-ghijkl"),
            expires_at: Timestamp::from_secs(5),
        };
        let shown = format!("{t:?} {}", t.access);
        assert!(!shown.contains("abcdef"), "{shown}");
        assert!(!shown.contains("ghijkl"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        assert_eq!(t.access.expose(), "sk-ant-oat01-abcdef");
    }
}
