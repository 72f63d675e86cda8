//! `batch-worker` runs the worker; `batch-worker migrate` applies migrations and exits.

use batch_worker::config::Config;
use batch_worker::startup::Application;
use domain::config::ServiceConfig;

/// Deliveries allocate and free requests, bodies and records by the ten thousand a second:
/// glibc's allocator was a fifth of the webhook lane's profile (`perf`); jemalloc, as in
/// ingest-api, takes most of that back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A runtime of one thread per core, not actix's single thread: an event lane's CPU work
/// (parsing, deriving and merging a batch: a few hundred ms of a 20,000-event batch) held
/// that thread, so the other lane could not send its next statement, and the
/// notification fan-out, the heartbeats and the deliveries waited behind it (a feed
/// append took 1.7 ms during a drain, 0.17 ms after). The HTTP server keeps its own
/// worker threads.
fn main() -> anyhow::Result<()> {
    actix_web::rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the Tokio runtime: {e}"))
    })
    .block_on(run())
}

async fn run() -> anyhow::Result<()> {
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
