//! `batch-worker` runs the worker; `batch-worker migrate` applies migrations and exits.

use batch_worker::config::Config;
use batch_worker::startup::Application;
use domain::config::ServiceConfig;

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
