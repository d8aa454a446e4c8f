//! The simulated Messages API's decision for one request: which account the bearer is, the
//! faults that hit it, and whether its windows admit it (with the unified rate-limit headers
//! of every answer). Must not: serve an account whose window is spent.

use super::*;

impl SimModel {
    /// Decides the fate of a `POST /v1/messages` (or, with `count_tokens`, of a token count).
    pub fn admit(
        &self,
        bearer: Option<&str>,
        beta: Option<&str>,
        body_len: usize,
        count_tokens: bool,
    ) -> Admission {
        let now = self.now();
        let mut inner = self.lock();
        let i = match inner.bearer(bearer, now) {
            Ok(i) => i,
            Err(error) => return Admission::Reject { delay: None, error },
        };
        if let Some((grant, generation)) = bearer
            .and_then(|b| inner.access.get(b))
            .map(|a| (a.grant, a.generation))
        {
            if let Some(g) = inner.grants.get_mut(&grant) {
                g.used = g.used.max(generation);
            }
        }
        if !beta.is_some_and(|b| b.split(',').any(|x| x.trim() == OAUTH_BETA)) {
            return Admission::Reject {
                delay: None,
                error: ApiError::anthropic(
                    401,
                    "authentication_error",
                    "OAuth authentication is currently not supported.",
                ),
            };
        }
        let input_tokens = (body_len as u64 / 4).max(1);
        if count_tokens {
            inner.users[i].counters.count_tokens += 1;
            inner.next_id += 1;
            return Admission::Serve(Serve {
                id: inner.next_id,
                email: inner.users[i].spec.email.clone(),
                headers: Vec::new(),
                delay: None,
                event_delay: None,
                close_after: None,
                cut_inside: false,
                stream_events: 0,
                input_tokens,
            });
        }
        let email = inner.users[i].spec.email.clone();
        let faults = inner.take_faults(&email, |k| !k.on_token_endpoint());
        let ms = |k: FaultKind| {
            faults
                .iter()
                .filter(|f| f.kind == k)
                .filter_map(|f| f.ms)
                .max()
                .map(Duration::from_millis)
        };
        let delay = ms(FaultKind::Latency);
        let event_delay = ms(FaultKind::EventLatency);
        let terminal = faults
            .iter()
            .find(|f| !matches!(f.kind, FaultKind::Latency | FaultKind::EventLatency));
        let fault_error =
            |status: u16, kind: &str, msg: &str| ApiError::anthropic(status, kind, msg);
        let mut close_after = None;
        let mut cut_inside = false;
        if let Some(f) = terminal {
            let error = match f.kind {
                FaultKind::Status429 => Some(fault_error(
                    429,
                    "rate_limit_error",
                    "Rate limited (simulated, no headers)",
                )),
                FaultKind::Status429Retry => Some(ApiError {
                    headers: vec![("x-should-retry".into(), "true".into())],
                    ..fault_error(
                        429,
                        "rate_limit_error",
                        "Rate limited, please retry (simulated)",
                    )
                }),
                FaultKind::Status401 => Some(fault_error(
                    401,
                    "authentication_error",
                    "invalid OAuth token (simulated)",
                )),
                FaultKind::Status403 => Some(fault_error(
                    403,
                    "permission_error",
                    "account disabled (simulated)",
                )),
                FaultKind::Status500 => Some(fault_error(
                    500,
                    "api_error",
                    "Internal server error (simulated)",
                )),
                FaultKind::Status529 => Some(fault_error(
                    529,
                    "overloaded_error",
                    "Overloaded (simulated)",
                )),
                FaultKind::CloseBeforeHeaders => {
                    inner.users[i].counters.faults += 1;
                    return Admission::CloseBeforeHeaders { delay };
                }
                FaultKind::CloseMidStream => {
                    close_after = Some(f.after_events.unwrap_or(2));
                    None
                }
                FaultKind::CloseMidEvent => {
                    close_after = Some(f.after_events.unwrap_or(2));
                    cut_inside = true;
                    None
                }
                _ => None,
            };
            if let Some(error) = error {
                inner.users[i].counters.faults += 1;
                return Admission::Reject { delay, error };
            }
        }
        let unit = inner.unit;
        let stream_events = inner.stream_events;
        inner.next_id += 1;
        let id = inner.next_id;
        let u = &mut inner.users[i];
        u.five.roll(now);
        u.seven.roll(now);
        if u.five.exhausted() || u.seven.exhausted() {
            u.counters.messages_rejected += 1;
            let which = if u.seven.exhausted() {
                "weekly"
            } else {
                "5-hour"
            };
            let headers = inner.unified_headers(i, now);
            return Admission::Reject {
                delay,
                error: ApiError {
                    headers,
                    ..ApiError::anthropic(
                        429,
                        "rate_limit_error",
                        &format!("This account's {which} usage limit has been reached (simulated)"),
                    )
                },
            };
        }
        let cost = match unit {
            BudgetUnit::Requests => 1,
            BudgetUnit::Tokens => input_tokens + REPLY_TOKENS,
        };
        u.five.consume(cost, now);
        u.seven.consume(cost, now);
        u.counters.messages_ok += 1;
        u.counters.input_tokens += input_tokens;
        u.counters.output_tokens += REPLY_TOKENS;
        let headers = inner.unified_headers(i, now);
        Admission::Serve(Serve {
            id,
            email,
            headers,
            delay,
            event_delay,
            close_after,
            cut_inside,
            stream_events,
            input_tokens,
        })
    }
}
