//! Who refreshes each token when several daemons share a pool (specs/shared-store.md, "The
//! refresh, across daemons"): the actors' `Coordinator` port over Redis.
//!
//! `token:A` holds the account's newest token and its generation; only a Lua script writes it,
//! and only if the generation is still the one the writer started from, so a daemon whose
//! lease lapsed (stopped, paused) can never overwrite a newer token. A refresh goes out only
//! under `lease:A` (`SET NX PX`, valued `DAEMON:FENCE` with `FENCE` from `INCR fence:A`).

use crate::shared::SharedError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ccs_actors::ports::{self, Claim, Commit, Coordinator, Soon, Ticket};
use ccs_actors::{Secret, Timestamp, Token};

use super::{Entry, Shared};

/// Takes the lease unless a newer token is there or a peer holds it. Answers `peer:GEN`,
/// `held:PTTL` or `mine:FENCE:GEN`.
const CLAIM: &str = r"
local gen = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if gen > tonumber(ARGV[2]) then return 'peer:' .. gen end
local holder = redis.call('GET', KEYS[3])
if holder and string.sub(holder, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then
  return 'held:' .. redis.call('PTTL', KEYS[3])
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], ARGV[1] .. ':' .. fence, 'PX', ARGV[3])
return 'mine:' .. fence .. ':' .. gen
";

/// Writes a token if the generation is still ARGV[9] (`cas`), or whenever its refresh token
/// is new (`new`: a login); a token already there answers its generation. Answers the
/// token's generation, or -1 when fenced. Releases the lease ARGV[10] if still held, and
/// tells the peers.
const WRITE: &str = r"
local gen = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if redis.call('HGET', KEYS[1], 'fingerprint') == ARGV[4] then return gen end
if ARGV[8] == 'cas' and gen ~= tonumber(ARGV[9]) then return -1 end
local new = gen + 1
redis.call('HSET', KEYS[1], 'generation', new, 'access', ARGV[1], 'refresh', ARGV[2],
  'expires_at', ARGV[3], 'fingerprint', ARGV[4], 'by', ARGV[5])
if ARGV[10] ~= '' and redis.call('GET', KEYS[2]) == ARGV[10] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[6], cjson.encode({by = ARGV[5], kind = 'token', account = ARGV[7], generation = new}))
return new
";

/// Drops the lease if this daemon still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// How a token is offered to `token:A`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Only over generation `from` (a refresh's answer).
    Cas { from: u64 },
    /// Over whatever is there unless it is this very token (a login: a new grant).
    New,
}

/// What a daemon starts an account from, given its own sled copy and Redis's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Neither has a token.
    Nothing,
    /// Both hold the same token, of this generation.
    Same(u64),
    /// Redis's is newer (or only Redis has one): adopt it, writing it here first.
    Shared(u64, Token),
    /// This daemon's is newer than generation `over` (or Redis has none, `None`): offer it.
    Local { over: Option<u64> },
}

/// The newest token wins: the same refresh token is the same token; otherwise the one that
/// lapses later was issued later (the authority gives each the same life), so it is the
/// newer. Redis's generation is kept; the local copy carries none.
pub fn choose_newest(local: Option<&Token>, shared: Option<(u64, Token)>) -> Start {
    match (local, shared) {
        (None, None) => Start::Nothing,
        (Some(_), None) => Start::Local { over: None },
        (None, Some((g, t))) => Start::Shared(g, t),
        (Some(l), Some((g, s))) if l.refresh == s.refresh => Start::Same(g),
        (Some(l), Some((g, s))) if l.expires_at > s.expires_at => Start::Local { over: Some(g) },
        (Some(_), Some((g, s))) => Start::Shared(g, s),
    }
}

fn parse_token(fields: &HashMap<String, String>) -> Option<(u64, Token)> {
    let generation = fields.get("generation")?.parse().ok()?;
    let token = Token {
        access: Secret::new(fields.get("access")?.clone()),
        refresh: Secret::new(fields.get("refresh")?.clone()),
        expires_at: Timestamp::from_millis(fields.get("expires_at")?.parse().ok()?),
    };
    Some((generation, token))
}

impl Shared {
    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn entry<T>(&self, account: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        f(book.entry(account.to_string()).or_default())
    }

    /// The generation of the token this daemon's actor holds (0: none known).
    pub fn held(&self, account: &str) -> u64 {
        self.entry(account, |e| e.held)
    }

    /// Notes what Redis holds for `account`.
    fn saw(&self, account: &str, generation: u64, token: &Token) {
        let fp = ports::fingerprint(&token.refresh);
        self.entry(account, |e| {
            if e.latest.as_ref().is_none_or(|(g, _)| *g <= generation) {
                e.latest = Some((generation, fp));
            }
        });
    }

