//! The simulated Messages API's decision for one request: which account the bearer is, the
//! faults that hit it, and whether its windows admit it (with the unified rate-limit headers
//! of every answer), then what the history says (`thinking.rs`: signed thinking blocks, the
//! model's rules) and what the prompt cache holds for this organization. Must not: serve an
//! account whose window is spent.

use super::*;

/// The model of a request that names none (the older default: no thinking unless asked).
const NO_MODEL: &str = "claude-sonnet-4-5-20250929";

impl SimModel {
    /// Decides the fate of a `POST /v1/messages` (or, with `count_tokens`, of a token count).
    pub fn admit(
        &self,
        bearer: Option<&str>,
        beta: Option<&str>,
        body: &[u8],
        count_tokens: bool,
    ) -> Admission {
        let body_len = body.len();
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
                model: String::new(),
                content: Vec::new(),
                stop_reason: "end_turn",
                usage: SimUsage::default(),
                transformations: None,
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
        // The history: a 400 costs no quota.
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(NO_MODEL)
            .to_string();
        let behaviour = inner.scenario.behaviour(&model);
        let controls = beta.is_some_and(|b| {
            b.split(',')
                .any(|x| x.trim() == thinking::BINDING_CONTROLS_BETA)
        });
        let key = inner.signing_key;
        let org = inner.users[i].org_uuid.clone();
        let mut reading = match thinking::read(&request, &behaviour, &key, &org, &model, controls) {
            Ok(r) => r,
            Err(error) => {
                inner.users[i].counters.history_refused += 1;
                return Admission::Reject { delay, error };
            }
        };
        let dropped_tokens: u64 = reading.dropped.iter().map(|d| d.tokens).sum();
        let total = input_tokens.saturating_sub(dropped_tokens).max(1);
        let (min_tokens, prefill) = (
            inner.scenario.cache_min_tokens,
            inner.scenario.prefill_us_per_ktok,
        );
        let u = &mut inner.users[i];
        let usage = cache(&mut u.cache, &request, total, min_tokens, now);
        let cost = match unit {
            BudgetUnit::Requests => 1,
            BudgetUnit::Tokens => {
                // What a turn really costs: writes 1.25x (1 h: 2x), reads a tenth.
                let c = usage.input * 4
                    + usage.cache_creation_5m * 5
                    + usage.cache_creation_1h * 8
                    + usage.cache_read.div_ceil(10) * 4;
                c.div_ceil(4) + REPLY_TOKENS
            }
        };
        u.five.consume(cost, now);
        u.seven.consume(cost, now);
        u.counters.messages_ok += 1;
        u.counters.input_tokens += usage.input;
        u.counters.output_tokens += REPLY_TOKENS;
        u.counters.cache_read_tokens += usage.cache_read;
        u.counters.cache_creation_tokens += usage.cache_creation_5m + usage.cache_creation_1h;
        u.counters.thinking_dropped += reading.dropped.len() as u64;
        let headers = inner.unified_headers(i, now);
        // Reading uncached input takes time: a cold turn is slower to its first byte.
        let uncached = usage.input + usage.cache_creation_5m + usage.cache_creation_1h;
        let prefill_us = (uncached * prefill + usage.cache_read * prefill / 10) / 1000;
        let delay = match (delay, prefill_us) {
            (d, 0) => d,
            (d, us) => Some(d.unwrap_or_default() + Duration::from_micros(us)),
        };
        let transformations = controls.then(|| {
            Value::Array(
                reading
                    .dropped
                    .iter()
                    .map(
                        |d| json!({"type": "thinking_dropped", "path": d.path, "reason": d.reason}),
                    )
                    .collect(),
            )
        });
        let mut serve = Serve {
            id,
            email,
            headers,
            delay,
            event_delay,
            close_after,
            cut_inside,
            stream_events,
            input_tokens: usage.input,
            model: model.clone(),
            content: Vec::new(),
            stop_reason: "end_turn",
            usage,
            transformations,
        };
        serve.content = thinking::answer(
            &mut reading,
            &behaviour,
            &key,
            &org,
            &model,
            serve.deltas(),
            id,
        );
        if serve
            .content
            .iter()
            .any(|b| matches!(b, thinking::Block::ToolUse { .. }))
        {
            serve.stop_reason = "tool_use";
        }
        Admission::Serve(serve)
    }
}

/// The prompt cache of one organization for one request: the longest cached breakpoint is read
/// (and its lifetime renewed), everything after it up to the last breakpoint is written, the
/// rest is plain input. Prefixes shorter than `min_tokens` are not cached.
fn cache(
    entries: &mut HashMap<[u8; 32], (u64, Timestamp, Duration)>,
    request: &Value,
    total: u64,
    min_tokens: u64,
    now: Timestamp,
) -> SimUsage {
    entries.retain(|_, (_, until, _)| *until > now);
    let points = thinking::breakpoints(request);
    let mut usage = SimUsage {
        cached: !points.is_empty(),
        output: REPLY_TOKENS,
        ..SimUsage::default()
    };
    let mut read = 0u64;
    for p in points.iter().rev() {
        if let Some((tokens, until, ttl)) = entries.get_mut(&p.digest) {
            *until = now.plus(*ttl);
            read = (*tokens).min(total);
            break;
        }
    }
    let mut written_to = read;
    for p in points.iter().filter(|p| p.tokens >= min_tokens) {
        let ttl = if p.one_hour {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(300)
        };
        let tokens = p.tokens.min(total);
        if tokens > written_to {
            let fresh = tokens - written_to;
            if p.one_hour {
                usage.cache_creation_1h += fresh;
            } else {
                usage.cache_creation_5m += fresh;
            }
            written_to = tokens;
        }
        entries
            .entry(p.digest)
            .or_insert((tokens, now.plus(ttl), ttl));
    }
    // A bounded cache: the oldest entries go first.
    while entries.len() > 512 {
        if let Some(k) = entries
            .iter()
            .min_by_key(|(_, (_, u, _))| *u)
            .map(|(k, _)| *k)
        {
            entries.remove(&k);
        }
    }
    usage.cache_read = read;
    usage.input = total.saturating_sub(written_to).max(1);
    usage
}
