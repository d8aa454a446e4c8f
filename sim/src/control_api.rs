//! The simulator's `/sim/*` control API: what tests and `ccs sim` use to read the model's
//! state and counters, add users, set budgets, plant faults, revoke grants, script the next
//! login, see the last Messages request as it arrived, and move a manual clock.
//!
//! Must not: decide anything the model should (each handler is one call into it).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use super::scenario::{FaultSpec, User};
use super::server::State;

async fn sim_state(st: State) -> HttpResponse {
    HttpResponse::Ok().json(st.model.state())
}

async fn sim_counters(st: State) -> HttpResponse {
    let map: serde_json::Map<String, Value> = st
        .model
        .counters()
        .into_iter()
        .map(|(e, c)| (e, serde_json::to_value(c).unwrap_or(Value::Null)))
        .collect();
    HttpResponse::Ok().json(map)
}

async fn sim_add_user(st: State, user: web::Json<User>) -> HttpResponse {
    st.model.add_user(user.into_inner());
    HttpResponse::Ok().json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct Budget {
    five_hour: Option<u64>,
    seven_day: Option<u64>,
}

async fn sim_budget(st: State, email: web::Path<String>, b: web::Json<Budget>) -> HttpResponse {
    if st.model.set_budget(&email, b.five_hour, b.seven_day) {
        HttpResponse::Ok().json(json!({"ok": true}))
    } else {
        HttpResponse::NotFound().json(json!({"error": format!("no user {email}")}))
    }
}

async fn sim_last_request(st: State) -> HttpResponse {
    let last = st.last.lock().unwrap_or_else(|p| p.into_inner());
    match last.as_ref() {
        Some(r) => {
            let digest = sha2::Sha256::digest(&r.body);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            HttpResponse::Ok().json(json!({
                "path_and_query": r.path_and_query,
                "version": r.version,
                "headers": r.headers,
                "body_len": r.body.len(),
                "body_sha256": hex,
            }))
        }
        None => HttpResponse::NotFound().json(json!({"error": "no Messages request yet"})),
    }
}

/// The last Messages requests as they arrived, oldest first: each body's digest, length and
/// text (lossy UTF-8), so a test can see byte for byte what a proxy sent upstream.
async fn sim_requests(st: State) -> HttpResponse {
    let all = st.received.lock().unwrap_or_else(|p| p.into_inner());
    let list: Vec<Value> = all
        .iter()
        .map(|r| {
            let digest = sha2::Sha256::digest(&r.body);
            json!({
                "path_and_query": r.path_and_query,
                "headers": r.headers,
                "body_len": r.body.len(),
                "body_sha256": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "body": String::from_utf8_lossy(&r.body),
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}

async fn sim_add_fault(st: State, f: web::Json<FaultSpec>) -> HttpResponse {
    let id = st.model.add_fault(f.into_inner());
    HttpResponse::Ok().json(json!({"id": id}))
}

async fn sim_clear_faults(st: State) -> HttpResponse {
    st.model.clear_faults();
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn sim_revoke(st: State, email: web::Path<String>) -> HttpResponse {
    if st.model.revoke(&email) {
        HttpResponse::Ok().json(json!({"ok": true}))
    } else {
        HttpResponse::NotFound().json(json!({"error": format!("no user {email}")}))
    }
}

#[derive(Deserialize)]
struct NextLogin {
    email: String,
    #[serde(default)]
    deny: bool,
}

async fn sim_next_login(st: State, n: web::Json<NextLogin>) -> HttpResponse {
    if st.model.next_login(&n.email, n.deny) {
        HttpResponse::Ok().json(json!({"ok": true}))
    } else {
        HttpResponse::NotFound().json(json!({"error": format!("no user {}", n.email)}))
    }
}

#[derive(Deserialize)]
struct Advance {
    secs: u64,
}

async fn sim_advance(st: State, a: web::Json<Advance>) -> HttpResponse {
    match &st.clock {
        Some(c) => {
            c.advance(Duration::from_secs(a.secs));
            HttpResponse::Ok().json(json!({"now": st.model.now().as_secs()}))
        }
        None => HttpResponse::Conflict().json(json!({
            "error": "the simulator runs on the system clock; start it with --manual-clock to move time"
        })),
    }
}

/// The `/sim/*` routes on `cfg`.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sim/state", web::get().to(sim_state))
        .route("/sim/counters", web::get().to(sim_counters))
        .route("/sim/users", web::post().to(sim_add_user))
        .route("/sim/users/{email}/budget", web::post().to(sim_budget))
        .route("/sim/users/{email}/revoke", web::post().to(sim_revoke))
        .route("/sim/last-request", web::get().to(sim_last_request))
        .route("/sim/requests", web::get().to(sim_requests))
        .route("/sim/faults", web::post().to(sim_add_fault))
        .route("/sim/faults", web::delete().to(sim_clear_faults))
        .route("/sim/next-login", web::post().to(sim_next_login))
        .route("/sim/clock/advance", web::post().to(sim_advance));
}
