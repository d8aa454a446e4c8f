//! The dashboard: pages served by the daemon under `/dashboard`, with their script and style
//! compiled into the binary (`assets/`; no CDN, no build step). The pages read and change
//! everything through the management API (`/v0/management/*`, shapes in `api.rs`), logged in
//! by a session cookie instead of the secret (`proxy/sessions.rs`).
//!
//! Routes here: the page (the login form until a session exists), its assets, login with the
//! secret or a one-time link, logout, and `/callback`, where a browser login of a new account
//! started from the Accounts page comes back.
//!
//! Must not: serve the app's script or any figure without a session, accept a login from
//! another origin, or put a secret in a page.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::{Deserialize, Serialize};

use crate::api;
use crate::oauth::login::Answer;
use crate::proxy::guard::{origin_allowed, ClientKey};
use crate::proxy::sessions::{cookie_of, set_cookie, SESSION_TTL};
use crate::proxy::Ctx;

type Data = web::Data<Ctx>;

const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_HTML: &str = include_str!("assets/app.html");
const LOGIN_JS: &str = include_str!("assets/login.js");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Headers of every dashboard answer: its own scripts only, never framed, never cached, no
/// `Referer` leaving it.
fn secured(status: actix_web::http::StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ))
    .insert_header((header::X_FRAME_OPTIONS, "DENY"))
    .insert_header((header::CACHE_CONTROL, "no-store"))
    .insert_header((header::REFERRER_POLICY, "no-referrer"))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    b
}

fn logged_in(ctx: &Ctx, req: &HttpRequest) -> bool {
    cookie_of(req.headers(), ctx.tls()).is_some_and(|id| ctx.access.sessions.csrf(id).is_some())
}

async fn page(ctx: Data, req: HttpRequest) -> HttpResponse {
    let html = if logged_in(&ctx, &req) {
        APP_HTML
    } else {
        LOGIN_HTML
    };
    secured(actix_web::http::StatusCode::OK)
        .content_type("text/html; charset=utf-8")
        .body(html)
}

async fn asset(ctx: Data, req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    let (body, kind, public) = match name.as_str() {
        "login.js" => (LOGIN_JS, "text/javascript; charset=utf-8", true),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8", false),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8", true),
        _ => return secured(actix_web::http::StatusCode::NOT_FOUND).finish(),
    };
    if !public && !logged_in(&ctx, &req) {
        return secured(actix_web::http::StatusCode::UNAUTHORIZED).finish();
    }
    secured(actix_web::http::StatusCode::OK)
        .content_type(kind)
        .body(body)
}

#[derive(Deserialize)]
struct LoginBody {
    /// The management secret, typed into the form.
    secret: Option<String>,
    /// A one-time link's token (from the address's fragment).
    link: Option<String>,
}

#[derive(Serialize)]
struct LoggedIn {
    csrf: String,
}

fn refused(status: u16, message: &str) -> HttpResponse {
    secured(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::FORBIDDEN),
    )
    .json(api::ApiError {
        error: message.to_string(),
    })
}

fn same_origin(req: &HttpRequest) -> bool {
    let h = req.headers();
    let host = crate::proxy::guard::request_host(h, req.uri());
    let origin = h.get("origin").map(|v| v.to_str().unwrap_or("null"));
    origin_allowed(origin, host)
}

