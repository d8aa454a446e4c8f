//! The Supervisor: the registry of account actors, the pools and their drain order, the
//! session-affinity table, and the router of proxied requests.
//!
//! It keeps the health snapshot the account actors publish, so routing never waits on an
//! account's mailbox. Must not: hold tokens (leases come from the account actors), or move a
//! session whose account can still serve it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use actix::prelude::*;

use crate::account::{
    AccountActor, Deps, GetLease, HealthChanged, Initial, Lease, LeaseError, StopAccount,
};
use crate::clock::Timestamp;
use crate::lifecycle::{Health, Phase};
use crate::quota::Quota;
use crate::routing::{self, AccountId, Affinity, Candidate, Decision};

/// The pool every account joins unless told otherwise.
pub const DEFAULT_POOL: &str = "claude";
/// How many hop events are kept for the management API.
const EVENTS_KEPT: usize = 1000;
/// A binding's last use is written down at most this often while it is merely kept.
const TOUCH_PERSIST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A session moved from one account to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopEvent {
    pub at: Timestamp,
    pub session: String,
    pub from: AccountId,
    pub to: AccountId,
    pub reason: HopReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopReason {
    Limited,
    Dead,
    Paused,
    /// The account has no usable token at the moment (refresh pending or failing).
    NoToken,
    /// The account failed this request before any byte reached the client.
    Failed,
    /// The account left the pool or was removed.
    Removed,
}

impl HopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HopReason::Limited => "limited",
            HopReason::Dead => "dead",
            HopReason::Paused => "paused",
            HopReason::NoToken => "no_token",
            HopReason::Failed => "failed",
            HopReason::Removed => "removed",
        }
    }
}

struct Member {
    addr: Addr<AccountActor>,
    health: Health,
    quota: Quota,
    /// Logged in and refreshed, but takes no traffic.
    paused: bool,
}

impl Member {
    fn routable(&self, now: Timestamp) -> bool {
        let paused = self.paused && !crate::planted::on(crate::planted::Bug::IgnorePaused);
        !paused && (self.health.usable(now) || self.health.phase == Phase::Refreshing)
    }
}

pub struct Supervisor {
    deps: Deps,
    policy: routing::Policy,
    accounts: HashMap<AccountId, Member>,
    /// Pool name → members in drain order.
    pools: BTreeMap<String, Vec<AccountId>>,
    affinity: Affinity,
    events: VecDeque<HopEvent>,
}

impl Supervisor {
    pub fn new(deps: Deps, policy: routing::Policy) -> Self {
        let mut pools = BTreeMap::new();
        pools.insert(DEFAULT_POOL.to_string(), Vec::new());
        Supervisor {
            deps,
            policy,
            accounts: HashMap::new(),
            pools,
            affinity: Affinity::default(),
            events: VecDeque::new(),
        }
    }

    fn candidates(&self, pool: &str, family: Option<&str>, now: Timestamp) -> Vec<Candidate> {
        let Some(order) = self.pools.get(pool) else {
            return Vec::new();
        };
        order
            .iter()
            .filter_map(|id| {
                let m = self.accounts.get(id)?;
                Some(Candidate {
                    id: id.clone(),
                    routable: m.routable(now),
                    limited_until: m.quota.limited_until(now, family),
                    utilization_5h: m.quota.five_hour.utilization_at(now),
                })
            })
            .collect()
    }

    fn hop_reason(
        &self,
        from: &AccountId,
        exclude: &[AccountId],
        family: Option<&str>,
        now: Timestamp,
    ) -> HopReason {
        let Some(m) = self.accounts.get(from) else {
            return HopReason::Removed;
        };
        if m.health.phase == Phase::Dead {
            HopReason::Dead
        } else if m.paused {
            HopReason::Paused
        } else if m.quota.limited_until(now, family).is_some() {
            HopReason::Limited
        } else if exclude.contains(from) {
            HopReason::Failed
        } else if !m.routable(now) {
            HopReason::NoToken
        } else {
            HopReason::Removed
        }
    }

