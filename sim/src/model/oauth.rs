//! The simulated OAuth authority: the authorize page's decision, the JSON token endpoint
//! (code exchange with PKCE, refresh with rotation and replay detection), the profile and the
//! usage endpoints. Must not: accept a rotated refresh token, or a code twice.

use super::*;

impl SimModel {
    // ---- OAuth ----------------------------------------------------------------------------

    pub fn authorize(&self, q: &AuthorizeQuery) -> Result<Authorized, ApiError> {
        let bad = |m: &str| ApiError::oauth(400, "invalid_request", m);
        if q.response_type.as_deref() != Some("code") {
            return Err(bad("response_type must be code"));
        }
        let client_id = q
            .client_id
            .clone()
            .ok_or_else(|| bad("client_id is required"))?;
        let redirect_uri = q
            .redirect_uri
            .clone()
            .ok_or_else(|| bad("redirect_uri is required"))?;
        let challenge = q
            .code_challenge
            .clone()
            .ok_or_else(|| bad("code_challenge is required"))?;
        if q.code_challenge_method.as_deref() != Some("S256") {
            return Err(bad("code_challenge_method must be S256"));
        }
        let state = q.state.clone().ok_or_else(|| bad("state is required"))?;
        let now = self.now();
        let mut inner = self.lock();
        if inner.users.is_empty() {
            return Err(bad(
                "the simulator has no users: add one with POST /sim/users",
            ));
        }
        let (email, deny) = if let Some(hint) = &q.login_hint {
            let i = inner
                .user(hint)
                .ok_or_else(|| bad(&format!("no test user {hint}")))?;
            (inner.users[i].spec.email.clone(), false)
        } else if let Some(n) = inner.next_login.pop_front() {
            (n.email, n.deny)
        } else {
            let with_grant = |e: &str| {
                inner
                    .grants
                    .values()
                    .any(|g| g.email.eq_ignore_ascii_case(e))
            };
            let pick = inner
                .users
                .iter()
                .find(|u| !with_grant(&u.spec.email))
                .unwrap_or(&inner.users[0]);
            (pick.spec.email.clone(), false)
        };
        if deny {
            return Ok(Authorized::Denied {
                redirect_uri,
                state,
            });
        }
        let code = inner.random("sim-code-");
        let expires_at = now.plus(inner.code_ttl);
        inner.codes.insert(
            code.clone(),
            PendingCode {
                email: email.clone(),
                client_id,
                redirect_uri: redirect_uri.clone(),
                challenge,
                state: state.clone(),
                expires_at,
            },
        );
        Ok(Authorized::Approved {
            redirect_uri,
            code,
            state,
            email,
        })
    }

    /// `POST /v1/oauth/token` with a JSON body.
    pub fn token(&self, body: &Value) -> TokenOutcome {
        let now = self.now();
        let mut inner = self.lock();
        let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        let bad_request = |m: &str| ApiError::oauth(400, "invalid_request", m);
        let invalid_grant = |m: &str| ApiError::oauth(400, "invalid_grant", m);
        let grant_type = s("grant_type");
        // Who is asking decides which faults apply.
        let email = match grant_type.as_deref() {
            Some("authorization_code") => {
                s("code").and_then(|c| inner.codes.get(&c).map(|p| p.email.clone()))
            }
            Some("refresh_token") => s("refresh_token").and_then(|r| {
                inner
                    .refresh
                    .get(&r)
                    .and_then(|g| inner.grants.get(g).map(|g| g.email.clone()))
                    .or_else(|| inner.retired.get(&r).cloned())
            }),
            _ => None,
        };
        let faults =
            inner.take_faults(email.as_deref().unwrap_or(""), FaultKind::on_token_endpoint);
        let delay = faults
            .iter()
            .filter(|f| f.kind == FaultKind::TokenSlow)
            .filter_map(|f| f.ms)
            .max()
            .map(Duration::from_millis);
        if grant_type.as_deref() == Some("refresh_token") {
            let replay = s("refresh_token").is_some_and(|r| inner.retired.contains_key(&r));
            if replay {
                let seen = s("refresh_token")
                    .and_then(|r| inner.lineage.get(&r).copied())
                    .and_then(|(grant, generation)| {
                        let g = inner.grants.get(&grant)?;
                        Some(Replay {
                            email: g.email.clone(),
                            generation,
                            lineage: Lineage {
                                issued: g.issued,
                                used: g.used,
                            },
                        })
                    });
                inner.replays.extend(seen);
            }
            if let Some(i) = email.as_deref().and_then(|e| inner.user(e)) {
                inner.users[i].counters.refresh_calls += 1;
                if replay {
                    inner.users[i].counters.refresh_replays += 1;
                }
            }
        }
        if faults.iter().any(|f| f.kind == FaultKind::TokenDown) {
            return TokenOutcome {
                delay,
                result: Err(ApiError::oauth(
                    503,
                    "temporarily_unavailable",
                    "the token endpoint is down (simulated)",
                )),
            };
        }
        let result =
            match grant_type.as_deref() {
                Some("authorization_code") => (|| {
                    let code = s("code").ok_or_else(|| bad_request("code is required"))?;
                    let pending = inner.codes.remove(&code).ok_or_else(|| {
                        invalid_grant("unknown or already used authorization code")
                    })?;
                    if now >= pending.expires_at {
                        return Err(invalid_grant("authorization code expired"));
                    }
                    if s("client_id").as_deref() != Some(pending.client_id.as_str()) {
                        return Err(invalid_grant(
                            "client_id does not match the authorization request",
                        ));
                    }
                    if s("redirect_uri").as_deref() != Some(pending.redirect_uri.as_str()) {
                        return Err(invalid_grant(
                            "redirect_uri does not match the authorization request",
                        ));
                    }
                    if s("state").as_deref() != Some(pending.state.as_str()) {
                        return Err(invalid_grant(
                            "state does not match the authorization request",
                        ));
                    }
                    let verifier = s("code_verifier")
                        .ok_or_else(|| bad_request("code_verifier is required"))?;
                    if pkce_challenge(&verifier) != pending.challenge {
                        return Err(invalid_grant("PKCE verification failed"));
                    }
                    let grant = inner.next_id;
                    inner.next_id += 1;
                    inner.grants.insert(
                        grant,
                        Grant {
                            email: pending.email.clone(),
                            refresh_token: String::new(),
                            issued: 0,
                            used: 0,
                        },
                    );
                    if let Some(i) = inner.user(&pending.email) {
                        inner.users[i].counters.logins += 1;
                    }
                    Ok(inner.issue_tokens(&pending.email, grant, now))
                })(),
                Some("refresh_token") => (|| {
                    let rt = s("refresh_token")
                        .ok_or_else(|| bad_request("refresh_token is required"))?;
                    let grant = *inner.refresh.get(&rt).ok_or_else(|| {
                        invalid_grant("refresh token is invalid, rotated or revoked")
                    })?;
                    let email = inner
                        .grants
                        .get(&grant)
                        .map(|g| g.email.clone())
                        .ok_or_else(|| invalid_grant("grant revoked"))?;
                    if let Some(i) = inner.user(&email) {
                        inner.users[i].counters.refresh_ok += 1;
                    }
                    Ok(inner.issue_tokens(&email, grant, now))
                })(),
                Some(other) => Err(ApiError::oauth(
                    400,
                    "unsupported_grant_type",
                    &format!("grant_type {other} is not supported"),
                )),
                None => Err(bad_request("grant_type is required")),
            };
        TokenOutcome { delay, result }
    }

