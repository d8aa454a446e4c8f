//! A conversation with thinking on moves between accounts mid tool loop and back, for each way
//! a model treats another account's thinking blocks (specs/continuity.md), against the
//! simulator, which signs and checks blocks as the real API does (specs/anthropic.md §9).
//! The client here does what Claude Code does: streams every turn, sends every block back.

mod common;

use common::rig::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

use ccs::sim::scenario::{ModelOverride, Scenario, ThinkingBinding, User};

const A: &str = "alice@example.com";
const B: &str = "bob@example.com";

fn world(model: &str, binding: ThinkingBinding) -> Scenario {
    let mut s = Scenario::roomy(&[A, B], std::time::Duration::from_secs(8 * 3600));
    s.users = vec![User::new(A), User::new(B)]
        .into_iter()
        .map(|u| User {
            five_hour: 1_000,
            ..u
        })
        .collect();
    s.models.insert(
        model.to_string(),
        ModelOverride {
            thinking_binding: Some(binding),
            ..ModelOverride::default()
        },
    );
    s
}

/// The content of a streamed answer, rebuilt from its events as a client does.
fn content_of(sse: &str) -> (Vec<Value>, String) {
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    let mut stop = String::new();
    for line in sse.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let ev: Value = serde_json::from_str(data).unwrap();
        match ev["type"].as_str().unwrap_or("") {
            "content_block_start" => {
                blocks.push(ev["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = ev["index"].as_u64().unwrap() as usize;
                let d = &ev["delta"];
                match d["type"].as_str().unwrap() {
                    "thinking_delta" => {
                        let t = blocks[i]["thinking"].as_str().unwrap_or("").to_string()
                            + d["thinking"].as_str().unwrap();
                        blocks[i]["thinking"] = json!(t);
                    }
                    "signature_delta" => blocks[i]["signature"] = d["signature"].clone(),
                    "text_delta" => {
                        let t = blocks[i]["text"].as_str().unwrap_or("").to_string()
                            + d["text"].as_str().unwrap();
                        blocks[i]["text"] = json!(t);
                    }
                    "input_json_delta" => partial[i].push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("unknown delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = ev["index"].as_u64().unwrap() as usize;
                if !partial[i].is_empty() {
                    blocks[i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                }
            }
            "message_delta" => stop = ev["delta"]["stop_reason"].as_str().unwrap().to_string(),
            _ => {}
        }
    }
    (blocks, stop)
}

struct Turn {
    status: u16,
    /// The body as the client sent it.
    sent: String,
    /// The account that answered (from the text or the tool call's turn), when it answered.
    error: String,
}

struct Conversation {
    model: String,
    thinking: Value,
    messages: Vec<Value>,
    session: String,
    /// The `anthropic-beta` header it sends, if any.
    beta: Option<&'static str>,
}

impl Conversation {
    fn new(model: &str, thinking: Value, steps: u32) -> Conversation {
        Conversation {
            model: model.into(),
            thinking,
            messages: vec![
                json!({"role": "user", "content": format!("run the loop sim-tools:{steps}")}),
            ],
            session: ccs::commands::demo::uuid_v4(),
            beta: None,
        }
    }

    fn body(&self) -> String {
        let mut b = json!({
            "model": self.model,
            "max_tokens": 1024,
            "stream": true,
            "system": [{"type": "text", "text": "You are a test.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "Bash", "description": "Runs a command", "input_schema": {"type": "object"}}],
            "messages": self.messages,
        });
        if !self.thinking.is_null() {
            b["thinking"] = self.thinking.clone();
        }
        b.to_string()
    }

    /// One request; on success the answer joins the history (and the tool results it asks
    /// for). Returns whether the loop goes on.
    async fn turn(&mut self, daemon: &str) -> (Turn, bool) {
        let sent = self.body();
        let mut rb = http()
            .post(format!("{daemon}/v1/messages?beta=true"))
            .bearer_auth(CLIENT_KEY)
            .header("x-claude-code-session-id", &self.session)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json");
        if let Some(beta) = self.beta {
            rb = rb.header("anthropic-beta", beta);
        }
        let r = rb.body(sent.clone()).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if status != 200 || text.contains("event: error") {
            return (
                Turn {
                    status: if status == 200 { 599 } else { status },
                    sent,
                    error: text,
                },
                false,
            );
        }
        let (content, stop) = content_of(&text);
        let calls: Vec<Value> = content
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| json!({"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}))
            .collect();
        self.messages
            .push(json!({"role": "assistant", "content": content}));
        let more = stop == "tool_use";
        if more {
            self.messages
                .push(json!({"role": "user", "content": calls}));
        }
        (
            Turn {
                status,
                sent,
                error: String::new(),
            },
            more,
        )
    }
}

async fn pause(daemon: &str, who: &str, paused: bool) {
    let verb = if paused { "pause" } else { "resume" };
    let (s, v) = manage(
        daemon,
        Method::POST,
        &format!("/accounts/{who}/{verb}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// Without the thinking blocks (and with `thinking` as it is): the rest of a body.
fn without_thinking(body: &str) -> Value {
    let mut v: Value = serde_json::from_str(body).unwrap();
    if let Some(ms) = v["messages"].as_array_mut() {
        for m in ms {
            if let Some(c) = m["content"].as_array_mut() {
                c.retain(|b| !matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")));
            }
        }
    }
    v.as_object_mut().unwrap().remove("thinking");
    v
}

fn signatures(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| {
            b["signature"]
                .as_str()
                .or(b["data"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// Runs a five-step tool loop: two steps on alice, a move to bob (alice paused), two on bob,
/// the move back (bob paused, alice resumed), the rest on alice. Returns each turn and what the
/// simulator received for it.
async fn tool_loop_with_moves(r: &Rig, model: &str, thinking: Value) -> (Vec<Turn>, Vec<Value>) {
    moving_tool_loop(r, Conversation::new(model, thinking, 5)).await
}

/// `tool_loop_with_moves` for a conversation made ready by the caller.
async fn moving_tool_loop(r: &Rig, mut c: Conversation) -> (Vec<Turn>, Vec<Value>) {
    let url = &r.daemon.url;
    let mut turns = Vec::new();
    for n in 0..6 {
        match n {
            2 => pause(url, A, true).await,
            4 => {
                pause(url, A, false).await;
                pause(url, B, true).await;
            }
            _ => {}
        }
        let (t, more) = c.turn(url).await;
        let failed = t.status != 200;
        turns.push(t);
        if failed || !more {
            break;
        }
    }
    let received: Vec<Value> = sim_get(&r.sim.url(), "/sim/requests")
        .await
        .as_array()
        .unwrap()
        .clone();
    (turns, received)
}

fn assert_every_turn_answered(turns: &[Turn]) {
    assert_eq!(turns.len(), 6, "the loop ran to its end");
    for (i, t) in turns.iter().enumerate() {
        assert_eq!(t.status, 200, "turn {i}: {}", t.error);
    }
}

fn sha256(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_model_gets_only_the_blocks_its_account_made_and_the_rest_byte_for_byte() {
    // config.yaml says the model refuses: its moves are fitted up front.
    let r = rig_on(world("claude-opus-5-5", ThinkingBinding::Reject), |c| {
        c.continuity.models.insert(
            "claude-opus-5-5".into(),
            ccs::proxy::continuity::Binding::Reject,
        );
    })
    .await;
    // The Live feed, open before the conversation starts.
    let mut live = http()
        .get(format!("{}/v0/management/live", r.daemon.url))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let (turns, received) = tool_loop_with_moves(
        &r,
        "claude-opus-5-5",
        json!({"type": "adaptive", "display": "omitted"}),
    )
    .await;
    let mut feed = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !feed.contains("\"blocks_removed\"") && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, live.chunk()).await {
            Ok(Ok(Some(c))) => feed.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    assert!(
        feed.contains("\"fitted\":{\"blocks_removed\":"),
        "the Live feed shows the fitted request: {feed}"
    );
    assert_every_turn_answered(&turns);
    assert_eq!(received.len(), turns.len(), "one upstream request per turn");
    let mut fitted = 0;
    for (t, got) in turns.iter().zip(&received) {
        let body = got["body"].as_str().unwrap();
        if got["body_sha256"] == sha256(&t.sent) {
            continue;
        }
        fitted += 1;
        // Only whole thinking blocks went: everything else is what the client sent.
        assert_eq!(without_thinking(body), without_thinking(&t.sent));
        let (kept, sent) = (signatures(body), signatures(&t.sent));
        assert!(kept.len() < sent.len(), "a fitted request lost blocks");
        assert!(kept.iter().all(|s| sent.contains(s)), "no block was edited");
    }
    // The move to bob, bob's second turn (alice's blocks still there), the move back, and
    // alice's turn after it (bob's blocks still there).
    assert_eq!(
        fitted, 4,
        "fitted exactly the requests that carried another account's blocks"
    );
    assert_eq!(received[0]["body_sha256"], sha256(&turns[0].sent));
    assert_eq!(received[1]["body_sha256"], sha256(&turns[1].sent));
    let metrics = metrics_text(&r.daemon.url).await;
    assert!(metrics.contains("ccs_continuity_fits_total 4"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fitting_off_the_refusing_model_ends_the_conversation_at_the_move() {
    let r = rig_on(world("claude-opus-5-5", ThinkingBinding::Reject), |c| {
        c.continuity.fit = ccs::config::On(false)
    })
    .await;
    let (turns, _) = tool_loop_with_moves(&r, "claude-opus-5-5", json!({"type": "adaptive"})).await;
    assert_eq!(turns.len(), 3, "the turn after the move failed");
    assert_eq!(turns[2].status, 400);
    assert!(
        turns[2]
            .error
            .contains("Invalid `signature` in `thinking` block"),
        "{}",
        turns[2].error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_that_drop_or_accept_get_every_body_as_it_was_sent() {
    for (model, binding) in [
        ("claude-sonnet-5-5", ThinkingBinding::Drop),
        ("claude-opus-5-5", ThinkingBinding::Accept),
    ] {
        let r = rig_on(world(model, binding), |_| {}).await;
        // Asking the API to list what it dropped (the header passes through like any other).
        let mut c = Conversation::new(model, json!({"type": "adaptive"}), 5);
        c.beta = Some("thinking-binding-controls-2026-08-01");
        let (turns, received) = moving_tool_loop(&r, c).await;
        assert_every_turn_answered(&turns);
        for (t, got) in turns.iter().zip(&received) {
            assert_eq!(
                got["body_sha256"],
                sha256(&t.sent),
                "{model}: byte for byte"
            );
        }
        let c = counters(&r.sim.url()).await;
        let dropped: u64 = [A, B]
            .iter()
            .map(|e| c[*e]["thinking_dropped"].as_u64().unwrap())
            .sum();
        match binding {
            ThinkingBinding::Drop => assert!(dropped > 0, "{model}: the API dropped them: {c}"),
            _ => assert_eq!(dropped, 0, "{model}: {c}"),
        }
        // ccs counts what the answers said the API dropped: the simulator's own count.
        let metrics = metrics_text(&r.daemon.url).await;
        assert!(
            metrics.contains(&format!(
                "ccs_continuity_api_dropped_blocks_total {dropped}\n"
            )),
            "{model}: {metrics}"
        );
        assert!(
            metrics.contains("ccs_continuity_fits_total 0\n"),
            "{model}: nothing fitted: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_refusing_model_is_cured_by_one_retry_and_learned() {
    // A model ccs has no default for, refusing foreign blocks: the first move meets a 400,
    // ccs fits and retries once on the same account, and fits the next moves up front.
    let r = rig_on(world("fable-9", ThinkingBinding::Reject), |_| {}).await;
    let (turns, received) = tool_loop_with_moves(&r, "fable-9", json!({"type": "adaptive"})).await;
    assert_every_turn_answered(&turns);
    assert_eq!(
        received.len(),
        turns.len() + 1,
        "exactly one retry: the first move's"
    );
    // Had the model not been learned, the move back would have cost a second retry.
    let metrics = metrics_text(&r.daemon.url).await;
    assert!(
        metrics.contains("ccs_continuity_fits_after_400_total 1"),
        "{metrics}"
    );
    let (_, status) = manage(&r.daemon.url, Method::GET, "/status", None).await;
    assert_eq!(
        status["continuity"]["learned_reject"],
        json!(["fable-9"]),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_thinking_in_a_tool_loop_goes_without_thinking_after_a_move() {
    // An older model with manual thinking: the final assistant turn of a running tool loop
    // must open with a thinking block, and after a move it cannot keep the one it had.
    let r = rig_on(world("claude-opus-4-6", ThinkingBinding::Reject), |_| {}).await;
    let (turns, received) = tool_loop_with_moves(
        &r,
        "claude-opus-4-6",
        json!({"type": "enabled", "budget_tokens": 1024}),
    )
    .await;
    assert_every_turn_answered(&turns);
    let lowered: Vec<bool> = received
        .iter()
        .map(|g| {
            let v: Value = serde_json::from_str(g["body"].as_str().unwrap()).unwrap();
            v["thinking"]["type"] == "disabled"
        })
        .collect();
    assert_eq!(lowered[..2], [false, false], "{lowered:?}");
    assert!(
        lowered[2],
        "the move in the loop turned thinking off: {lowered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_made_each_block_survives_a_restart() {
    let r = rig_on(world("claude-opus-4-6", ThinkingBinding::Reject), |_| {}).await;
    let mut c = Conversation::new("claude-opus-4-6", json!({"type": "adaptive"}), 6);
    // Two turns on alice, two on bob.
    for n in 0..4 {
        if n == 2 {
            pause(&r.daemon.url, A, true).await;
        }
        let (t, more) = c.turn(&r.daemon.url).await;
        assert_eq!(t.status, 200, "{}", t.error);
        assert!(more);
    }
    let r = tokio::task::block_in_place(|| r.restarted(|_| {}));
    pause(&r.daemon.url, A, false).await;
    pause(&r.daemon.url, B, true).await;
    let (t, _) = c.turn(&r.daemon.url).await;
    assert_eq!(t.status, 200, "{}", t.error);
    let received = sim_get(&r.sim.url(), "/sim/requests").await;
    let last = received.as_array().unwrap().last().unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string();
    let (kept, sent) = (signatures(&last), signatures(&t.sent));
    assert_eq!(sent.len(), 4);
    assert_eq!(
        kept,
        sent[..2].to_vec(),
        "alice's own blocks were known after the restart, bob's went"
    );
}

/// The number of blocks the shared store names for `session` (`thinking:S`), once it names
/// `n` (the answers' writes go to Redis behind them).
async fn wait_shared_blocks(redis_url: &str, session: &str, n: u64) {
    let client = ::redis::Client::open(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("pool:thinking:{session}");
    for _ in 0..1000 {
        let have: u64 = ::redis::cmd("HLEN")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        if have == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("Redis never named {n} blocks of {session}");
}

async fn wait_paused(daemon: &str, who: &str, paused: bool) {
    for _ in 0..1000 {
        if accounts(daemon)
            .await
            .iter()
            .any(|a| a["email"] == who && a["paused"] == paused)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{daemon} never saw {who} paused={paused}");
}

fn last_received(received: &Value) -> String {
    received.as_array().unwrap().last().unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_a_shared_pool_know_who_made_each_block() {
    // Two daemons on one Redis, a refusing model, the conversation's turns spread over both:
    // each daemon knows the blocks the other relayed, so a turn staying on its account goes
    // untouched and a move removes exactly the other account's blocks.
    let redis = common::redis::RedisServer::start();
    let shared = |c: &mut ccs::config::Config| {
        c.store.backend = ccs::config::Backend::Redis;
        c.store.redis.url = Some(redis.url());
        c.store.redis.prefix = "pool".into();
    };
    let r = rig_on(world("claude-opus-4-6", ThinkingBinding::Reject), shared).await;
    let (_home2, paths2, mut config2) = home_for(&r.sim.url());
    shared(&mut config2);
    let clock: ccs_actors::SharedClock = std::sync::Arc::new(r.sim.clock.clone().unwrap());
    let peer = tokio::task::block_in_place(|| {
        ccs::daemon::DaemonHandle::start(paths2, config2, clock).expect("the peer starts")
    });
    wait_fresh(&peer.url, 2).await;
    let (one, two) = (r.daemon.url.as_str(), peer.url.as_str());
    let mut c = Conversation::new("claude-opus-4-6", json!({"type": "adaptive"}), 8);

    // Two turns on alice through the first daemon, the third through the peer: still alice's.
    for _ in 0..2 {
        let (t, more) = c.turn(one).await;
        assert_eq!(t.status, 200, "{}", t.error);
        assert!(more);
    }
    wait_shared_blocks(&redis.url(), &c.session, 2).await;
    let (t, _) = c.turn(two).await;
    assert_eq!(t.status, 200, "{}", t.error);
    let received = sim_get(&r.sim.url(), "/sim/requests").await;
    assert_eq!(
        received.as_array().unwrap().last().unwrap()["body_sha256"],
        sha256(&t.sent),
        "the peer knew alice made the blocks: nothing to fit"
    );
    let metrics = metrics_text(two).await;
    assert!(
        metrics.contains("ccs_continuity_fits_total 0\n"),
        "{metrics}"
    );

    // A move to bob through the first daemon: alice's three blocks go.
    wait_shared_blocks(&redis.url(), &c.session, 3).await;
    pause(two, A, true).await;
    wait_paused(one, A, true).await;
    let before = sim_get(&r.sim.url(), "/sim/requests")
        .await
        .as_array()
        .unwrap()
        .len();
    let (t, _) = c.turn(one).await;
    assert_eq!(t.status, 200, "{}", t.error);
    let received = sim_get(&r.sim.url(), "/sim/requests").await;
    let new: Vec<String> = received.as_array().unwrap()[before..]
        .iter()
        .map(|r| {
            format!(
                "{} signatures, auth {}",
                signatures(r["body"].as_str().unwrap()).len(),
                r["headers"]
            )
        })
        .collect();
    assert!(
        signatures(&last_received(&received)).is_empty(),
        "{new:#?}\n{:?}",
        accounts(one).await
    );
    assert_eq!(signatures(&t.sent).len(), 3);

    // The move back to alice through the peer: alice's blocks stay, bob's goes.
    wait_shared_blocks(&redis.url(), &c.session, 4).await;
    pause(one, A, false).await;
    pause(one, B, true).await;
    wait_paused(two, A, false).await;
    wait_paused(two, B, true).await;
    let (t, _) = c.turn(two).await;
    assert_eq!(t.status, 200, "{}", t.error);
    let received = sim_get(&r.sim.url(), "/sim/requests").await;
    let (kept, sent) = (signatures(&last_received(&received)), signatures(&t.sent));
    assert_eq!(sent.len(), 4);
    assert_eq!(kept, sent[..3].to_vec(), "bob's block went, alice's stayed");
    tokio::task::block_in_place(|| peer.stop()).expect("the peer stops");
}
