use domain::config::ServiceConfig;
use sse_gateway::config::Config;
use sse_gateway::startup::Application;

/// Thousands of streams come and go: jemalloc's background threads return their memory to
/// the system, glibc's allocator kept it (the e2e test of rounds of streams measures it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = domain::telemetry::init("sse-gateway");
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background purging is off");
    }
    let config = Config::from_env()?;
    tracing::info!(?config, "starting");
    let app = Application::build(config, domain::shutdown::on_signal()).await?;
    tracing::info!(port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