    fn persist_binding(&self, session: &str) {
        let now = self.deps.clock.now();
        if let Some(b) = self.affinity.get(session, now, self.policy.affinity_ttl) {
            if let Err(e) = self.deps.store.save_binding(session, b) {
                tracing::warn!(error = %e, "could not save a session binding");
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<HealthChanged> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: HealthChanged, _ctx: &mut Context<Self>) {
        if let Some(m) = self.accounts.get_mut(&msg.account) {
            m.health = msg.health;
            m.quota = msg.quota;
        }
    }
}

/// Registers an account and starts its actor. Replaces an account with the same id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddAccount {
    pub id: AccountId,
    pub initial: Initial,
    pub quota: Quota,
    pub paused: bool,
    /// Pools to join (at the end of their drain order); the default pool always.
    pub pools: Vec<String>,
}

impl Handler<AddAccount> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: AddAccount, ctx: &mut Context<Self>) {
        if let Some(old) = self.accounts.remove(&msg.id) {
            old.addr.do_send(StopAccount);
        }
        let health = Health {
            phase: Phase::Expiring,
            expires_at: Timestamp::EPOCH,
            retry_at: None,
            refused_until: None,
        };
        let actor = AccountActor::new(
            msg.id.clone(),
            msg.initial,
            msg.quota.clone(),
            self.deps.clone(),
            ctx.address().recipient(),
        );
        let addr = actor.start();
        self.accounts.insert(
            msg.id.clone(),
            Member {
                addr,
                health,
                quota: msg.quota,
                paused: msg.paused,
            },
        );
        let mut pools = msg.pools;
        pools.push(DEFAULT_POOL.to_string());
        for p in pools {
            let order = self.pools.entry(p).or_default();
            if !order.contains(&msg.id) {
                order.push(msg.id.clone());
            }
        }
    }
}

/// Answers once every account has settled (see `account::Settle`); the caller bounds the wait.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettleAll;

impl Handler<SettleAll> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: SettleAll, _ctx: &mut Context<Self>) -> Self::Result {
        let pending: Vec<_> = self
            .accounts
            .values()
            .map(|m| m.addr.send(crate::account::Settle))
            .collect();
        Box::pin(async move {
            for p in pending {
                let _ = p.await;
            }
        })
    }
}

/// Stops the supervisor (the daemon's end, or a simulated crash).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

impl Handler<StopSupervisor> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: StopSupervisor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Removes an account: stops its actor, drops it from every pool and its bindings.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RemoveAccount(pub AccountId);

impl Handler<RemoveAccount> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: RemoveAccount, _ctx: &mut Context<Self>) -> bool {
        let Some(m) = self.accounts.remove(&msg.0) else {
            return false;
        };
        m.addr.do_send(StopAccount);
        for order in self.pools.values_mut() {
            order.retain(|id| id != &msg.0);
        }
        let gone = self.affinity.forget_account(&msg.0);
        if let Err(e) = self.deps.store.remove_bindings(&gone) {
            tracing::warn!(error = %e, "could not remove bindings of a removed account");
        }
        true
    }
}

/// Pauses or resumes an account.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct SetPaused {
    pub id: AccountId,
    pub paused: bool,
}

impl Handler<SetPaused> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: SetPaused, _ctx: &mut Context<Self>) -> bool {
        match self.accounts.get_mut(&msg.id) {
            Some(m) => {
                m.paused = msg.paused;
                true
            }
            None => false,
        }
    }
}

/// Sets a pool's members and drain order (creating the pool). Unknown accounts are skipped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetPool {
    pub name: String,
    pub members: Vec<AccountId>,
}

impl Handler<SetPool> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SetPool, _ctx: &mut Context<Self>) {
        let members: Vec<AccountId> = msg
            .members
            .into_iter()
            .filter(|id| self.accounts.contains_key(id))
            .collect();
        self.pools.insert(msg.name, members);
    }
}

/// Deletes a named pool (never the default one); false when there was none.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct DeletePool(pub String);

impl Handler<DeletePool> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: DeletePool, _ctx: &mut Context<Self>) -> bool {
        msg.0 != DEFAULT_POOL && self.pools.remove(&msg.0).is_some()
    }
}

/// Restores a persisted session binding (at start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestoreBinding {
    pub session: String,
    pub binding: routing::Binding,
}

impl Handler<RestoreBinding> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: RestoreBinding, _ctx: &mut Context<Self>) {
        self.affinity.restore(msg.session, msg.binding);
    }
}

/// One routing decision: which account, and its actor to lease from.
#[derive(Message)]
#[rtype(result = "Routed")]
pub struct Route {
    pub pool: String,
    pub session: Option<String>,
    pub family: Option<String>,
    /// Accounts that already failed this request.
    pub exclude: Vec<AccountId>,
}

pub struct Routed {
    pub decision: Decision,
    pub addr: Option<Addr<AccountActor>>,
    /// With `AllLimited`: the pool's accounts that were passed over for want of a usable token
    /// (not paused, not dead, not limited): the refusal is then not about quota.
    pub tokenless: Vec<(AccountId, Addr<AccountActor>)>,
}

impl Handler<Route> for Supervisor {
    type Result = MessageResult<Route>;

