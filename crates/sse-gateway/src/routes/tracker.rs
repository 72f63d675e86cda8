//! `GET /tally.js`: the browser tracker (see `docs/tracker.md`), served from the binary,
//! gzip-compressed once at start for the browsers that accept it (every one does).

use actix_web::http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, VARY};
use actix_web::{HttpRequest, HttpResponse, get};
use std::io::Write;
use std::sync::LazyLock;

const TRACKER: &str = include_str!("../../static/tally.js");

static GZIPPED: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into memory cannot fail.
    let _ = encoder.write_all(TRACKER.as_bytes());
    encoder.finish().unwrap_or_default()
});

/// The tracker script: page views (single-page apps too), outbound links, downloads and
/// custom events, without cookies.
#[utoipa::path(
    tag = "tracker",
    responses((status = 200, description = "The tracker script (gzip when accepted); cached for an hour", body = String, content_type = "text/javascript")),
)]
#[get("/tally.js")]
pub async fn tally_js(req: HttpRequest) -> HttpResponse {
    let gzip = req
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut res = HttpResponse::Ok();
    res.content_type("text/javascript; charset=utf-8")
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((VARY, "Accept-Encoding"))
        .insert_header(("access-control-allow-origin", "*"));
    if gzip && !GZIPPED.is_empty() {
        res.insert_header((CONTENT_ENCODING, "gzip"))
            .body(GZIPPED.as_slice())
    } else {
        res.body(TRACKER)
    }
}