async fn do_login(ctx: Data, req: HttpRequest, body: web::Json<LoginBody>) -> HttpResponse {
    if !same_origin(&req) {
        return refused(403, "a login from another web page is refused");
    }
    let by_secret = body
        .secret
        .as_deref()
        .is_some_and(|s| ctx.secret_ok(s.trim()));
    let by_link = !by_secret
        && body
            .link
            .as_deref()
            .is_some_and(|l| ctx.access.sessions.redeem(l));
    if !(by_secret || by_link) {
        let client = ClientKey::of(req.peer_addr().map(|a| a.ip()));
        if ctx.access.throttle.punish(client).await {
            return refused(429, "too many failed attempts: wait a minute and try again");
        }
        return refused(
            401,
            if body.link.is_some() {
                "this login link is used up or expired: run `ccs config` again for a new one"
            } else {
                "wrong management secret: it is cliproxy.auth.management_secret in config.yaml, \
                 else management_secret in cliproxy/keys.json under CCS_HOME"
            },
        );
    }
    let (id, csrf) = ctx.access.sessions.open();
    let cookie = set_cookie(ctx.tls(), &id, SESSION_TTL.as_secs());
    let mut resp = secured(actix_web::http::StatusCode::OK).json(LoggedIn { csrf });
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The page's CSRF token (the page is static; it asks once it is loaded).
async fn session(ctx: Data, req: HttpRequest) -> HttpResponse {
    match cookie_of(req.headers(), ctx.tls()).and_then(|id| ctx.access.sessions.csrf(id)) {
        Some(csrf) => secured(actix_web::http::StatusCode::OK).json(LoggedIn { csrf }),
        None => refused(401, "not logged in"),
    }
}

async fn logout(ctx: Data, req: HttpRequest) -> HttpResponse {
    if !same_origin(&req) {
        return refused(403, "a logout from another web page is refused");
    }
    if let Some(id) = cookie_of(req.headers(), ctx.tls()) {
        ctx.access.sessions.close(id);
    }
    let mut resp = secured(actix_web::http::StatusCode::OK).json(serde_json::json!({}));
    if let Ok(v) = HeaderValue::from_str(&set_cookie(ctx.tls(), "", 0)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn outcome_page(ctx: &Ctx, ok: bool, message: &str) -> HttpResponse {
    let back = format!("{}/dashboard#accounts", ctx.url);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>ccs: {}</title><link rel=\"stylesheet\" href=\"{}/dashboard/assets/style.css\">\
         </head><body><main class=\"narrow\"><h1>{}</h1><p id=\"outcome\">{}</p>\
         <p>You can close this tab: the dashboard shows the account already.</p>\
         <p><a href=\"{}\">Open the dashboard</a></p></main></body></html>",
        if ok { "logged in" } else { "login failed" },
        escape(&ctx.url),
        if ok {
            "Account logged in"
        } else {
            "Login failed"
        },
        escape(message),
        escape(&back),
    );
    secured(if ok {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::BAD_REQUEST
    })
    .content_type("text/html; charset=utf-8")
    .body(body)
}

/// Where the authority sends the browser back after a login started from the dashboard. It
/// is known by its `state` (random, single use, issued to a logged-in dashboard), not by a
/// cookie: the authority's redirect is a cross-site navigation.
async fn callback(ctx: Data, q: web::Query<CallbackQuery>) -> HttpResponse {
    let Some(state) = q.state.clone() else {
        return outcome_page(&ctx, false, "the address carries no state");
    };
    let Some(attempt) = ctx.access.sessions.take_login(&state) else {
        return outcome_page(
            &ctx,
            false,
            "this answer belongs to no login in progress (it is stale, used, or forged); \
             start again from the Accounts page",
        );
    };
    let q = q.into_inner();
    let answer = Answer::from(api::FinishLogin {
        state,
        code: q.code,
        error: q.error,
        error_description: q.error_description,
    });
    match crate::proxy::manage::complete_login(&ctx, attempt, answer).await {
        Ok((email, added)) => {
            let what = if added.created {
                "added to the pool"
            } else {
                "logged in again (new credentials)"
            };
            outcome_page(&ctx, true, &format!("{email}: {what}."))
        }
        Err(e) => outcome_page(&ctx, false, &e.to_string()),
    }
}

/// The largest login body (a secret or a link token) read before the secret is checked.
const LOGIN_BODY_LIMIT: usize = 4 << 10;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(page))
        .service(
            web::scope("/dashboard")
                .app_data(web::JsonConfig::default().limit(LOGIN_BODY_LIMIT))
                .route("/", web::get().to(page))
                .route("/assets/{name}", web::get().to(asset))
                .route("/login", web::post().to(do_login))
                .route("/logout", web::post().to(logout))
                .route("/session", web::get().to(session)),
        )
        .route("/callback", web::get().to(callback));
}
