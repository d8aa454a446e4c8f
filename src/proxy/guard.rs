//! Who may talk to the daemon: the `Host` check that stops DNS-rebinding pages, the same-origin
//! rule of the management API, and the throttle on failed keys.
//!
//! A request carrying the right key or secret always gets through, whoever else is failing
//! from the same address: failures are slowed down, never turned into a lockout. The throttle's
//! table is bounded and pruned, and all of loopback (127/8, ::1) is one client, since any local
//! process can pick any of those addresses.
//!
//! Must not: refuse a correct secret, delay a correct secret, or grow with the number of
//! addresses that fail.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a client may make per window before its failures are slowed down.
pub const FREE_FAILURES: u32 = 5;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The longest a failure's answer is held back.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Failed answers held back at once per client; beyond it they are answered 429 at once (so a
/// flood cannot pile up connections).
pub const MAX_HELD: u32 = 8;
/// Clients remembered at once; the oldest is forgotten beyond it.
pub const MAX_CLIENTS: usize = 4096;

/// The host part of a `Host` header or an origin's authority: `[::1]:8317` → `::1`,
/// `example.com:80` → `example.com`.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The host a request names: its target's authority when it has one (an absolute-form target
/// in HTTP/1.1, which overrides `Host` (RFC 9112 §3.2.2), or HTTP/2's `:authority`, which
/// browsers send to a daemon that serves TLS), else its `Host` header. A `Host` that is not
/// text reads as a name nothing allows.
pub fn request_host<'a>(
    headers: &'a actix_web::http::header::HeaderMap,
    uri: &'a actix_web::http::Uri,
) -> Option<&'a str> {
    match (uri.authority(), headers.get("host")) {
        (Some(a), _) => Some(a.as_str()),
        (None, Some(v)) => Some(v.to_str().unwrap_or("\u{0}")),
        (None, None) => None,
    }
}

/// Whether an HTTP/2 request's `:authority` and `Host` name different hosts: a malformed
/// request (RFC 9113 §8.3.1), refused rather than judged by either. (An HTTP/1.1
/// absolute-form target replaces `Host` instead, RFC 9112 §3.2.2.)
pub fn authority_conflict(
    version: actix_web::http::Version,
    headers: &actix_web::http::header::HeaderMap,
    uri: &actix_web::http::Uri,
) -> bool {
    if version != actix_web::http::Version::HTTP_2 {
        return false;
    }
    match (uri.authority(), headers.get("host")) {
        (Some(a), Some(h)) => h
            .to_str()
            .map_or(true, |h| !h.trim().eq_ignore_ascii_case(a.as_str())),
        _ => false,
    }
}

/// Whether a request's `Host` names this daemon: an IP literal (a page can only put one there
/// when it was itself loaded from that address, so it is no rebinding), `localhost`, or a name
/// in `cliproxy.allowed_hosts`. A request without `Host` (HTTP/1.0) is no browser's.
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = host_name(host.trim()).trim_end_matches('.');
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The management API's same-origin rule: no `Origin` (the CLI, curl, scripts) or the daemon's
/// own origin (a page it served). Any other page, `null` included, is refused.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match (authority, host) {
        (Some(a), Some(h)) => a.trim_end_matches('/').eq_ignore_ascii_case(h.trim()),
        _ => false,
    }
}

/// Whose failures count together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// Anything on this machine: every loopback address is one client.
    Loopback,
    V4([u8; 4]),
    /// An IPv6 client by its /64, the unit one host can choose addresses from.
    V6([u16; 4]),
}

impl ClientKey {
    pub fn of(peer: Option<IpAddr>) -> ClientKey {
        match peer.map(|ip| ip.to_canonical()) {
            None => ClientKey::Loopback,
            Some(ip) if ip.is_loopback() => ClientKey::Loopback,
            Some(IpAddr::V4(v4)) => ClientKey::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => {
                let s = Ipv6Addr::segments(&v6);
                ClientKey::V6([s[0], s[1], s[2], s[3]])
            }
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Loopback => write!(f, "loopback"),
            ClientKey::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(*o)),
            ClientKey::V6(s) => write!(f, "{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]),
        }
    }
}

