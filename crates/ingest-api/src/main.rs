use domain::config::ServiceConfig;
use ingest_api::config::Config;
use ingest_api::startup::Application;

/// Every request allocates and frees its body, parsed JSON and answer across threads:
/// jemalloc's per-thread caches do that for less than glibc's allocator (bench/results).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = domain::telemetry::init("ingest-api");
    let config = Config::from_env()?;
    tracing::info!(?config, "starting");
    let shutdown = domain::shutdown::on_signal();
    let app = Application::build(config, shutdown).await?;
    tracing::info!(port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
