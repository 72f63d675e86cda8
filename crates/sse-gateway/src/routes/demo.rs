//! The demo page: plain HTML, CSS and JavaScript, no build step, served from the binary.

use crate::startup::AppState;
use actix_web::{HttpResponse, get, web};

const INDEX: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE: &str = include_str!("../../static/style.css");

#[utoipa::path(tag = "demo", responses((status = 200, description = "The demo page", body = String, content_type = "text/html")))]
#[get("/")]
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX)
}

#[utoipa::path(tag = "demo", responses((status = 200, description = "The demo page's script", body = String, content_type = "text/javascript")))]
#[get("/app.js")]
pub async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(APP_JS)
}

#[utoipa::path(tag = "demo", responses((status = 200, description = "The demo page's style sheet", body = String, content_type = "text/css")))]
#[get("/style.css")]
pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}

/// How long the demo's feed token lasts (the page asks again when it reloads).
const DEMO_FEED_TOKEN_SECONDS: i64 = 24 * 3600;

/// Where the page sends votes and reads results (empty: its own origin), and the demo
/// user whose notification feed the bell shows (with a feed token), when configured.
#[utoipa::path(tag = "demo", responses((status = 200, description = "`{ingest_url, stats_url, feed_user?, feed_token?}`", body = super::docs::DemoConfig)))]
#[get("/config.json")]
pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    let mut answer = serde_json::json!({
        "ingest_url": state.settings.public_ingest_url,
        "stats_url": state.settings.public_stats_url,
    });
    let user = &state.settings.demo_feed_user;
    let secret = state.settings.stream_token_secret.expose();
    if !user.is_empty() && !secret.is_empty() {
        answer["feed_user"] = user.as_str().into();
        answer["feed_token"] = domain::stream_token::mint(
            secret.as_bytes(),
            &domain::stream_token::feed_scope(user),
            chrono::Utc::now().timestamp() + DEMO_FEED_TOKEN_SECONDS,
        )
        .into();
    }
    HttpResponse::Ok().json(answer)
}
