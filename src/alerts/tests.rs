use super::*;

const MIN: Duration = Duration::from_secs(60);

fn at(minute: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + minute * 60_000)
}

fn dead(who: &str) -> Event {
    Event::new(Kind::AccountDead, who, format!("{who} needs a new login"))
}

fn told(e: &[Event]) -> Vec<(Kind, &str)> {
    e.iter().map(|e| (e.kind, e.subject.as_str())).collect()
}

#[test]
fn a_condition_is_told_once_while_it_holds_and_again_after_it_cleared() {
    let mut edges = Edges::default();
    let every = 10 * MIN;
    assert_eq!(
        told(&edges.look(vec![dead("a")], at(0), every)),
        [(Kind::AccountDead, "a")]
    );
    for m in 1..30 {
        assert!(
            edges.look(vec![dead("a")], at(m), every).is_empty(),
            "still dead, minute {m}"
        );
    }
    // Cleared (logged in again), then dead again past the interval: told again.
    assert!(edges.look(vec![], at(30), every).is_empty());
    assert_eq!(
        told(&edges.look(vec![dead("a")], at(31), every)),
        [(Kind::AccountDead, "a")]
    );
}

#[test]
fn a_flapping_condition_is_told_at_most_every_interval() {
    let mut edges = Edges::default();
    let every = 10 * MIN;
    let mut count = 0;
    for m in 0..30 {
        let holding = if m % 2 == 0 { vec![dead("a")] } else { vec![] };
        count += edges.look(holding, at(m), every).len();
    }
    assert_eq!(count, 3, "minutes 0, 10 and 20");
}

#[test]
fn subjects_and_kinds_are_told_apart() {
    let mut edges = Edges::default();
    let low = Event::new(Kind::RunwayLow, "claude", "low");
    let limited = Event::new(Kind::PoolLimited, "claude", "limited");
    let fresh = edges.look(vec![dead("a"), dead("b"), low.clone()], at(0), MIN);
    assert_eq!(fresh.len(), 3);
    let fresh = edges.look(vec![dead("a"), dead("b"), low, limited], at(1), MIN);
    assert_eq!(told(&fresh), [(Kind::PoolLimited, "claude")]);
}

#[test]
fn a_moment_is_told_at_most_every_interval() {
    let mut edges = Edges::default();
    let back = Event::new(Kind::CameBack, "a", "a is back");
    assert!(edges.moment(&back, at(0), 10 * MIN));
    assert!(!edges.moment(&back, at(5), 10 * MIN));
    assert!(edges.moment(&back, at(10), 10 * MIN));
    let other = Event::new(Kind::CameBack, "b", "b is back");
    assert!(edges.moment(&other, at(10), 10 * MIN));
}

#[test]
fn the_banner_shows_what_holds_and_recent_moments() {
    let a = Alerts::new(
        &crate::config::Config::default(),
        crate::oauth::http_client(),
    );
    a.look(vec![dead("a"), dead("b")], at(0));
    a.moment(Event::new(Kind::CameBack, "c", "c is back"), at(0));
    let shown = |now| -> Vec<(Kind, String)> {
        a.active(now)
            .into_iter()
            .map(|x| (x.event, x.subject))
            .collect()
    };
    assert_eq!(shown(at(1)).len(), 3);
    // b logged in again: it leaves the banner; the moment goes after fifteen minutes.
    a.look(vec![dead("a")], at(2));
    assert_eq!(
        shown(at(2)),
        [
            (Kind::CameBack, "c".to_string()),
            (Kind::AccountDead, "a".to_string())
        ]
    );
    assert_eq!(shown(at(20)), [(Kind::AccountDead, "a".to_string())]);
    let ids: Vec<u64> = a.recent().iter().map(|x| x.id).collect();
    assert_eq!(ids, [1, 2, 3], "numbered in the order told");
}

/// HMAC-SHA256 by its definition (RFC 2104), over sha2: what a receiver computes.
fn hmac(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
    // The definition checked against RFC 4231's test case 2 first.
    assert_eq!(
        hmac(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let body = br#"{"id":1,"event":"account_dead"}"#;
    let mut signed = b"1700000000.".to_vec();
    signed.extend_from_slice(body);
    assert_eq!(
        channels::signature("a-long-random-secret", 1_700_000_000, body),
        hmac(b"a-long-random-secret", &signed)
    );
}
