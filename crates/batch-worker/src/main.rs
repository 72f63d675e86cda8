//! `batch-worker` runs the worker; `batch-worker migrate` applies migrations and exits.

use batch_worker::config::Config;
use batch_worker::startup::Application;
use domain::config::ServiceConfig;

/// Deliveries allocate and free requests, bodies and records by the ten thousand a second:
/// glibc's allocator was a fifth of the webhook lane's profile (`perf`); jemalloc, as in
/// ingest-api, takes most of that back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = domain::telemetry::init("batch-worker");
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        let pg: domain::config::PostgresConfig = domain::config::from_env()?;
        let applied = domain::postgres::migrate(&domain::postgres::pool(&pg)?).await?;
        tracing::info!(?applied, "migrations up to date");
        return Ok(());
    }
    let config = Config::from_env()?;
    tracing::info!(?config, "starting");
    let app = Application::build(config, domain::shutdown::on_signal()).await?;
    tracing::info!(port = app.port(), worker_ids = ?app.worker_ids(), "running");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
