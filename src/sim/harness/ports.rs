//! The two ports the simulation plugs into the real code: a `Refresher` and an `Upstream` over
//! the simulator's model. Both also record, for the checks, what the authority really did
//! (refresh failures, what each send was answered), so an invariant can judge the daemon
//! against the authority rather than against the daemon's own view.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs_actors::lifecycle::Failure;
use ccs_actors::ports::{BoxFuture, Refresher};
use ccs_actors::routing::AccountId;
use ccs_actors::{Clock, ManualClock, Secret, Timestamp, Token};
use serde_json::json;

use super::checks::{Checks, Delivered};
use super::store::lock;
use super::CLIENT_ID;
use crate::proxy::drive::{Answer, SendError, Upstream};
use crate::sim::model::{Admission, SimModel, OAUTH_BETA};

/// The refresher over the simulator's model: the same JSON grant, classified like the real one.
pub(crate) struct ModelRefresher {
    pub model: Arc<SimModel>,
    pub clock: ManualClock,
    /// Refresh calls out per account (I3).
    pub in_flight: Arc<Mutex<HashMap<String, u32>>>,
    /// Delays to apply before the next refresh of an account reaches the authority.
    pub slow: Arc<Mutex<HashMap<String, u64>>>,
    /// When each account's last refresh failed, as the authority (or the transport) answered:
    /// the evidence that lets a request leave an account for "no token".
    pub failed_at: Arc<Mutex<HashMap<String, Timestamp>>>,
    pub violations: Arc<Mutex<Vec<String>>>,
}

impl ModelRefresher {
    pub(crate) fn new(model: Arc<SimModel>, clock: ManualClock) -> ModelRefresher {
        ModelRefresher {
            model,
            clock,
            in_flight: Arc::default(),
            slow: Arc::default(),
            failed_at: Arc::default(),
            violations: Arc::default(),
        }
    }
}

impl Refresher for ModelRefresher {
    fn refresh(&self, account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>> {
        let (model, clock) = (self.model.clone(), self.clock.clone());
        let (in_flight, violations) = (self.in_flight.clone(), self.violations.clone());
        let failed_at = self.failed_at.clone();
        let delay = lock(&self.slow).remove(account);
        let account = account.to_string();
        let rt = refresh_token.clone();
        {
            let mut f = lock(&in_flight);
            let n = f.entry(account.clone()).or_default();
            *n += 1;
            if *n > 1 {
                lock(&violations).push(format!(
                    "I3: two refresh calls in flight for {account} at {:?}",
                    clock.now()
                ));
            }
        }
        // The call is out until its future completes or is dropped (a crash cancels it).
        let guard_account = account.clone();
        let guard = InFlight {
            map: in_flight,
            account,
        };
        Box::pin(async move {
            if let Some(secs) = delay {
                let at = clock.now().plus(Duration::from_secs(secs));
                clock.sleep_until(at).await;
            }
            let out = model.token(&json!({"grant_type": "refresh_token", "refresh_token": rt.expose(), "client_id": CLIENT_ID}));
            drop(guard);
            let result = match out.result {
                Ok(v) => serde_json::from_value::<crate::oauth::TokenResponse>(v)
                    .ok()
                    .and_then(|t| t.token(clock.now(), Some(&rt)))
                    .ok_or(Failure::Transient { retry_after: None }),
                Err(e) => Err(crate::oauth::classify(e.status, &e.body.to_string(), None)),
            };
            if result.is_err() {
                lock(&failed_at).insert(guard_account, clock.now());
            }
            result
        })
    }
}

/// One refresh call out; counted down when it completes or is cancelled.
struct InFlight {
    map: Arc<Mutex<HashMap<String, u32>>>,
    account: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.map).get_mut(&self.account) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A request body of 4,000 bytes with no history.
static PLAIN_BODY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut b = br#"{"model":"claude-sonnet-4-5","messages":[],"pad":""#.to_vec();
    b.resize(3_998, b'x');
    b.extend_from_slice(b"\"}");
    b
});

/// What the simulated client got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Body {
    Complete,
    BrokenMidStream,
    Error,
}

pub(super) struct ModelUpstream {
    pub model: Arc<SimModel>,
    pub checks: Rc<RefCell<Checks>>,
}

impl Upstream for ModelUpstream {
    type Body = Body;

    async fn send(&self, account: &AccountId, access: &Secret) -> Result<Answer<Body>, SendError> {
        self.checks
            .borrow_mut()
            .on_send(account, &self.model, access);
        let admission =
            self.model
                .admit(Some(access.expose()), Some(OAUTH_BETA), &PLAIN_BODY, false);
        let delivered = match &admission {
            Admission::Serve(_) => Delivered::Served,
            Admission::Reject { error, .. }
                if error.status == 429
                    && error.headers.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case("anthropic-ratelimit-unified-status")
                            && v == "rejected"
                    }) =>
            {
                Delivered::WindowRejected
            }
            Admission::Reject { error, .. } => Delivered::Status(error.status),
            Admission::CloseBeforeHeaders { .. } => Delivered::Reset,
        };
        self.checks.borrow_mut().on_delivered(account, delivered);
        match admission {
            Admission::Serve(s) => Ok(Answer {
                status: 200,
                headers: s.headers.clone(),
                body: if s.close_after.is_some() {
                    Body::BrokenMidStream
                } else {
                    Body::Complete
                },
            }),
            Admission::Reject { error, .. } => Ok(Answer {
                status: error.status,
                headers: error.headers,
                body: Body::Error,
            }),
            Admission::CloseBeforeHeaders { .. } => Err(SendError::Unreachable(
                "connection reset before headers (simulated)".into(),
            )),
        }
    }
}
