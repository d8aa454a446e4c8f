//! The model's own unit tests: determinism by seed, windows rolling.

use super::*;
use ccs_actors::ManualClock;
use std::sync::Arc;

fn model(users: &[&str]) -> (SimModel, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_secs(1_760_000_000));
    let scenario = Scenario {
        users: users.iter().map(|e| User::new(e)).collect(),
        ..Scenario::default()
    };
    (SimModel::new(&scenario, Arc::new(clock.clone()), 7), clock)
}

#[test]
fn same_seed_same_tokens() {
    let run = || {
        let (m, _) = model(&["a@x"]);
        let verifier = "v".repeat(43);
        let Authorized::Approved { code, state, .. } = m
            .authorize(&AuthorizeQuery {
                client_id: Some("c".into()),
                response_type: Some("code".into()),
                redirect_uri: Some("http://localhost:1/callback".into()),
                code_challenge: Some(pkce_challenge(&verifier)),
                code_challenge_method: Some("S256".into()),
                state: Some("st".into()),
                ..Default::default()
            })
            .unwrap()
        else {
            panic!("denied")
        };
        m.token(&json!({"grant_type":"authorization_code","code":code,"state":state,"client_id":"c","redirect_uri":"http://localhost:1/callback","code_verifier":verifier}))
            .result
            .unwrap()
    };
    assert_eq!(run(), run());
}

#[test]
fn windows_roll_after_their_length() {
    let mut w = Window::new(2, FIVE_HOURS);
    let t0 = Timestamp::from_secs(100);
    w.consume(2, t0);
    assert!(w.exhausted());
    w.roll(t0.plus(FIVE_HOURS).minus(Duration::from_secs(1)));
    assert!(w.exhausted());
    w.roll(t0.plus(FIVE_HOURS));
    assert!(!w.exhausted());
    assert_eq!(w.used, 0);
}