    /// `GET /api/oauth/profile`.
    pub fn profile(&self, bearer: Option<&str>) -> Result<Value, ApiError> {
        let now = self.now();
        let inner = self.lock();
        let i = inner.bearer(bearer, now)?;
        let u = &inner.users[i];
        Ok(json!({
            "account": {
                "uuid": u.uuid,
                "email": u.spec.email,
                "email_address": u.spec.email,
                "display_name": u.spec.email.split('@').next().unwrap_or(""),
                "has_claude_max": u.spec.plan == "max",
                "has_claude_pro": u.spec.plan == "pro",
            },
            "organization": {
                "uuid": u.org_uuid,
                "name": format!("{}'s Organization", u.spec.email),
                "organization_type": match u.spec.plan.as_str() {
                    "team" => "claude_team",
                    "pro" => "claude_pro",
                    _ => "claude_max",
                },
            },
        }))
    }

    /// `GET /api/oauth/usage`: percent utilization and ISO resets.
    pub fn usage(&self, bearer: Option<&str>, beta: Option<&str>) -> Result<Value, ApiError> {
        let now = self.now();
        let mut inner = self.lock();
        let i = inner.bearer(bearer, now)?;
        if !beta.is_some_and(|b| b.contains(OAUTH_BETA)) {
            return Err(ApiError::anthropic(
                401,
                "authentication_error",
                "OAuth authentication is currently not supported.",
            ));
        }
        let min_interval = inner.scenario.usage_min_interval.0;
        let u = &mut inner.users[i];
        u.counters.usage_calls += 1;
        if let Some(wait) = u
            .usage_answered_at
            .map(|t| t.plus(min_interval))
            .filter(|next| *next > now)
            .map(|next| next.since(now))
        {
            u.counters.usage_refused += 1;
            let mut e = ApiError::anthropic(
                429,
                "rate_limit_error",
                "Rate limited. Please try again later.",
            );
            e.headers
                .push(("retry-after".into(), wait.as_secs().max(1).to_string()));
            return Err(e);
        }
        u.usage_answered_at = Some(now);
        u.five.roll(now);
        u.seven.roll(now);
        let window = |w: &Window| {
            json!({
                "utilization": (w.utilization() * 100.0).min(100.0),
                "resets_at": w.started.map(|_| Timestamp::rfc3339(w.reset_at(now))),
            })
        };
        Ok(json!({
            "five_hour": window(&u.five),
            "seven_day": window(&u.seven),
            "seven_day_opus": null,
            "seven_day_sonnet": null,
            "seven_day_oauth_apps": null,
            "extra_usage": {"is_enabled": false, "monthly_limit": null, "used_credits": null, "utilization": null},
        }))
    }
}