    fn handle(&mut self, msg: Route, _ctx: &mut Context<Self>) -> Self::Result {
        let now = self.deps.clock.now();
        let family = msg.family.as_deref();
        let pool = self.candidates(&msg.pool, family, now);
        let session = msg.session.as_deref();
        let bound = session
            .and_then(|s| self.affinity.get(s, now, self.policy.affinity_ttl))
            .map(|b| (b.account.clone(), b.last_used));
        let decision = routing::route(
            &pool,
            session,
            bound.as_ref().map(|(a, _)| a),
            &msg.exclude,
            &self.policy,
        );
        if let Some(s) = session {
            match &decision {
                Decision::Kept(a) => {
                    self.affinity.bind(s, a.clone(), now);
                    let last = bound.map(|(_, t)| t).unwrap_or(now);
                    if now.since(last) >= TOUCH_PERSIST_EVERY {
                        self.persist_binding(s);
                    }
                }
                Decision::Bound(a) => {
                    self.affinity.bind(s, a.clone(), now);
                    self.persist_binding(s);
                }
                Decision::Moved { from, to } => {
                    let reason = self.hop_reason(from, &msg.exclude, family, now);
                    tracing::info!(session = s, from = %from, to = %to, reason = reason.as_str(), "session moved");
                    self.events.push_back(HopEvent {
                        at: now,
                        session: s.to_string(),
                        from: from.clone(),
                        to: to.clone(),
                        reason,
                    });
                    while self.events.len() > EVENTS_KEPT {
                        self.events.pop_front();
                    }
                    self.affinity.bind(s, to.clone(), now);
                    self.persist_binding(s);
                }
                Decision::Unbound(_) | Decision::AllLimited { .. } => {}
            }
        }
        let addr = decision
            .account()
            .and_then(|a| self.accounts.get(a))
            .map(|m| m.addr.clone());
        let tokenless = match decision {
            Decision::AllLimited { .. } => pool
                .iter()
                .filter(|c| !c.routable && !msg.exclude.contains(&c.id))
                .filter_map(|c| {
                    let m = self.accounts.get(&c.id)?;
                    (!m.paused && m.health.phase != Phase::Dead)
                        .then(|| (c.id.clone(), m.addr.clone()))
                })
                .collect(),
            _ => Vec::new(),
        };
        MessageResult(Routed {
            decision,
            addr,
            tokenless,
        })
    }
}

/// Which account a new session of `pool` would get now, without binding anything.
#[derive(Message)]
#[rtype(result = "Option<AccountId>")]
pub struct Peek {
    pub pool: String,
    pub family: Option<String>,
}

impl Handler<Peek> for Supervisor {
    type Result = Option<AccountId>;

    fn handle(&mut self, msg: Peek, _ctx: &mut Context<Self>) -> Self::Result {
        let now = self.deps.clock.now();
        let pool = self.candidates(&msg.pool, msg.family.as_deref(), now);
        routing::route(&pool, Some(""), None, &[], &self.policy)
            .account()
            .cloned()
    }
}

/// Drops idle bindings; the daemon sends it periodically.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ExpireBindings;

impl Handler<ExpireBindings> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _msg: ExpireBindings, _ctx: &mut Context<Self>) -> usize {
        let now = self.deps.clock.now();
        let gone = self.affinity.expire(now, self.policy.affinity_ttl);
        if let Err(e) = self.deps.store.remove_bindings(&gone) {
            tracing::warn!(error = %e, "could not remove expired bindings");
        }
        gone.len()
    }
}

/// One account as the supervisor sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberView {
    pub id: AccountId,
    pub health: Health,
    pub quota: Quota,
    pub paused: bool,
}

/// Everything the supervisor knows, for status views and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct SupervisorView {
    pub accounts: Vec<MemberView>,
    pub pools: BTreeMap<String, Vec<AccountId>>,
    pub bindings: BTreeMap<String, routing::Binding>,
    pub events: Vec<HopEvent>,
}

#[derive(Message)]
#[rtype(result = "SupervisorView")]
pub struct View;

impl Handler<View> for Supervisor {
    type Result = MessageResult<View>;

    fn handle(&mut self, _msg: View, _ctx: &mut Context<Self>) -> Self::Result {
        let mut accounts: Vec<MemberView> = self
            .accounts
            .iter()
            .map(|(id, m)| MemberView {
                id: id.clone(),
                health: m.health,
                quota: m.quota.clone(),
                paused: m.paused,
            })
            .collect();
        accounts.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(SupervisorView {
            accounts,
            pools: self.pools.clone(),
            bindings: self
                .affinity
                .iter()
                .map(|(k, b)| (k.clone(), b.clone()))
                .collect(),
            events: self.events.iter().cloned().collect(),
        })
    }
}

