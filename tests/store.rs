//! The sled store and its JSON mirror, in a temporary CCS_HOME.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ccs::config::Paths;
use ccs::fsutil::mode;
use ccs::store::{OpenError, SledStore};
use ccs_actors::ports::Store;
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::{Clock, ManualClock, Secret, SharedClock, Timestamp, Token};

// 2025-10-09T08:53:20Z
const T0_MS: u64 = 1_760_000_000_000;

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_millis(T0_MS))
}

fn open(paths: &Paths, clock: &ManualClock) -> Result<SledStore, OpenError> {
    SledStore::open(paths, Arc::new(clock.clone()) as SharedClock)
}

fn token(n: u32) -> Token {
    Token {
        access: Secret::new(format!("sk-ant-oat01-access-{n}")),
        refresh: Secret::new(format!("sk-ant-ort01-refresh-{n}")),
        expires_at: Timestamp::from_millis(T0_MS + 8 * 3600 * 1000),
    }
}

fn login(store: &SledStore, email: &str, t: &Token) {
    let account = store.new_account(email).unwrap();
    store.put_account(&account).unwrap();
    store
        .persist_token(&ccs::store::account_key(email), t)
        .wait()
        .unwrap();
    // The mirror file follows the durable write; these tests read it at once.
    store.sync_mirror().unwrap();
}

#[test]
fn round_trip_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    let quota = {
        let mut q = Quota::default();
        let reset = (T0_MS / 1000 + 600).to_string();
        q.observe(
            429,
            &[
                ("anthropic-ratelimit-unified-5h-status", "rejected"),
                ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
                ("anthropic-ratelimit-unified-5h-reset", reset.as_str()),
            ][..],
            clock.now(),
        );
        q
    };
    let binding = Binding {
        account: "bob@example.com".into(),
        last_used: Timestamp::from_millis(T0_MS),
    };
    {
        let store = open(&paths, &clock).unwrap();
        login(&store, "alice@example.com", &token(1));
        login(&store, "Bob@Example.com", &token(2));
        store
            .persist_quota("alice@example.com", &quota, true)
            .wait()
            .unwrap();
        store.save_binding("session-1", &binding).unwrap();
        let mut pools = BTreeMap::new();
        pools.insert("work".to_string(), vec!["bob@example.com".to_string()]);
        store.set_pools(&pools).unwrap();
        store.set_default("bob@example.com").unwrap();
        store.persist_dead("alice@example.com").wait().unwrap();
    }
    let store = open(&paths, &clock).unwrap();
    let accounts = store.accounts().unwrap();
    assert_eq!(
        accounts
            .iter()
            .map(|a| (a.email.as_str(), a.nickname.as_str(), a.order, a.dead))
            .collect::<Vec<_>>(),
        vec![
            ("alice@example.com", "alice", 0, true),
            ("Bob@Example.com", "bob", 1, false)
        ]
    );
    assert_eq!(store.token("alice@example.com").unwrap(), Some(token(1)));
    assert_eq!(store.token("bob@example.com").unwrap(), Some(token(2)));
    assert_eq!(store.quota("alice@example.com").unwrap(), quota);
    assert_eq!(store.quota("bob@example.com").unwrap(), Quota::default());
    assert_eq!(
        store.bindings().unwrap(),
        vec![("session-1".to_string(), binding)]
    );
    assert_eq!(
        store.pools().unwrap()["work"],
        vec!["bob@example.com".to_string()]
    );
    assert_eq!(
        store.default_account().unwrap().as_deref(),
        Some("bob@example.com")
    );
}

#[test]
fn json_mirror_matches_the_reference_formats() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    let store = open(&paths, &clock).unwrap();
    login(&store, "alice@example.com", &token(1));
    let written =
        std::fs::read_to_string(paths.auth_dir().join("claude-alice@example.com.json")).unwrap();
    let expected = r#"{
  "type": "claude",
  "access_token": "sk-ant-oat01-access-1",
  "refresh_token": "sk-ant-ort01-refresh-1",
  "email": "alice@example.com",
  "expired": "2025-10-09T16:53:20Z",
  "expiry_date": 1760028800000,
  "last_refresh": "2025-10-09T08:53:20Z"
}
"#;
    assert_eq!(written, expected);

    let accounts = std::fs::read_to_string(paths.accounts_json()).unwrap();
    let expected = r#"{
  "version": 1,
  "providers": {
    "claude": {
      "default": "alice@example.com",
      "accounts": {
        "alice@example.com": {
          "email": "alice@example.com",
          "nickname": "alice",
          "tokenFile": "claude-alice@example.com.json",
          "createdAt": "2025-10-09T08:53:20Z",
          "paused": false
        }
      },
      "drainOrder": {
        "mode": "fill-first",
        "orderedIds": [
          "alice@example.com"
        ]
      }
    }
  }
}
"#;
    assert_eq!(accounts, expected);
}

