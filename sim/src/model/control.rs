//! Driving and reading the model from tests, the harness and `/sim/*`: users, budgets, faults,
//! revocation, counters, and the authority's record of every grant's tokens (lineage, replays)
//! that crash tests classify losses with.

use super::*;

impl SimModel {
    // ---- control --------------------------------------------------------------------------

    pub fn add_user(&self, user: User) {
        self.lock().add_user(user);
    }

    /// Sets a user's budgets; `None` keeps one. False when there is no such user.
    /// The account is used somewhere else (claude.ai, another machine): `units` of both windows
    /// are spent without passing through ccs. False for an unknown account.
    pub fn use_outside(&self, email: &str, units: u64) -> bool {
        let now = self.now();
        let mut inner = self.lock();
        let Some(i) = inner.user(email) else {
            return false;
        };
        let u = &mut inner.users[i];
        u.five.roll(now);
        u.seven.roll(now);
        u.five.consume(units, now);
        u.seven.consume(units, now);
        true
    }

    pub fn set_budget(&self, email: &str, five_hour: Option<u64>, seven_day: Option<u64>) -> bool {
        let mut inner = self.lock();
        let Some(i) = inner.user(email) else {
            return false;
        };
        let u = &mut inner.users[i];
        if let Some(b) = five_hour {
            u.five.budget = b;
            u.spec.five_hour = b;
        }
        if let Some(b) = seven_day {
            u.seven.budget = b;
            u.spec.seven_day = b;
        }
        true
    }

    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.faults.push(ActiveFault {
            id,
            remaining: spec.count,
            spec,
        });
        id
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The faults still active, with their ids.
    pub fn faults(&self) -> Vec<(u64, FaultSpec, Option<u32>)> {
        self.lock()
            .faults
            .iter()
            .map(|f| (f.id, f.spec.clone(), f.remaining))
            .collect()
    }

    /// Revokes every grant of `email`: its access tokens stop working (401) and its refresh
    /// tokens get `invalid_grant`. False when there is no such user.
    pub fn revoke(&self, email: &str) -> bool {
        let mut inner = self.lock();
        if inner.user(email).is_none() {
            return false;
        }
        let gone: Vec<u64> = inner
            .grants
            .iter()
            .filter(|(_, g)| g.email.eq_ignore_ascii_case(email))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(g) = inner.grants.remove(&id) {
                inner.refresh.remove(&g.refresh_token);
            }
        }
        inner
            .access
            .retain(|_, a| !a.email.eq_ignore_ascii_case(email));
        true
    }

    /// Queues who approves (or denies) the next authorization without a `login_hint`.
    pub fn next_login(&self, email: &str, deny: bool) -> bool {
        let mut inner = self.lock();
        if inner.user(email).is_none() {
            return false;
        }
        inner.next_login.push_back(NextLogin {
            email: email.to_string(),
            deny,
        });
        true
    }

    /// Counters per account, by e-mail.
    pub fn counters(&self) -> Vec<(String, Counters)> {
        self.lock()
            .users
            .iter()
            .map(|u| (u.spec.email.clone(), u.counters.clone()))
            .collect()
    }

    /// Whether this access token has lapsed at `now` (`None`: the authority never issued it or
    /// revoked it).
    pub fn access_token_lapsed(&self, access: &str) -> Option<bool> {
        let now = self.now();
        self.lock().access.get(access).map(|a| now >= a.expires_at)
    }

    /// Whether the account still has a live grant at the authority.
    pub fn grant_alive(&self, email: &str) -> bool {
        self.lock()
            .grants
            .values()
            .any(|g| g.email.eq_ignore_ascii_case(email))
    }

    /// The account's windows at the authority now: (used, budget, reset) for 5 h and 7 d.
    pub fn windows(&self, email: &str) -> Option<[(u64, u64, Timestamp); 2]> {
        let now = self.now();
        let mut inner = self.lock();
        let i = inner.user(email)?;
        let u = &mut inner.users[i];
        u.five.roll(now);
        u.seven.roll(now);
        Some([
            (u.five.used, u.five.budget, u.five.reset_at(now)),
            (u.seven.used, u.seven.budget, u.seven.reset_at(now)),
        ])
    }

    /// Counts a stream the client left before its end.
    pub fn stream_abandoned(&self, email: &str) {
        let mut inner = self.lock();
        if let Some(i) = inner.user(email) {
            inner.users[i].counters.streams_abandoned += 1;
        }
    }

    /// The newest grant of `email`: how many generations it issued, and the newest one used.
    pub fn lineage(&self, email: &str) -> Option<Lineage> {
        let inner = self.lock();
        inner
            .grants
            .iter()
            .filter(|(_, g)| g.email.eq_ignore_ascii_case(email))
            .max_by_key(|(id, _)| **id)
            .map(|(_, g)| Lineage {
                issued: g.issued,
                used: g.used,
            })
    }

    /// Every replayed refresh so far, in order.
    pub fn replays(&self) -> Vec<Replay> {
        self.lock().replays.clone()
    }

    /// The generation of a refresh token this authority issued (current or rotated away).
    pub fn generation_of(&self, refresh_token: &str) -> Option<u64> {
        self.lock().lineage.get(refresh_token).map(|(_, g)| *g)
    }

    /// Whether the authority considers this refresh token current (for simulations).
    pub fn refresh_token_is_current(&self, refresh_token: &str) -> bool {
        self.lock().refresh.contains_key(refresh_token)
    }

    /// The whole state for `GET /sim/state`.
    pub fn state(&self) -> Value {
        let now = self.now();
        let mut inner = self.lock();
        for u in inner.users.iter_mut() {
            u.five.roll(now);
            u.seven.roll(now);
        }
        let users: Vec<Value> = inner
            .users
            .iter()
            .map(|u| {
                let w = |w: &Window| json!({"budget": w.budget, "used": w.used, "resets_at": w.started.map(|_| w.reset_at(now).as_secs())});
                json!({
                    "email": u.spec.email,
                    "plan": u.spec.plan,
                    "five_hour": w(&u.five),
                    "seven_day": w(&u.seven),
                    "counters": u.counters,
                    "live_grants": inner.grants.values().filter(|g| g.email == u.spec.email).count(),
                })
            })
            .collect();
        let faults: Vec<Value> = inner
            .faults
            .iter()
            .map(|f| json!({"id": f.id, "kind": format!("{:?}", f.spec.kind), "account": f.spec.account, "remaining": f.remaining}))
            .collect();
        json!({"now": now.as_secs(), "users": users, "faults": faults})
    }
}
