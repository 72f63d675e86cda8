//! HTTP glue shared by the four services (feature `actix`): operational routes
//! (`/healthz`, `/readyz`, `/metrics`), request metrics, CORS, the client address, and
//! building a server that stops on a shutdown token.

use crate::config::HttpConfig;
use crate::net::TrustedProxies;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::get;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, HttpServer, web};
use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa_actix_web::UtoipaApp;

type ReadinessCheck = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// What the operational routes need: a readiness check, the metrics handle and the
/// shutdown token (readiness turns 503 as soon as shutdown starts).
#[derive(Clone)]
pub struct Ops {
    check: Arc<ReadinessCheck>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
    before_render: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Ops {
    /// `check` says whether the service's dependencies answer; `Err` carries the reason.
    pub fn new<F>(metrics: PrometheusHandle, shutdown: CancellationToken, check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        Self {
            check: Arc::new(check),
            metrics,
            shutdown,
            before_render: None,
        }
    }

    /// Runs `refresh` before each scrape of `/metrics` (gauges read on demand, such as
    /// connection pool usage).
    pub fn refreshing(mut self, refresh: impl Fn() + Send + Sync + 'static) -> Self {
        self.before_render = Some(Arc::new(refresh));
        self
    }
}

/// The application every service starts from: request metrics named `<metrics_prefix>_http_*`,
/// a span per request when spans are exported, CORS when `cors_origins` is given, a
/// deadline on reading request bodies, and OpenAPI collection of the routes registered on it.
pub fn app(
    metrics_prefix: &'static str,
    cors_origins: Option<&str>,
    body_read_timeout: std::time::Duration,
) -> UtoipaApp<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody + use<>>,
        Error = actix_web::Error,
        InitError = (),
    > + use<>,
> {
    use utoipa_actix_web::AppExt;
    let names = RequestMetricNames::of(metrics_prefix);
    let cors_layer = actix_web::middleware::Condition::new(
        cors_origins.is_some(),
        cors(cors_origins.unwrap_or("")),
    );
    actix_web::App::new()
        .wrap(actix_web::middleware::from_fn(move |r, n| {
            crate::body_deadline::limit_body_read(body_read_timeout, r, n)
        }))
        .wrap(actix_web::middleware::from_fn(refuse_nul_in_url))
        .wrap(actix_web::middleware::from_fn(move |r, n| {
            record_request(names, r, n)
        }))
        .wrap(request_tracing())
        .wrap(cors_layer)
        .into_utoipa_app()
}

/// Answers 400 to a URL carrying a NUL character (`%00`) in its path or query: no route
/// takes one, and PostgreSQL would refuse it as text deep inside a handler (a 500 before).
///
/// # Errors
/// The 400, or the inner service's error.
pub async fn refuse_nul_in_url<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let uri = req.uri().to_string();
    if uri.contains('\0') || uri.to_ascii_lowercase().contains("%00") {
        let problem = crate::problem::Problem::code(
            actix_web::http::StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .details(vec!["the URL must not contain NUL characters (%00)".into()]);
        return Err(actix_web::error::InternalError::from_response(
            "NUL in URL",
            problem.response(),
        )
        .into());
    }
    next.call(req).await
}

/// Adds `/healthz`, `/readyz` and `/metrics` (documented in the OpenAPI document).
pub fn with_ops<T>(app: UtoipaApp<T>, ops: Ops) -> UtoipaApp<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    app.app_data(web::Data::new(ops))
        .service(healthz)
        .service(readyz)
        .service(render_metrics)
}

/// Serves the OpenAPI document of everything registered so far at `/openapi.json` and
/// hands back the plain app. `bearer_schemes` names the bearer-token security schemes the
/// operations refer to. Call it last.
pub fn with_openapi<T>(
    app: UtoipaApp<T>,
    title: &str,
    description: &str,
    bearer_schemes: &[&str],
) -> actix_web::App<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    let (app, mut api) = app.split_for_parts();
    api.info.title = title.to_string();
    api.info.description = Some(description.to_string());
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = api
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    for scheme in bearer_schemes {
        components.add_security_scheme(
            *scheme,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
    crate::runtime::openapi::complete(&mut api);
    let document = web::Data::new(api);
    app.app_data(document)
        .route("/openapi.json", web::get().to(openapi_json))
        .default_service(web::to(fallback))
}

/// What no route took: `405` with `Allow` for a path the service documents under other
/// methods, `404` for anything else.
async fn fallback(req: HttpRequest) -> HttpResponse {
    use actix_web::http::StatusCode;
    let allowed = req
        .app_data::<web::Data<utoipa::openapi::OpenApi>>()
        .map(|api| documented_methods(api, req.path()))
        .unwrap_or_default();
    if allowed.is_empty() {
        return crate::problem::Problem::message(StatusCode::NOT_FOUND, "Not found").response();
    }
    let allow = allowed.join(", ");
    let mut answer = crate::problem::Problem::message(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed here; allowed: {allow}", req.method()),
    )
    .response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        answer
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    answer
}

/// The methods `api` documents for a request to `path` (`{param}` segments match any one
/// segment), with `HEAD` beside `GET`; empty when no documented path matches.
pub fn documented_methods(api: &utoipa::openapi::OpenApi, path: &str) -> Vec<&'static str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let matches = |template: &str| {
        let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
        parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| (p.starts_with('{') && p.ends_with('}') && !s.is_empty()) || p == s)
    };
    let mut methods = Vec::new();
    for (template, item) in &api.paths.paths {
        if !matches(template) {
            continue;
        }
        for (name, op) in [
            ("GET", &item.get),
            ("HEAD", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ] {
            if op.is_some() && !methods.contains(&name) {
                methods.push(name);
            }
        }
    }
    methods
}

