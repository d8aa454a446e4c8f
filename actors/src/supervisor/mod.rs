//! The Supervisor: the registry of account actors, the pools and their drain order, the
//! session-affinity table, and the router of proxied requests.
//!
//! It keeps the health snapshot the account actors publish, so routing never waits on an
//! account's mailbox. Must not: hold tokens (leases come from the account actors), or move a
//! session whose account can still serve it.

mod handle;
mod hot;
mod route;
mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;

use crate::account::{AccountActor, Deps, HealthChanged, Initial, Lease, StopAccount};
use crate::clock::Timestamp;
use crate::lifecycle::{Health, Phase};
use crate::quota::Quota;
use crate::routing::{self, AccountId, Candidate};

/// The pool every account joins unless told otherwise.
pub const DEFAULT_POOL: &str = "claude";
/// How many hop events are kept for the management API.
const EVENTS_KEPT: usize = 1000;
/// A binding's last use is written down at most this often while it is merely kept.
const TOUCH_PERSIST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The grain of a kept binding's last use: a request placed from the hot path tells the
/// supervisor (`Touch`) only when the last use it knows is at least this old, so a busy
/// conversation costs one message every few seconds, not one per request. Idle expiry (R6) may
/// come this much early.
pub const TOUCH_GRAIN: std::time::Duration = std::time::Duration::from_secs(5);

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
    pub const ALL: [HopReason; 6] = [
        HopReason::Limited,
        HopReason::Dead,
        HopReason::Paused,
        HopReason::NoToken,
        HopReason::Failed,
        HopReason::Removed,
    ];

    /// The reason `as_str` names.
    pub fn parse(s: &str) -> Option<HopReason> {
        HopReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

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

#[derive(Clone)]
struct Member {
    addr: Addr<AccountActor>,
    health: Health,
    quota: Quota,
    /// Logged in and refreshed, but takes no traffic.
    paused: bool,
    /// The token the account would lease, as it last published it.
    lease: Option<Lease>,
}

impl Member {
    fn routable(&self, now: Timestamp) -> bool {
        let paused = self.paused && !crate::planted::on(crate::planted::Bug::IgnorePaused);
        !paused && self.health.routable(now)
    }

    /// The lease the account would hand out at `now`, as it last published it; `None` when the
    /// machine's health says it may not hold, or it has none: then its own mailbox decides.
    fn ready_lease(&self, now: Timestamp) -> Option<Lease> {
        self.lease
            .clone()
            .filter(|_| self.health.published_lease_holds(now))
    }
}

pub struct Supervisor {
    deps: Deps,
    policy: routing::Policy,
    accounts: HashMap<AccountId, Member>,
    /// Pool name → members in drain order.
    pools: BTreeMap<String, Vec<AccountId>>,
    /// What requests read without a message: copies of the members and pools, written here
    /// after each change, and the affinity table itself (this actor its only writer).
    hot: Arc<hot::Hot>,
    events: VecDeque<HopEvent>,
    /// Accounts benched on a guess that were given one probe request in their current spell
    /// of being limited (specs/routing.md R10); cleared when the account is free again.
    probed: std::collections::HashSet<AccountId>,
    on_hop: Option<HopWatcher>,
    /// `Route` messages handled (the hot path sends none).
    routed: u64,
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
            hot: Arc::default(),
            events: VecDeque::new(),
            probed: Default::default(),
            on_hop: None,
            routed: 0,
        }
    }

    fn candidates(&self, pool: &str, family: Option<&str>, now: Timestamp) -> Vec<Candidate> {
        let Some(order) = self.pools.get(pool) else {
            return Vec::new();
        };
        let mut candidates: Vec<Candidate> = order
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
            .collect();
        // Planted at routing's edge: the pool handed over in reverse drain order.
        if crate::planted::on(crate::planted::Bug::ReverseDrainOrder) {
            candidates.reverse();
        }
        candidates
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

    /// Copies a member (or its absence) to the hot path.
    fn publish_member(&self, id: &AccountId) {
        let mut hot = hot::write(&self.hot.members);
        match self.accounts.get(id) {
            Some(m) => hot.insert(id.clone(), m.clone()),
            None => hot.remove(id),
        };
    }

    /// Copies the pools to the hot path.
    fn publish_pools(&self) {
        *hot::write(&self.hot.pools) = self.pools.clone();
    }

    fn persist_binding(&self, session: &str) {
        let now = self.deps.clock.now();
        let bound = hot::read(&self.hot.affinity)
            .get(session, now, self.policy.affinity_ttl)
            .cloned();
        if let Some(b) = bound {
            if let Err(e) = self.deps.store.save_binding(session, &b) {
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
            m.lease = msg.lease;
            let now = self.deps.clock.now();
            if m.quota.limited_until(now, None).is_none() {
                self.probed.remove(&msg.account);
            }
            self.publish_member(&msg.account);
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
        let actor = AccountActor::new(
            msg.id.clone(),
            msg.initial,
            msg.quota.clone(),
            self.deps.clone(),
            ctx.address().recipient(),
        );
        // Until it publishes, the account is what its machine says before anything is loaded.
        let health = actor.health();
        let addr = actor.start();
        self.accounts.insert(
            msg.id.clone(),
            Member {
                addr,
                health,
                quota: msg.quota,
                paused: msg.paused,
                lease: None,
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
        self.publish_member(&msg.id);
        self.publish_pools();
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

/// Every account's quota written down as it stands (see `account::SaveQuota`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveQuotas;

impl Handler<SaveQuotas> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: SaveQuotas, _ctx: &mut Context<Self>) -> Self::Result {
        let pending: Vec<_> = self
            .accounts
            .values()
            .map(|m| m.addr.send(crate::account::SaveQuota))
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
        self.publish_member(&msg.0);
        self.publish_pools();
        let gone = hot::write(&self.hot.affinity).forget_account(&msg.0);
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
                self.publish_member(&msg.id);
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
        self.publish_pools();
    }
}

/// Deletes a named pool (never the default one); false when there was none.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct DeletePool(pub String);

impl Handler<DeletePool> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: DeletePool, _ctx: &mut Context<Self>) -> bool {
        let deleted = msg.0 != DEFAULT_POOL && self.pools.remove(&msg.0).is_some();
        self.publish_pools();
        deleted
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
        hot::write(&self.hot.affinity).restore(msg.session, msg.binding);
    }
}

/// Restores hop events kept across a restart (at start, before any new one).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestoreEvents(pub Vec<HopEvent>);

impl Handler<RestoreEvents> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: RestoreEvents, _ctx: &mut Context<Self>) {
        for e in msg.0.into_iter().rev() {
            self.events.push_front(e);
        }
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }
}

/// Someone to tell of every hop as it is made (the daemon's live feed and metrics). Called on
/// the supervisor's thread: it must not block.
pub type HopWatcher = std::sync::Arc<dyn Fn(&HopEvent) + Send + Sync>;

/// Sets the hop watcher.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchHops(pub HopWatcher);

impl Handler<WatchHops> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WatchHops, _ctx: &mut Context<Self>) {
        self.on_hop = Some(msg.0);
    }
}

pub use handle::{Placement, Request, RouteError, SupervisorHandle};
pub use route::{ExpireBindings, Peek, PeerBound, Route, Routed};
pub use view::{AccountAddr, MemberView, SupervisorView, View};