#[test]
fn files_and_folders_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path().join("home"));
    let clock = clock();
    let store = open(&paths, &clock).unwrap();
    login(&store, "alice@example.com", &token(1));
    for d in [
        paths.home.clone(),
        paths.cliproxy(),
        paths.auth_dir(),
        paths.store_dir(),
    ] {
        assert_eq!(mode(&d).unwrap(), 0o700, "{}", d.display());
    }
    for f in [
        paths.accounts_json(),
        paths.auth_dir().join("claude-alice@example.com.json"),
    ] {
        assert_eq!(mode(&f).unwrap(), 0o600, "{}", f.display());
    }
    // sled's own files hold tokens too: db, conf, snap.*, blobs/. At the next open (a daemon
    // start) every one of them is private, whatever the umask made them.
    drop(store);
    let _store = open(&paths, &clock).unwrap();
    let mut seen = 0;
    let mut stack = vec![paths.store_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&p).unwrap(), want, "{}", p.display());
            if p.is_dir() {
                stack.push(p);
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "sled wrote only {seen} entries?");
}

#[test]
fn temp_files_left_by_a_killed_write_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    ccs::fsutil::private_dir(&paths.auth_dir()).unwrap();
    let left = paths
        .auth_dir()
        .join(".claude-alice@example.com.json.tmp-4242");
    std::fs::write(&left, "{\"refresh_token\":\"sk-ant-ort01-half\"}").unwrap();
    let _store = open(&paths, &clock()).unwrap();
    assert!(!left.exists(), "a temp file holding a token was left");
}

#[test]
fn a_folder_the_user_chose_keeps_its_mode() {
    // CCS_HOME pointed at an existing, shared folder: ccs must not chmod it (its own folders
    // below it are private).
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("shared");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = Paths::at(&home);
    let _store = open(&paths, &clock()).unwrap();
    assert_eq!(mode(&home).unwrap(), 0o755);
    assert_eq!(mode(&paths.cliproxy()).unwrap(), 0o700);
}

#[test]
fn a_newer_token_file_is_imported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    {
        let store = open(&paths, &clock).unwrap();
        login(&store, "alice@example.com", &token(1));
    }
    // Another tool refreshed the grant and rewrote the file, later than our record.
    std::thread::sleep(Duration::from_millis(20));
    let file = paths.auth_dir().join("claude-alice@example.com.json");
    std::fs::write(
        &file,
        r#"{"type":"claude","access_token":"sk-ant-oat01-other","refresh_token":"sk-ant-ort01-other","email":"alice@example.com","expired":"2025-10-10T08:53:20+00:00"}"#,
    )
    .unwrap();
    // Our record was written "at" T0 on the manual clock, long before the file's mtime.
    let store = open(&paths, &clock).unwrap();
    let t = store.token("alice@example.com").unwrap().unwrap();
    assert_eq!(t.access.expose(), "sk-ant-oat01-other");
    assert_eq!(t.refresh.expose(), "sk-ant-ort01-other");
    assert_eq!(t.expires_at, Timestamp::from_millis(T0_MS + 86_400_000));
    assert_eq!(store.accounts().unwrap().len(), 1);
}