    /// This daemon now holds `token` (written down here). Answers whether it is one Redis
    /// was seen holding (or one waiting to be offered): otherwise it is a new grant (a
    /// login) to offer.
    pub fn now_holds(&self, account: &str, token: &Token) -> bool {
        let fp = ports::fingerprint(&token.refresh);
        self.entry(account, |e| match &e.latest {
            Some((g, f)) if *f == fp => {
                e.held = e.held.max(*g);
                true
            }
            _ => e.pending.as_ref().is_some_and(|(t, _)| t == token),
        })
    }

    /// `token:A` as Redis holds it: (generation, token).
    pub async fn read_token(&self, account: &str) -> Result<Option<(u64, Token)>, SharedError> {
        let key = self.key("token", account);
        let mut c = self.conn()?;
        let fields: HashMap<String, String> = self
            .run(async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        let found = parse_token(&fields);
        if let Some((g, t)) = &found {
            self.saw(account, *g, t);
        }
        Ok(found)
    }

    /// Writes `token` to `token:A` as `mode` allows; `Ok(None)`: fenced (a newer one is there).
    async fn write(
        &self,
        account: &str,
        token: &Token,
        mode: Mode,
        lease: Option<String>,
    ) -> Result<Option<u64>, SharedError> {
        let script = redis::Script::new(WRITE);
        let mut invocation = script.key(self.key("token", account));
        invocation
            .key(self.key("lease", account))
            .arg(token.access.expose())
            .arg(token.refresh.expose())
            .arg(token.expires_at.as_millis())
            .arg(ports::fingerprint(&token.refresh))
            .arg(&self.daemon)
            .arg(self.channel())
            .arg(account);
        match mode {
            Mode::Cas { from } => invocation.arg("cas").arg(from),
            Mode::New => invocation.arg("new").arg(0),
        };
        invocation.arg(lease.unwrap_or_default());
        let mut c = self.conn()?;
        let generation: i64 = self.run(invocation.invoke_async(&mut c)).await?;
        let written = u64::try_from(generation).ok();
        if let Some(g) = written {
            self.saw(account, g, token);
        }
        Ok(written)
    }

    /// Offers a token this daemon holds that Redis may not: a login's (`over: None`), or one
    /// kept while Redis was away or found newer at start (over generation `over`). Answers
    /// its generation, or `None` when Redis holds a newer one. Unreachable: kept to offer
    /// when Redis returns.
    pub async fn offer(
        &self,
        account: &str,
        token: &Token,
        over: Option<u64>,
    ) -> Result<Option<u64>, SharedError> {
        let mode = match over {
            Some(from) => Mode::Cas { from },
            None => Mode::New,
        };
        match self.write(account, token, mode, None).await {
            Ok(Some(g)) => {
                self.entry(account, |e| {
                    e.held = e.held.max(g);
                    // Written: nothing older waits any more (a new grant supersedes it).
                    if over.is_none() || e.pending.as_ref().is_some_and(|(t, _)| t == token) {
                        e.pending = None;
                    }
                });
                Ok(Some(g))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.entry(account, |en| en.pending = Some((token.clone(), over)));
                Err(e)
            }
        }
    }

    async fn claim(&self, account: &str) -> Claim {
        if !self.joined() {
            // Until this daemon has joined, it cannot tell which token is newest: no lease.
            return Claim::Unavailable;
        }
        let script = redis::Script::new(CLAIM);
        let mut invocation = script.key(self.key("token", account));
        invocation
            .key(self.key("fence", account))
            .key(self.key("lease", account))
            .arg(&self.daemon)
            .arg(self.held(account))
            .arg(self.lease_ms());
        let Ok(mut c) = self.conn() else {
            return Claim::Unavailable;
        };
        let answer: String = match self.run(invocation.invoke_async(&mut c)).await {
            Ok(a) => a,
            Err(_) => return Claim::Unavailable,
        };
        let parts: Vec<u64> = answer
            .split(':')
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect();
        match (answer.split(':').next(), parts.as_slice()) {
            (Some("mine"), [fence, from]) => {
                self.entry(account, |e| e.claim = Some((*fence, *from)));
                Claim::Mine(Ticket { fence: *fence })
            }
            (Some("held"), [ms]) => Claim::Elsewhere {
                until: self.clock.now().plus(Duration::from_millis(*ms)),
            },
            (Some("peer"), _) => match self.read_token(account).await {
                Ok(Some((_, token))) => Claim::Peer(token),
                _ => Claim::Unavailable,
            },
            _ => {
                tracing::error!(
                    account,
                    answer,
                    "the shared store answered a refresh claim oddly"
                );
                Claim::Unavailable
            }
        }
    }

    fn take_claim(&self, account: &str, ticket: Ticket) -> Option<(u64, u64)> {
        self.entry(account, |e| match e.claim {
            Some((fence, _)) if fence == ticket.fence => e.claim.take(),
            _ => None,
        })
    }

    fn lease_value(&self, fence: u64) -> String {
        format!("{}:{fence}", self.daemon)
    }

    async fn commit(&self, account: &str, ticket: Ticket, token: &Token) -> Commit {
        let Some((fence, from)) = self.take_claim(account, ticket) else {
            tracing::error!(
                account,
                "a refresh answered without this daemon's claim; keeping its token"
            );
            return Commit::Kept;
        };
        let lease = Some(self.lease_value(fence));
        match self.write(account, token, Mode::Cas { from }, lease).await {
            Ok(Some(_)) => Commit::Kept,
            Ok(None) => match self.read_token(account).await {
                Ok(Some((_, newer))) => Commit::Fenced(newer),
                _ => Commit::Kept,
            },
            Err(e) => {
                tracing::warn!(account, error = %e, "the new token could not reach the shared store: kept here and offered when it returns");
                self.entry(account, |en| en.pending = Some((token.clone(), Some(from))));
                Commit::Kept
            }
        }
    }

    async fn release(&self, account: &str, ticket: Ticket, fatal: bool) -> Option<Token> {
        let (fence, from) = self.take_claim(account, ticket)?;
        let script = redis::Script::new(RELEASE);
        let mut invocation = script.key(self.key("lease", account));
        invocation.arg(self.lease_value(fence));
        let mut c = self.conn().ok()?;
        let _ = self.run(invocation.invoke_async::<i64>(&mut c)).await;
        if !fatal {
            return None;
        }
        // Refused: a peer may have refreshed this grant first (its refresh token rotated away
        // under this daemon's feet). Its newer token saves the account.
        match self.read_token(account).await {
            Ok(Some((g, newer))) if g > from => Some(newer),
            _ => None,
        }
    }

    /// Offers again what could not reach Redis while it was away; answers the accounts whose
    /// token Redis holds newer (a peer's, to adopt).
    pub async fn offer_pending(&self) -> Vec<(String, Token)> {
        let pending: Vec<(String, (Token, Option<u64>))> = {
            let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            book.iter()
                .filter_map(|(a, e)| e.pending.clone().map(|p| (a.clone(), p)))
                .collect()
        };
        let mut newer = Vec::new();
        for (account, (token, over)) in pending {
            if let Ok(None) = self.offer(&account, &token, over).await {
                self.entry(&account, |e| e.pending = None);
                tracing::error!(account, "a token kept while the shared store was away lost to a newer one a peer wrote: adopting the peer's");
                if let Ok(Some((_, t))) = self.read_token(&account).await {
                    newer.push((account, t));
                }
            }
        }
        newer
    }
}

/// The actors' coordinator over the shared store.
pub struct Refreshes(pub Arc<Shared>);

impl Coordinator for Refreshes {
    fn claim(&self, account: &str, _refresh: &Secret) -> Soon<Claim> {
        let (shared, account) = (self.0.clone(), account.to_string());
        Soon::Later(Box::pin(async move { shared.claim(&account).await }))
    }