struct Record {
    window_start: Instant,
    failures: u32,
    held: u32,
}

/// What to do with a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Penalty {
    /// Answer the refusal now.
    None,
    /// Hold the refusal back this long first (release with `Throttle::released`).
    Hold(Duration),
    /// Too many held already: answer 429 now.
    Busy,
}

/// Failed attempts per client, in a bounded table.
#[derive(Default)]
pub struct Throttle {
    table: Mutex<HashMap<ClientKey, Record>>,
}

impl Throttle {
    /// Counts a failure of `client` at `now` and says how to answer it.
    pub fn failed(&self, client: ClientKey, now: Instant) -> Penalty {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !t.contains_key(&client) && t.len() >= MAX_CLIENTS {
            t.retain(|_, r| r.held > 0 || now.duration_since(r.window_start) < WINDOW);
            if t.len() >= MAX_CLIENTS {
                let oldest = t
                    .iter()
                    .filter(|(_, r)| r.held == 0)
                    .min_by_key(|(_, r)| r.window_start)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => {
                        t.remove(&k);
                    }
                    // Every slot holds an answer back: the table is under attack; refuse.
                    None => return Penalty::Busy,
                }
            }
        }
        let r = t.entry(client).or_insert(Record {
            window_start: now,
            failures: 0,
            held: 0,
        });
        if now.duration_since(r.window_start) >= WINDOW {
            r.window_start = now;
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        if r.failures <= FREE_FAILURES {
            return Penalty::None;
        }
        if r.failures == FREE_FAILURES + 1 {
            tracing::warn!(%client, "more than {FREE_FAILURES} failed key attempts within a minute: slowing this client's failures down");
        }
        if r.held >= MAX_HELD {
            return Penalty::Busy;
        }
        r.held += 1;
        let over = r.failures - FREE_FAILURES - 1;
        Penalty::Hold(
            (Duration::from_millis(250) * 2u32.saturating_pow(over.min(8))).min(MAX_DELAY),
        )
    }