async fn openapi_json(api: web::Data<utoipa::openapi::OpenApi>) -> HttpResponse {
    HttpResponse::Ok().json(api.get_ref())
}

/// `/healthz` and `/readyz`: `ok`, `ready` or `unavailable`, and why when unavailable.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Health {
    status: String,
    reason: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(tag = "operations", responses((status = 200, description = "The process is alive", body = Health)))]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: dependencies reachable and not shutting down.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Redis (and PostgreSQL where used) answer", body = Health),
        (status = 503, description = "A dependency is unreachable or shutdown has begun; `reason` says which", body = Health),
    )
)]
#[get("/readyz")]
async fn readyz(ops: web::Data<Ops>) -> HttpResponse {
    if ops.shutdown.is_cancelled() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "reason": "shutting down"}));
    }
    match (ops.check)().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "reason": reason})),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(tag = "operations", responses((status = 200, description = "Metrics in the Prometheus text format", body = String, content_type = "text/plain")))]
#[get("/metrics")]
async fn render_metrics(ops: web::Data<Ops>) -> HttpResponse {
    if let Some(refresh) = &ops.before_render {
        refresh();
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(ops.metrics.render())
}

/// Records `<prefix>_http_requests_total{method,route,status}` and
/// `<prefix>_http_request_duration_seconds{method,route}`; [`app`] wraps every service
/// with it.
///
/// # Errors
/// Passes on the inner service's error.
pub async fn record_request<B: MessageBody>(
    names: RequestMetricNames,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let res = next.call(req).await;
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    let labels = [("method", method), ("route", route)];
    metrics::histogram!(names.duration, &labels).record(start.elapsed().as_secs_f64());
    let [m, r] = labels;
    metrics::counter!(names.requests, &[m, r, ("status", status.to_string())]).increment(1);
    res
}

/// The request metric names of one service prefix.
#[derive(Clone, Copy)]
pub struct RequestMetricNames {
    requests: &'static str,
    duration: &'static str,
}

impl RequestMetricNames {
    /// The names for `prefix`, built once per prefix for the life of the process (they
    /// were `format!`ed on every request).
    pub fn of(prefix: &'static str) -> Self {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock, PoisonError};
        static NAMES: OnceLock<Mutex<HashMap<&'static str, RequestMetricNames>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *names.entry(prefix).or_insert_with(|| Self {
            requests: Box::leak(format!("{prefix}_http_requests_total").into_boxed_str()),
            duration: Box::leak(format!("{prefix}_http_request_duration_seconds").into_boxed_str()),
        })
    }
}

/// A span per request, continuing an incoming `traceparent`, when spans are exported
/// (otherwise a no-op, so requests pay nothing for it).
pub fn request_tracing() -> actix_web::middleware::Condition<
    tracing_actix_web::TracingLogger<tracing_actix_web::DefaultRootSpanBuilder>,
> {
    actix_web::middleware::Condition::new(
        crate::telemetry::exporting(),
        tracing_actix_web::TracingLogger::default(),
    )
}

/// CORS from `CORS_ORIGINS` (`*` or a comma-separated list of origins).
pub fn cors(origins: &str) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            "content-type",
            "authorization",
            "idempotency-key",
            "last-event-id",
            "traceparent",
            "tracestate",
        ])
        .expose_headers(["retry-after", "x-request-id"])
        .max_age(3600);
    let list = crate::config::split_list(origins);
    if list.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in &list {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}

/// The client's address (see [`TrustedProxies::client_ip`]).
pub fn client_ip(req: &HttpRequest, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    Some(trusted.client_ip(peer, xff))
}

/// Binds `cfg.bind_addr` (port 0 picks a free port) and returns the listener and its port.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(cfg: &HttpConfig) -> std::io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind(&cfg.bind_addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind BIND_ADDR={}: {e}", cfg.bind_addr),
        )
    })?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Starts an HTTP server on `listener` that drains in-flight requests and stops when
/// `shutdown` is cancelled (bounded by `SHUTDOWN_TIMEOUT_S`).
///
/// # Errors
/// When the listener cannot be used.
pub fn serve<F, I, S, B>(
    factory: F,
    listener: TcpListener,
    cfg: &HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: ServiceFactory<actix_http::Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    <S::Service as actix_web::dev::Service<actix_http::Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    serve_with_on_connect(factory, listener, cfg, shutdown, |_, _| {})
}

/// [`serve`], running `on_connect` for every new connection (its socket, and the
/// connection's extensions that requests read with `HttpRequest::conn_data`).
///
/// # Errors
/// When the listener cannot be used.
pub fn serve_with_on_connect<F, I, S, B>(
    factory: F,
    listener: TcpListener,
    cfg: &HttpConfig,
    shutdown: CancellationToken,
    on_connect: fn(&dyn std::any::Any, &mut actix_http::Extensions),
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: ServiceFactory<actix_http::Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    <S::Service as actix_web::dev::Service<actix_http::Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let mut server = HttpServer::new(factory)
        .on_connect(on_connect)
        .shutdown_timeout(cfg.shutdown_timeout_s)
        .shutdown_signal(shutdown.cancelled_owned());
    if cfg.http_workers > 0 {
        server = server.workers(cfg.http_workers);
    }
    Ok(server.listen(listener)?.run())
}