    fn commit(&self, account: &str, ticket: Ticket, token: &Token) -> Soon<Commit> {
        let (shared, account, token) = (self.0.clone(), account.to_string(), token.clone());
        Soon::Later(Box::pin(async move {
            shared.commit(&account, ticket, &token).await
        }))
    }

    fn release(&self, account: &str, ticket: Ticket, fatal: bool) -> Soon<Option<Token>> {
        let (shared, account) = (self.0.clone(), account.to_string());
        Soon::Later(Box::pin(async move {
            shared.release(&account, ticket, fatal).await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(refresh: &str, expires: u64) -> Token {
        Token {
            access: Secret::new(format!("a-{refresh}")),
            refresh: Secret::new(refresh),
            expires_at: Timestamp::from_secs(expires),
        }
    }

    #[test]
    fn the_newest_token_wins_at_start() {
        assert_eq!(choose_newest(None, None), Start::Nothing);
        assert_eq!(
            choose_newest(Some(&token("r1", 10)), None),
            Start::Local { over: None }
        );
        assert_eq!(
            choose_newest(None, Some((3, token("r1", 10)))),
            Start::Shared(3, token("r1", 10))
        );
        assert_eq!(
            choose_newest(Some(&token("r1", 10)), Some((3, token("r1", 10)))),
            Start::Same(3)
        );
        // Redis lost its newest write (no AOF): this daemon's copy, issued later, wins.
        assert_eq!(
            choose_newest(Some(&token("r2", 20)), Some((3, token("r1", 10)))),
            Start::Local { over: Some(3) }
        );
        // A peer refreshed while this daemon was down: Redis's wins.
        assert_eq!(
            choose_newest(Some(&token("r1", 10)), Some((4, token("r2", 20)))),
            Start::Shared(4, token("r2", 20))
        );
    }
}
