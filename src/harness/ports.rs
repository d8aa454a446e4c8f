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
    /// A 400 about the conversation's history (a thinking block the account could not read).
    HistoryRefused,
}

/// The conversations of a thinking world, as Claude Code keeps them (every block sent back),
/// and what the daemon knows about them (who made each block, which model refuses).
pub(super) struct Conversations {
    pub world: super::spec::ThinkingWorld,
    pub messages: HashMap<String, Vec<serde_json::Value>>,
    pub provenance: crate::proxy::continuity::Provenance,
    pub knowledge: crate::proxy::continuity::Knowledge,
}

impl Conversations {
    pub fn new(world: super::spec::ThinkingWorld) -> Conversations {
        Conversations {
            world,
            messages: HashMap::new(),
            provenance: Default::default(),
            knowledge: Default::default(),
        }
    }

    fn opening(&self) -> serde_json::Value {
        json!({"role": "user", "content": format!("work through it sim-tools:{}", self.world.tools)})
    }

    fn body(&mut self, session: &str) -> bytes::Bytes {
        let opening = self.opening();
        let messages = self
            .messages
            .entry(session.to_string())
            .or_insert_with(|| vec![opening]);
        let thinking = if self.world.manual {
            json!({"type": "enabled", "budget_tokens": 1024})
        } else {
            json!({"type": "adaptive"})
        };
        bytes::Bytes::from(
            json!({
                "model": self.world.model,
                "max_tokens": 1024,
                "thinking": thinking,
                "tools": [{"name": "Bash", "description": "runs a command", "input_schema": {"type": "object"}}],
                "messages": messages,
            })
            .to_string(),
        )
    }

    /// The answer joins the history, with what the client sends next: the tool results it
    /// asks for, or the next task.
    fn answered(
        &mut self,
        session: &str,
        account: &str,
        serve: &crate::sim::model::Serve,
        now_ms: u64,
    ) {
        use crate::proxy::continuity::block_id;
        use crate::sim::model::thinking::Block;
        let ids: Vec<_> = serve
            .content
            .iter()
            .filter_map(|b| match b {
                Block::Thinking { signature, .. } => Some(block_id(signature)),
                Block::Redacted { data } => Some(block_id(data)),
                _ => None,
            })
            .collect();
        self.provenance.record(session, account, &ids, now_ms);
        let opening = self.opening();
        let m = self.messages.entry(session.to_string()).or_default();
        m.push(json!({"role": "assistant", "content": serve.content.iter().map(Block::to_json).collect::<Vec<_>>()}));
        let calls: Vec<serde_json::Value> = serve
            .content
            .iter()
            .filter_map(|b| match b {
                Block::ToolUse { id, .. } => {
                    Some(json!({"type": "tool_result", "tool_use_id": id, "content": "ok"}))
                }
                _ => None,
            })
            .collect();
        if calls.is_empty() {
            m.push(opening);
        } else {
            m.push(json!({"role": "user", "content": calls}));
        }
    }
}

pub(super) struct ModelUpstream {
    pub model: Arc<SimModel>,
    pub checks: Rc<RefCell<Checks>>,
    pub session: String,
    pub conversations: Option<Rc<RefCell<Conversations>>>,
}

fn history_refused(a: &Admission) -> bool {
    matches!(a, Admission::Reject { error, .. } if error.status == 400
        && error.body.pointer("/error/message").and_then(|m| m.as_str())
            .is_some_and(crate::proxy::continuity::about_history))
}

impl ModelUpstream {
    /// What the daemon sends this account (`forward.rs` does the same over HTTP): the
    /// history fitted where the model refuses another account's blocks, once more after a 400
    /// about the history on a request it did not fit.
    fn admit(&self, account: &AccountId, access: &Secret) -> Admission {
        use crate::proxy::continuity::{fit_for, Why};
        let Some(conv) = &self.conversations else {
            return self
                .model
                .admit(Some(access.expose()), Some(OAUTH_BETA), &PLAIN_BODY, false);
        };
        let mut c = conv.borrow_mut();
        let body = c.body(&self.session);
        let fitting = !ccs_actors::planted::on(ccs_actors::planted::Bug::FittingOff);
        let owners = c.provenance.of(&self.session);
        let mine = |id: &crate::proxy::continuity::BlockId| {
            owners.get(id).is_some_and(|a| a.as_str() == &**account)
        };
        let binding = c.knowledge.binding(&c.world.model);
        let up_front = fitting
            .then(|| fit_for(&body, binding, Why::UpFront, mine))
            .flatten();
        let sent = up_front.as_ref().map_or(&body, |f| &f.body);
        let mut admission = self
            .model
            .admit(Some(access.expose()), Some(OAUTH_BETA), sent, false);
        if fitting && up_front.is_none() && history_refused(&admission) {
            if let Some(f) = fit_for(&body, None, Why::After400, mine) {
                admission =
                    self.model
                        .admit(Some(access.expose()), Some(OAUTH_BETA), &f.body, false);
                if matches!(admission, Admission::Serve(_)) {
                    let model = c.world.model.clone();
                    c.knowledge.learn(&model);
                }
            }
        }
        // A cut stream never reached the client whole: the client retries it, its history as
        // it was.
        if let Admission::Serve(s) = admission.clone() {
            if s.close_after.is_some() {
                return admission;
            }
            let s = &s;
            let now = self.model.now().as_millis();
            c.answered(&self.session, account, s, now);
        }
        admission
    }
}

impl Upstream for ModelUpstream {
    type Body = Body;

    async fn send(&self, account: &AccountId, access: &Secret) -> Result<Answer<Body>, SendError> {
        self.checks
            .borrow_mut()
            .on_send(account, &self.model, access);
        let admission = self.admit(account, access);
        let refused = history_refused(&admission);
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
                body: if refused {
                    Body::HistoryRefused
                } else {
                    Body::Error
                },
            }),
            Admission::CloseBeforeHeaders { .. } => Err(SendError::Unreachable(
                "connection reset before headers (simulated)".into(),
            )),
        }
    }
}