    /// A held-back answer went out.
    pub fn released(&self, client: ClientKey) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = t.get_mut(&client) {
            r.held = r.held.saturating_sub(1);
        }
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies the penalty for a failure of `client`: waits out a hold (then releases it), or
    /// says the client is busy. Returns whether to answer 429 rather than the refusal.
    pub async fn punish(&self, client: ClientKey) -> bool {
        match self.failed(client, Instant::now()) {
            Penalty::None => false,
            Penalty::Hold(d) => {
                actix_web::rt::time::sleep(d).await;
                self.released(client);
                false
            }
            Penalty::Busy => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http2_authority_and_host_that_disagree_conflict() {
        use actix_web::http::Version;
        let uri: actix_web::http::Uri = "https://127.0.0.1:8317/v1/messages".parse().unwrap();
        let mut h = actix_web::http::header::HeaderMap::new();
        assert!(
            !authority_conflict(Version::HTTP_2, &h, &uri),
            "no Host: none"
        );
        h.insert(
            actix_web::http::header::HOST,
            "127.0.0.1:8317".parse().unwrap(),
        );
        assert!(!authority_conflict(Version::HTTP_2, &h, &uri), "the same");
        h.insert(
            actix_web::http::header::HOST,
            "rebound.example:8317".parse().unwrap(),
        );
        assert!(authority_conflict(Version::HTTP_2, &h, &uri));
        assert!(
            !authority_conflict(Version::HTTP_11, &h, &uri),
            "HTTP/1.1: the target's authority replaces Host"
        );
    }

    #[test]
    fn an_http2_request_is_judged_by_its_authority() {
        use actix_web::http::header::{HeaderMap, HeaderValue};
        let uri: actix_web::http::Uri = "https://rebound.example:8317/healthz".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(request_host(&none, &uri), Some("rebound.example:8317"));
        assert!(!host_allowed(request_host(&none, &uri), &[]));
        let mut h = HeaderMap::new();
        h.insert(
            actix_web::http::header::HOST,
            HeaderValue::from_static("127.0.0.1:8317"),
        );
        // An absolute-form target names its host; a loopback `Host` beside it changes nothing.
        assert_eq!(request_host(&h, &uri), Some("rebound.example:8317"));
        let path_only: actix_web::http::Uri = "/healthz".parse().unwrap();
        assert_eq!(request_host(&h, &path_only), Some("127.0.0.1:8317"));
        let bare: actix_web::http::Uri = "/healthz".parse().unwrap();
        assert_eq!(request_host(&none, &bare), None);
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_configured_names() {
        let none: Vec<String> = vec![];
        for ok in [
            "127.0.0.1:8317",
            "127.0.0.2",
            "[::1]:8317",
            "localhost:8317",
            "LOCALHOST.",
            "192.168.1.20:8317",
        ] {
            assert!(host_allowed(Some(ok), &none), "{ok}");
        }
        for bad in ["evil.example:8317", "evil.example", "127.0.0.1.nip.io:8317"] {
            assert!(!host_allowed(Some(bad), &none), "{bad}");
        }
        assert!(host_allowed(
            Some("proxy.lan:8317"),
            &["Proxy.LAN".to_string()]
        ));
        assert!(host_allowed(None, &none));
    }

    #[test]
    fn only_the_daemons_own_origin_reaches_management() {
        let h = Some("127.0.0.1:8317");
        assert!(origin_allowed(None, h));
        assert!(origin_allowed(Some("http://127.0.0.1:8317"), h));
        assert!(!origin_allowed(Some("http://evil.example:8317"), h));
        assert!(!origin_allowed(Some("http://127.0.0.1:9999"), h));
        assert!(!origin_allowed(Some("null"), h));
        assert!(!origin_allowed(Some("http://192.168.1.5"), h));
    }

    #[test]
    fn all_of_loopback_is_one_client_and_v6_counts_by_prefix() {
        let a = ClientKey::of(Some("127.0.0.1".parse().unwrap()));
        assert_eq!(a, ClientKey::of(Some("127.0.0.41".parse().unwrap())));
        assert_eq!(a, ClientKey::of(Some("::1".parse().unwrap())));
        assert_eq!(a, ClientKey::of(Some("::ffff:127.0.0.9".parse().unwrap())));
        assert_ne!(a, ClientKey::of(Some("10.0.0.1".parse().unwrap())));
        assert_eq!(
            ClientKey::of(Some("2001:db8:1:2::1".parse().unwrap())),
            ClientKey::of(Some("2001:db8:1:2:ffff::9".parse().unwrap()))
        );
    }

    #[test]
    fn failures_are_free_then_slowed_then_busy_and_forgotten_after_the_window() {
        let t = Throttle::default();
        let c = ClientKey::Loopback;
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed(c, now), Penalty::None);
        }
        let mut last = Duration::ZERO;
        for _ in 0..MAX_HELD {
            let Penalty::Hold(d) = t.failed(c, now) else {
                panic!("held")
            };
            assert!(d >= last && d <= MAX_DELAY, "{d:?}");
            last = d;
        }
        assert_eq!(t.failed(c, now), Penalty::Busy, "held answers are bounded");
        t.released(c);
        assert!(matches!(t.failed(c, now), Penalty::Hold(_)));
        assert_eq!(t.failed(c, now + WINDOW), Penalty::None, "a new window");
    }

    #[test]
    fn the_table_stays_bounded_whatever_the_number_of_addresses() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 * 3) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            t.failed(ClientKey::of(Some(IpAddr::V4(ip))), now);
        }
        assert!(t.len() <= MAX_CLIENTS, "{}", t.len());
        t.failed(ClientKey::Loopback, now + WINDOW);
        assert!(t.len() <= MAX_CLIENTS);
    }
}
