//! The dashboard's logins: sessions (a random id in an HttpOnly, SameSite=Strict cookie, with
//! a CSRF token every write must echo), one-time login links (what `ccs config` opens, so the
//! person never types the random secret), and the OAuth logins started from the dashboard
//! (their PKCE verifier and state, until the browser comes back to `/callback`).
//!
//! Only digests of the session ids and link tokens are kept, so a lookup's timing tells
//! nothing about a stored value. Must not: let a link work twice or after `LINK_TTL`, or keep
//! a session past `SESSION_TTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::keys::constant_time_eq;
use crate::oauth::login::Attempt;

/// How long a dashboard login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time login link works.
pub const LINK_TTL: Duration = Duration::from_secs(120);
/// How long a login started from the dashboard waits for the browser to come back.
pub const OAUTH_TTL: Duration = Duration::from_secs(600);
/// The cookie that carries the session id.
pub const COOKIE: &str = "ccs_session";
/// The session cookie's name over TLS: `__Host-` makes the browser keep it only when it was
/// set over HTTPS with `Secure`, for this host alone (`Path=/`, no `Domain`), so a plain-HTTP
/// service on the same host name can neither read nor plant it (RFC 6265bis §4.1.3.2).
pub const COOKIE_TLS: &str = "__Host-ccs_session";

/// The session cookie's name on a daemon that serves TLS (`tls`) or plain HTTP.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        COOKIE_TLS
    } else {
        COOKIE
    }
}

/// The `Set-Cookie` value for session `id` (empty with `max_age` 0: the logout).
pub fn set_cookie(tls: bool, id: &str, max_age: u64) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        cookie_name(tls)
    )
}
/// The header every write from the dashboard carries.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// At most this many of each kind are kept (sessions, links, pending logins): making one needs
/// the secret, but memory must not follow even the owner's clicks. The one nearest its end
/// makes room.
pub const KEPT: usize = 64;

/// Makes room for one more entry in `map`: drops the entry whose expiry comes first.
fn make_room<V>(map: &mut HashMap<[u8; 32], V>, expiry: impl Fn(&V) -> Instant) {
    if map.len() < KEPT {
        return;
    }
    if let Some(first) = map.iter().min_by_key(|(_, v)| expiry(v)).map(|(k, _)| *k) {
        map.remove(&first);
    }
}

/// A random token: 32 bytes, unpadded base64url.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

struct Session {
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<[u8; 32], Session>,
    links: HashMap<[u8; 32], Instant>,
    logins: HashMap<[u8; 32], (Attempt, Instant)>,
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.sessions.retain(|_, s| s.expires > now);
        self.links.retain(|_, e| *e > now);
        self.logins.retain(|_, (_, e)| *e > now);
    }
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.sweep(Instant::now());
        g
    }

    /// A new session: (its id for the cookie, its CSRF token).
    pub fn open(&self) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let mut g = self.lock();
        make_room(&mut g.sessions, |s| s.expires);
        g.sessions.insert(
            digest(&id),
            Session {
                csrf: csrf.clone(),
                expires: Instant::now() + SESSION_TTL,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        self.lock()
            .sessions
            .get(&digest(id))
            .map(|s| s.csrf.clone())
    }

    /// Whether `given` is the CSRF token of session `id`.
    pub fn csrf_ok(&self, id: &str, given: &str) -> bool {
        self.csrf(id)
            .is_some_and(|c| constant_time_eq(c.as_bytes(), given.as_bytes()))
    }

    pub fn close(&self, id: &str) {
        self.lock().sessions.remove(&digest(id));
    }

    /// A one-time login link's token.
    pub fn link(&self) -> String {
        let token = random_token();
        let mut g = self.lock();
        make_room(&mut g.links, |e| *e);
        g.links.insert(digest(&token), Instant::now() + LINK_TTL);
        token
    }

    /// Uses up a link token; true when it was live.
    pub fn redeem(&self, token: &str) -> bool {
        self.lock().links.remove(&digest(token)).is_some()
    }

    /// Keeps a login started from the dashboard until its browser comes back.
    pub fn start_login(&self, attempt: Attempt) {
        let key = digest(&attempt.state);
        let mut g = self.lock();
        make_room(&mut g.logins, |(_, e)| *e);
        g.logins.insert(key, (attempt, Instant::now() + OAUTH_TTL));
    }

    /// The login whose state the browser brought back (taken: a state works once).
    pub fn take_login(&self, state: &str) -> Option<Attempt> {
        self.lock().logins.remove(&digest(state)).map(|(a, _)| a)
    }
}

/// The session id in a `Cookie` header, under the name this daemon sets (over TLS only the
/// `__Host-` one counts).
pub fn cookie_of(h: &actix_web::http::header::HeaderMap, tls: bool) -> Option<&str> {
    let name = cookie_name(tls);
    h.get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_once() {
        let s = Sessions::default();
        let t = s.link();
        assert!(!s.redeem("not-a-link"));
        assert!(s.redeem(&t));
        assert!(!s.redeem(&t), "used up");
    }

    #[test]
    fn a_session_knows_its_csrf_token_until_closed() {
        let s = Sessions::default();
        let (id, csrf) = s.open();
        assert!(s.csrf_ok(&id, &csrf));
        assert!(!s.csrf_ok(&id, "guess"));
        assert!(!s.csrf_ok("other", &csrf));
        s.close(&id);
        assert!(!s.csrf_ok(&id, &csrf));
    }

    #[test]
    fn sessions_and_links_are_bounded_and_the_oldest_make_room() {
        let s = Sessions::default();
        let (first, csrf) = s.open();
        let links: Vec<String> = (0..KEPT + 10).map(|_| s.link()).collect();
        for _ in 0..KEPT + 10 {
            s.open();
        }
        let g = s.lock();
        assert_eq!((g.sessions.len(), g.links.len()), (KEPT, KEPT));
        drop(g);
        assert!(!s.csrf_ok(&first, &csrf), "the oldest session made room");
        assert!(!s.redeem(&links[0]), "the oldest link made room");
        assert!(s.redeem(&links[KEPT + 9]), "the newest is kept");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = actix_web::http::header::HeaderMap::new();
        h.insert(
            actix_web::http::header::COOKIE,
            "a=1; ccs_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_of(&h, false), Some("xyz"));
        assert_eq!(
            cookie_of(&h, true),
            None,
            "over TLS only the __Host- cookie counts"
        );
        h.insert(
            actix_web::http::header::COOKIE,
            "ccs_session=plain; __Host-ccs_session=tls".parse().unwrap(),
        );
        assert_eq!(cookie_of(&h, true), Some("tls"));
    }

    #[test]
    fn over_tls_the_cookie_is_secure_and_host_only() {
        let c = set_cookie(true, "id", 60);
        assert!(c.starts_with("__Host-ccs_session=id; Path=/;"), "{c}");
        assert!(c.ends_with("; Secure") && !c.contains("Domain"), "{c}");
        let plain = set_cookie(false, "id", 60);
        assert!(
            plain.starts_with("ccs_session=id;") && !plain.contains("Secure"),
            "{plain}"
        );
    }
}
