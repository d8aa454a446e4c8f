//! What the supervisor shows of itself: the `View` snapshot for status pages and tests, and
//! account addresses for the messages the proxy sends an account directly. Read-only.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::{HopEvent, Supervisor};
use crate::account::AccountActor;
use crate::lifecycle::Health;
use crate::quota::Quota;
use crate::routing::{self, AccountId};

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
    /// `Route` messages handled since start: requests placed by the supervisor itself, not
    /// from the hot path.
    pub routed: u64,
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
            bindings: super::hot::read(&self.hot.affinity)
                .iter()
                .map(|(k, b)| (k.clone(), b.clone()))
                .collect(),
            events: self.events.iter().cloned().collect(),
            routed: self.routed,
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