#[test]
fn a_restored_stale_token_file_never_replaces_the_live_token() {
    // A backup of the mirror is restored: its file is the newest on disk, but its token is an
    // older one (it expires sooner; its refresh token was rotated away). Importing it would
    // kill the account at its next refresh. The token's content decides, not the file's time.
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    {
        let store = open(&paths, &clock).unwrap();
        login(&store, "alice@example.com", &token(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    let file = paths.auth_dir().join("claude-alice@example.com.json");
    // Token 1 expired an hour before token 2 does: issued an hour earlier.
    std::fs::write(
        &file,
        r#"{"type":"claude","access_token":"sk-ant-oat01-access-1","refresh_token":"sk-ant-ort01-refresh-1","email":"alice@example.com","expired":"2025-10-09T15:53:20+00:00"}"#,
    )
    .unwrap();
    let store = open(&paths, &clock).unwrap();
    let t = store.token("alice@example.com").unwrap().unwrap();
    assert_eq!(t.refresh.expose(), "sk-ant-ort01-refresh-2");
    assert_eq!(t.expires_at, token(2).expires_at);
}

#[test]
fn a_token_file_from_the_replaced_tool_creates_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    ccs::fsutil::private_dir(&paths.auth_dir()).unwrap();
    std::fs::write(
        paths.auth_dir().join("claude-carol@example.com.json"),
        r#"{"type":"claude","access_token":"sk-ant-oat01-c","refresh_token":"sk-ant-ort01-c","email":"carol@example.com","expired":"2025-10-10T08:53:20Z","expiry_date":1760086400000,"last_refresh":"2025-10-09T08:53:20Z","account_uuid":"u-1","disabled":false,"priority":3}"#,
    )
    .unwrap();
    let clock = clock();
    let store = open(&paths, &clock).unwrap();
    let accounts = store.accounts().unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].nickname, "carol");
    assert_eq!(accounts[0].account_uuid.as_deref(), Some("u-1"));
    assert_eq!(
        store.default_account().unwrap().as_deref(),
        Some("carol@example.com")
    );
    assert_eq!(
        store
            .token("carol@example.com")
            .unwrap()
            .unwrap()
            .access
            .expose(),
        "sk-ant-oat01-c"
    );
    assert!(
        paths.accounts_json().exists(),
        "the mirror was written after the import"
    );
}

#[test]
fn a_foreign_token_file_is_passed_over_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    {
        let store = open(&paths, &clock).unwrap();
        login(&store, "alice@example.com", &token(1));
    }
    let good_new = paths.auth_dir().join("claude-dave@example.com.json");
    std::fs::write(
        &good_new,
        r#"{"access_token":"a","refresh_token":"r","email":"dave@example.com","expiry_date":1760086400000}"#,
    )
    .unwrap();
    let bad = paths.auth_dir().join("claude-zed@example.com.json");
    std::fs::write(&bad, b"{ this is not json").unwrap();

    let store = open(&paths, &clock).expect("a stray file does not stop the daemon");
    assert_eq!(
        store.accounts().unwrap().len(),
        2,
        "dave imported beside it"
    );
    let notes = store.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("claude-zed@example.com.json") && n.contains("passed over")),
        "{notes:?}"
    );
    assert!(bad.exists(), "the foreign file is left where it is");
}

#[test]
fn a_damaged_or_empty_accounts_json_is_set_aside_and_rewritten_from_the_store() {
    for damaged in [&b"[1,2"[..], &b""[..]] {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        let clock = clock();
        {
            let store = open(&paths, &clock).unwrap();
            login(&store, "alice@example.com", &token(1));
        }
        std::fs::write(paths.accounts_json(), damaged).unwrap();
        let store = open(&paths, &clock).expect("opens");
        assert_eq!(store.accounts().unwrap().len(), 1);
        assert!(
            store.notes().iter().any(|n| n.contains("accounts.json")),
            "{:?}",
            store.notes()
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(paths.accounts_json()).unwrap()).unwrap();
        assert!(
            v["providers"]["claude"]["accounts"]["alice@example.com"].is_object(),
            "rewritten from the store: {v}"
        );
        let aside = std::fs::read_dir(paths.cliproxy())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains("accounts.json.damaged-")
            });
        assert!(aside, "the damaged file is kept aside");
    }
}

#[test]
fn an_emptied_store_says_what_came_back_from_the_files_and_what_did_not() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    {
        let store = open(&paths, &clock).unwrap();
        login(&store, "alice@example.com", &token(1));
        login(&store, "bob@example.com", &token(2));
    }
    std::fs::remove_dir_all(paths.store_dir()).unwrap();
    let store = open(&paths, &clock).unwrap();
    assert_eq!(store.accounts().unwrap().len(), 2, "back from the mirror");
    let notes = store.notes();
    assert!(
        notes.iter().any(|n| n.contains("took 2 account(s)")
            && n.contains("pools, session bindings and quota windows")),
        "{notes:?}"
    );
}

