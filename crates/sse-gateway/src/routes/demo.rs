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

/// Where the page sends votes and reads results (empty: its own origin).
#[utoipa::path(tag = "demo", responses((status = 200, description = "`{ingest_url, stats_url}`", body = super::docs::DemoConfig)))]
#[get("/config.json")]
pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "ingest_url": state.settings.public_ingest_url,
        "stats_url": state.settings.public_stats_url,
    }))
}
