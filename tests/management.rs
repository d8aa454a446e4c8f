//! The management API the CLI uses, against a daemon and the simulator on 127.0.0.1 with a
//! temporary CCS_HOME: accounts and pools, on-demand usage, status across a restart.

mod common;

use common::rig::*;
use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_manages_accounts_and_pools() {
    let r = rig(&[("a@example.com", 10), ("b@example.com", 10)]).await;
    let url = &r.daemon.url;
    // Pause takes an account out at once; resume brings it back.
    assert_eq!(
        manage(url, Method::POST, "/accounts/a/pause", None).await.0,
        200
    );
    assert_eq!(
        served_by(ask(url, None, false).await).await,
        "b@example.com"
    );
    assert_eq!(
        manage(url, Method::POST, "/accounts/a@example.com/resume", None)
            .await
            .0,
        200
    );
    assert_eq!(
        served_by(ask(url, None, false).await).await,
        "a@example.com"
    );
    // Drain order.
    let (s, _) = manage(
        url,
        Method::PUT,
        "/pools/claude",
        Some(json!({"accounts": ["b", "a"]})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        served_by(ask(url, Some("new"), false).await).await,
        "b@example.com"
    );
    // A named pool routes only to its members.
    manage(
        url,
        Method::PUT,
        "/pools/solo",
        Some(json!({"accounts": ["a"]})),
    )
    .await;
    let resp = http()
        .post(format!("{url}/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .header("x-ccs-pool", "solo")
        .json(&json!({"model":"m","max_tokens":1,"messages":[]}))
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(resp).await, "a@example.com");
    // Rename with collision, unknown account lists the known ones.
    let (s, v) = manage(
        url,
        Method::POST,
        "/accounts/a/rename",
        Some(json!({"nickname": "b"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = manage(url, Method::POST, "/accounts/zed/pause", None).await;
    assert_eq!(s, 404);
    assert!(
        v["error"].as_str().unwrap().contains("a (a@example.com)"),
        "{v}"
    );
    // A forced refresh rotates the token at the authority.
    let (s, _) = manage(url, Method::POST, "/accounts/a/refresh", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        counters(&r.sim.url()).await["a@example.com"]["refresh_ok"],
        1
    );
    // Logging the same account in again refreshes it, no duplicate.
    let again = add_account(&r.sim.url(), url, "a@example.com").await;
    assert_eq!(again["created"], false);
    assert_eq!(accounts(url).await.len(), 2);
    // Removal.
    assert_eq!(
        manage(url, Method::DELETE, "/accounts/b", None).await.0,
        200
    );
    assert_eq!(accounts(url).await.len(), 1);
    assert!(!r
        .paths
        .auth_dir()
        .join("claude-b@example.com.json")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_polled_on_demand_and_cached() {
    let r = rig(&[("a@example.com", 10)]).await;
    let url = &r.daemon.url;
    served_by(ask(url, None, false).await).await;
    let (s, v) = manage(url, Method::GET, "/quota?max_age=60", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        (v["accounts"][0]["five_hour"]["utilization"]
            .as_f64()
            .unwrap()
            - 0.1)
            .abs()
            < 1e-6,
        "{v}"
    );
    manage(url, Method::GET, "/quota?max_age=0", None).await;
    assert_eq!(
        counters(&r.sim.url()).await["a@example.com"]["usage_calls"],
        1,
        "cached for 30 s at least"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_keeps_the_last_hours_requests_and_hops_across_a_restart() {
    let r = rig(&[("a@example.com", 1), ("b@example.com", 10)]).await;
    let url = r.daemon.url.clone();
    served_by(ask(&url, Some("s"), false).await).await;
    // a's budget is spent: the conversation hops to b.
    assert_eq!(
        served_by(ask(&url, Some("s"), false).await).await,
        "b@example.com"
    );
    let (_, before) = manage(&url, Method::GET, "/status", None).await;
    assert_eq!(before["requests_last_hour"], 2, "{before}");
    assert_eq!(before["hops_last_hour"], 1, "{before}");
    let again = r.restarted(|_| {});
    let (_, after) = manage(&again.daemon.url, Method::GET, "/status", None).await;
    assert_eq!(after["requests_last_hour"], 2, "{after}");
    assert_eq!(after["hops_last_hour"], 1, "{after}");
    let (_, events) = manage(&again.daemon.url, Method::GET, "/events", None).await;
    let list = events["events"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{events}");
    assert_eq!(list[0]["from"], "a@example.com");
    assert_eq!(list[0]["to"], "b@example.com");

    // A damaged record is said, not silently dropped.
    let damaged = again.restarted(|paths| {
        let clock: ccs_actors::SharedClock = std::sync::Arc::new(ccs_actors::SystemClock);
        let store = ccs::store::SledStore::open(paths, clock).unwrap();
        store.set_meta(ccs::store::META_RECENT, b"[1, 2").unwrap();
        store.flush().unwrap();
    });
    let (_, status) = manage(&damaged.daemon.url, Method::GET, "/status", None).await;
    assert_eq!(status["requests_last_hour"], 0, "{status}");
    assert!(
        status["store_notes"]
            .to_string()
            .contains("the recent counts record cannot be read"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pauses_and_resumes_leave_every_view_agreeing() {
    // 41 pauses and resumes of one account at once, twenty times: afterwards the account list,
    // the status and the routing of a new conversation all say the same.
    let r = rig(&[("a@example.com", 1000), ("b@example.com", 1000)]).await;
    let url = r.daemon.url.clone();
    for round in 0..20 {
        let calls: Vec<_> = (0..41)
            .map(|i| {
                let url = url.clone();
                let verb = if (i + round) % 2 == 0 {
                    "pause"
                } else {
                    "resume"
                };
                tokio::spawn(async move {
                    manage(&url, Method::POST, &format!("/accounts/a/{verb}"), None)
                        .await
                        .0
                })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), 200);
        }
        let listed = accounts(&url)
            .await
            .iter()
            .find(|a| a["email"] == "a@example.com")
            .unwrap()["paused"]
            .as_bool()
            .unwrap();
        let (_, status) = manage(&url, Method::GET, "/status", None).await;
        let counted = status["paused"].as_u64().unwrap() == 1;
        let routed_away = served_by(ask(&url, None, false).await).await == "b@example.com";
        assert_eq!(
            (listed, counted, routed_away),
            (listed, listed, listed),
            "round {round}: /accounts says paused={listed}, /status {counted}, routing {routed_away}"
        );
    }
}