#[test]
fn remove_account_drops_everything_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    let store = open(&paths, &clock).unwrap();
    login(&store, "alice@example.com", &token(1));
    login(&store, "alice@other.com", &token(2));
    assert_eq!(store.accounts().unwrap()[1].nickname, "alice-2");
    store
        .save_binding(
            "s",
            &Binding {
                account: "alice@example.com".into(),
                last_used: Timestamp::from_millis(T0_MS),
            },
        )
        .unwrap();
    assert!(store.remove_account("alice@example.com").unwrap());
    assert!(!paths
        .auth_dir()
        .join("claude-alice@example.com.json")
        .exists());
    assert!(store.token("alice@example.com").unwrap().is_none());
    assert!(store.bindings().unwrap().is_empty());
    assert_eq!(
        store.default_account().unwrap().as_deref(),
        Some("alice@other.com")
    );
    assert!(!store.remove_account("alice@example.com").unwrap());
}

#[test]
fn a_second_opener_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    let _first = open(&paths, &clock).unwrap();
    let Err(err) = open(&paths, &clock) else {
        panic!("two processes' worth of openers on one sled store")
    };
    assert!(err.to_string().contains("another ccs daemon"), "{err}");
}

#[test]
fn a_refresh_intent_puts_the_token_in_doubt_until_a_newer_one_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let c = clock();
    let id = "alice@example.com";
    {
        let store = open(&paths, &c).unwrap();
        login(&store, id, &token(1));
        assert!(!store.in_doubt(id, &token(1)).unwrap());
        store
            .persist_refresh_intent(id, &token(1).refresh)
            .wait()
            .unwrap();
    }
    // The process died after sending: the intent survives, and names this very token.
    let store = open(&paths, &c).unwrap();
    let stored = store.token(id).unwrap().expect("a token");
    assert!(store.in_doubt(id, &stored).unwrap());
    // The answer was written: the stored token is newer than the intent.
    store.persist_token(id, &token(2)).wait().unwrap();
    assert!(!store.in_doubt(id, &token(2)).unwrap());
    // The intent holds a fingerprint, never the token itself.
    let f = ccs_actors::ports::fingerprint(&token(1).refresh);
    assert!(!f.contains("refresh-1") && f.len() == 16, "{f}");
}

#[test]
fn concurrent_updates_of_one_account_lose_nothing() {
    // The daemon notes an account's last use on a blocking thread while the management API
    // pauses it on another: each reads the record, changes one field and writes it back. Made
    // on the store writer's thread, no change can come between another's read and write.
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    let store = Arc::new(open(&paths, &clock).unwrap());
    login(&store, "alice@example.com", &token(1));
    const N: u64 = 150;
    let uses = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..N {
                store
                    .update_account("alice@example.com", |a| {
                        a.last_used_at_ms = Some(a.last_used_at_ms.unwrap_or(0) + 1)
                    })
                    .unwrap()
                    .expect("the account");
            }
        })
    };
    for _ in 0..N {
        store
            .update_account("alice@example.com", |a| a.paused = !a.paused)
            .unwrap()
            .expect("the account");
    }
    uses.join().unwrap();
    let a = store.account("alice@example.com").unwrap().unwrap();
    assert_eq!(a.last_used_at_ms, Some(N), "a use was lost");
    assert_eq!(a.paused, N % 2 == 1, "a pause was lost");
    assert_eq!(
        store.update_account("nobody@example.com", |_| {}).unwrap(),
        None
    );
}

fn file_of(paths: &Paths, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(paths.auth_dir().join(name)).unwrap()).unwrap()
}

#[test]
fn two_addresses_that_an_older_name_merged_get_a_file_each() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    {
        let store = open(&paths, &clock).unwrap();
        login(&store, "a/b@x", &token(1));
        login(&store, "a_b@x", &token(2));
        let slash = file_of(&paths, "claude-a%2Fb@x.json");
        let under = file_of(&paths, "claude-a_b@x.json");
        assert_eq!(slash["email"], "a/b@x");
        assert_eq!(slash["access_token"], "sk-ant-oat01-access-1");
        assert_eq!(under["email"], "a_b@x");
        assert_eq!(under["access_token"], "sk-ant-oat01-access-2");
    }
    // A home an older ccs wrote: a/b@x's token in the file both addresses mapped to, and
    // a_b@x's own file lost under it.
    std::fs::remove_file(paths.auth_dir().join("claude-a%2Fb@x.json")).unwrap();
    std::fs::write(
        paths.auth_dir().join("claude-a_b@x.json"),
        r#"{"type":"claude","access_token":"sk-ant-oat01-access-1","refresh_token":"sk-ant-ort01-refresh-1","email":"a/b@x","expired":"2025-10-09T16:53:20Z"}"#,
    )
    .unwrap();
    let store = open(&paths, &clock).unwrap();
    assert_eq!(
        store.token("a_b@x").unwrap().unwrap().access.expose(),
        "sk-ant-oat01-access-2",
        "the store kept each account's own token"
    );
    assert_eq!(
        file_of(&paths, "claude-a%2Fb@x.json")["access_token"],
        "sk-ant-oat01-access-1"
    );
    assert_eq!(
        file_of(&paths, "claude-a_b@x.json")["access_token"],
        "sk-ant-oat01-access-2"
    );
    let listed = std::fs::read_to_string(paths.accounts_json()).unwrap();
    assert!(listed.contains("claude-a%2Fb@x.json"), "{listed}");
}