/// The address of an account actor, for messages the proxy sends it directly.
#[derive(Message)]
#[rtype(result = "Option<Addr<AccountActor>>")]
pub struct AccountAddr(pub AccountId);

impl Handler<AccountAddr> for Supervisor {
    type Result = Option<Addr<AccountActor>>;

    fn handle(&mut self, msg: AccountAddr, _ctx: &mut Context<Self>) -> Self::Result {
        self.accounts.get(&msg.0).map(|m| m.addr.clone())
    }
}

/// A request the router could place.
#[derive(Clone, Debug)]
pub struct Placement {
    pub account: AccountId,
    pub lease: Lease,
    pub decision: Decision,
    pub addr: Addr<AccountActor>,
    /// Accounts routing chose first whose lease failed (and why), in the order tried: the
    /// request was placed elsewhere because of them, so the caller must know.
    pub skipped: Vec<(AccountId, LeaseError)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Routing found no account it may use. `skipped`: accounts it chose whose lease failed.
    #[error("every account in the pool is limited, dead or paused")]
    AllLimited {
        earliest_reset: Option<Timestamp>,
        skipped: Vec<(AccountId, LeaseError)>,
    },
    #[error("the supervisor stopped")]
    Stopped,
}

/// A typed handle over the supervisor's address.
#[derive(Clone)]
pub struct SupervisorHandle {
    addr: Addr<Supervisor>,
}

impl SupervisorHandle {
    pub fn start(deps: Deps, policy: routing::Policy) -> Self {
        SupervisorHandle {
            addr: Supervisor::new(deps, policy).start(),
        }
    }

    pub fn addr(&self) -> &Addr<Supervisor> {
        &self.addr
    }

    /// Routes a request and leases a token from the chosen account; an account that cannot
    /// lease (dead, or no usable token) is excluded and the request routed again.
    pub async fn place(
        &self,
        pool: &str,
        session: Option<&str>,
        family: Option<&str>,
        mut exclude: Vec<AccountId>,
    ) -> Result<Placement, RouteError> {
        let mut skipped = Vec::new();
        let mut demanded = false;
        loop {
            let routed = self
                .addr
                .send(Route {
                    pool: pool.to_string(),
                    session: session.map(str::to_string),
                    family: family.map(str::to_string),
                    exclude: exclude.clone(),
                })
                .await
                .map_err(|_| RouteError::Stopped)?;
            let (account, addr) = match (routed.decision.account(), routed.addr) {
                (Some(a), Some(addr)) => (a.clone(), addr),
                _ => {
                    // Nobody can serve, but some accounts only lack a token: ask them to retry
                    // their refresh now (bounded by the machine); if one starts, route again
                    // once and wait for it rather than refuse the request.
                    if !demanded && !routed.tokenless.is_empty() {
                        demanded = true;
                        let mut started = false;
                        for (_, addr) in &routed.tokenless {
                            started |= addr.send(crate::account::Demand).await.unwrap_or(false);
                        }
                        if started {
                            continue;
                        }
                    }
                    skipped.extend(
                        routed
                            .tokenless
                            .into_iter()
                            .map(|(a, _)| (a, LeaseError::Unavailable)),
                    );
                    let earliest_reset = match routed.decision {
                        Decision::AllLimited { earliest_reset } => earliest_reset,
                        _ => None,
                    };
                    return Err(RouteError::AllLimited {
                        earliest_reset,
                        skipped,
                    });
                }
            };
            match addr.send(GetLease).await {
                Ok(Ok(lease)) => {
                    return Ok(Placement {
                        account,
                        lease,
                        decision: routed.decision,
                        addr,
                        skipped,
                    })
                }
                Ok(Err(e)) => {
                    skipped.push((account.clone(), e));
                    exclude.push(account);
                }
                Err(_) => {
                    skipped.push((account.clone(), LeaseError::Stopped));
                    exclude.push(account);
                }
            }
        }
    }

    pub async fn add(&self, msg: AddAccount) -> Result<(), RouteError> {
        self.addr.send(msg).await.map_err(|_| RouteError::Stopped)
    }

    /// Waits until no account has a refresh call out or a token unwritten.
    pub async fn settle(&self) {
        let _ = self.addr.send(SettleAll).await;
    }

    pub async fn view(&self) -> Result<SupervisorView, RouteError> {
        self.addr.send(View).await.map_err(|_| RouteError::Stopped)
    }

    pub async fn account(&self, id: &AccountId) -> Option<Addr<AccountActor>> {
        self.addr.send(AccountAddr(id.clone())).await.ok().flatten()
    }
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SupervisorHandle")
    }
}
