//! The dashboard, `GET /dashboard/{site_id}`: one page in the manner of Plausible's, plain
//! HTML, CSS and JavaScript served from the binary, reading only the public API (the query
//! API on stats-api, the site's live stream here).

use actix_web::{HttpResponse, get, web};

const PAGE: &str = include_str!("../../static/dashboard.html");
const SCRIPT: &str = include_str!("../../static/dashboard.js");
const STYLE: &str = include_str!("../../static/dashboard.css");

/// The page is the same for every site: the script reads the site from the path.
#[utoipa::path(tag = "dashboard", params(("site_id" = String, Path, description = "The site whose stats the page shows")), responses((status = 200, description = "The dashboard page (its script asks `POST /v2/query` of stats-api, with the `token` query parameter as bearer token when given)", body = String, content_type = "text/html")))]
#[get("/dashboard/{site_id}")]
pub async fn dashboard_page(_site_id: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

#[utoipa::path(tag = "dashboard", responses((status = 200, description = "The dashboard's script", body = String, content_type = "text/javascript")))]
#[get("/dashboard.js")]
pub async fn dashboard_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

#[utoipa::path(tag = "dashboard", responses((status = 200, description = "The dashboard's style sheet", body = String, content_type = "text/css")))]
#[get("/dashboard.css")]
pub async fn dashboard_style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}