fn with_work_pool(paths: &Paths, clock: &ManualClock) {
    let store = open(paths, clock).unwrap();
    login(&store, "alice@example.com", &token(1));
    let mut pools = BTreeMap::new();
    pools.insert("claude".to_string(), vec!["alice@example.com".to_string()]);
    pools.insert("work".to_string(), vec!["alice@example.com".to_string()]);
    store.set_pools(&pools).unwrap();
    store.flush().unwrap();
}

#[test]
fn a_damaged_settings_file_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    with_work_pool(&paths, &clock);
    let conf = paths.store_dir().join("conf");
    std::fs::write(&conf, b"garbage garbage").unwrap();
    let Err(err) = open(&paths, &clock) else {
        panic!("a damaged conf opened")
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&conf.display().to_string()) && msg.contains("delete that file"),
        "{msg}"
    );
    assert!(!msg.contains("another ccs daemon"), "{msg}");
    // The fix it names is enough: nothing is lost.
    std::fs::remove_file(&conf).unwrap();
    let store = open(&paths, &clock).unwrap();
    assert!(store.pools().unwrap().contains_key("work"));
    assert_eq!(store.accounts().unwrap().len(), 1);
}

#[test]
fn a_database_that_lost_an_account_and_a_pool_says_so_and_takes_them_back() {
    // The database is older than accounts.json (a damaged log cut back to an earlier point
    // looks the same): the account and the pool it lost are named and taken back.
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let clock = clock();
    with_work_pool(&paths, &clock);
    let older = tempfile::tempdir().unwrap();
    let older_paths = Paths::at(older.path());
    {
        let store = open(&older_paths, &clock).unwrap();
        login(&store, "bob@example.com", &token(2));
        store.flush().unwrap();
    }
    std::fs::remove_dir_all(paths.store_dir()).unwrap();
    std::fs::rename(older_paths.store_dir(), paths.store_dir()).unwrap();
    let store = open(&paths, &clock).unwrap();
    assert_eq!(
        store.pools().unwrap().get("work"),
        Some(&vec!["alice@example.com".to_string()])
    );
    let notes = store.notes().join("\n");
    assert!(
        notes.contains("lost the pool(s) work") && notes.contains("accounts.json"),
        "{notes}"
    );
    assert!(notes.contains("had lost alice@example.com"), "{notes}");
    assert_eq!(
        store
            .token("alice@example.com")
            .unwrap()
            .unwrap()
            .access
            .expose(),
        "sk-ant-oat01-access-1",
        "alice came back with her token"
    );
}

/// Issue 30 item 4: every write after open goes through the store writer, in the order it was
/// asked for: batched writes (a small record) queued before a durable one (the client keys)
/// are read back in that order once the durable one has answered, and survive a reopen.
#[test]
fn batched_and_durable_writes_go_one_way_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path().join("ccs"));
    let c = clock();
    let store = open(&paths, &c).unwrap();
    store.set_meta("probe", b"first").unwrap();
    store.set_meta("probe", b"second").unwrap();
    store.set_client_keys(b"[]").unwrap();
    assert_eq!(
        store.meta_value("probe").unwrap().as_deref(),
        Some(&b"second"[..]),
        "the batched writes ran before the durable one answered, in order"
    );
    drop(store);
    let again = open(&paths, &c).unwrap();
    assert_eq!(
        again.meta_value("probe").unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(again.client_keys().unwrap().as_deref(), Some(&b"[]"[..]));
}
