//! PostgreSQL: the pool, the schema migrations, and how failures are classified.

use crate::config::PostgresConfig;
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Schema migrations, applied in order, each once (recorded in `tally_migrations`).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "events_and_rollups",
        include_str!("../../../../migrations/0001_events_and_rollups.sql"),
    ),
    (
        2,
        "polls",
        include_str!("../../../../migrations/0002_polls.sql"),
    ),
    (
        3,
        "sites_and_enrichment",
        include_str!("../../../../migrations/0003_sites_and_enrichment.sql"),
    ),
    (
        4,
        "poll_settings",
        include_str!("../../../../migrations/0004_poll_settings.sql"),
    ),
    (
        5,
        "events_key_with_site",
        include_str!("../../../../migrations/0005_events_key_with_site.sql"),
    ),
    (
        6,
        "events_partitioned",
        include_str!("../../../../migrations/0006_events_partitioned.sql"),
    ),
    (
        7,
        "notifications",
        include_str!("../../../../migrations/0007_notifications.sql"),
    ),
    (
        8,
        "visits",
        include_str!("../../../../migrations/0008_visits.sql"),
    ),
    (
        9,
        "goals_and_funnels",
        include_str!("../../../../migrations/0009_goals_and_funnels.sql"),
    ),
    (
        10,
        "exports",
        include_str!("../../../../migrations/0010_exports.sql"),
    ),
    (
        11,
        "visit_rollups",
        include_str!("../../../../migrations/0011_visit_rollups.sql"),
    ),
    (
        12,
        "visit_rollups_in_site_days",
        include_str!("../../../../migrations/0012_visit_rollups_in_site_days.sql"),
    ),
    (
        13,
        "goal_conversions_in_visit_rollups",
        include_str!("../../../../migrations/0013_goal_conversions_in_visit_rollups.sql"),
    ),
    (
        14,
        "page_day_rollups",
        include_str!("../../../../migrations/0014_page_day_rollups.sql"),
    ),
    (
        15,
        "funnel_steps_in_visits",
        include_str!("../../../../migrations/0015_funnel_steps_in_visits.sql"),
    ),
    (
        16,
        "site_settings_locks",
        include_str!("../../../../migrations/0016_site_settings_locks.sql"),
    ),
    (
        17,
        "visit_sketch_members_pending",
        include_str!("../../../../migrations/0017_visit_sketch_members_pending.sql"),
    ),
    (
        18,
        "goal_recount_in_one_aggregation",
        include_str!("../../../../migrations/0018_goal_recount_in_one_aggregation.sql"),
    ),
    (
        19,
        "visit_week_cells",
        include_str!("../../../../migrations/0019_visit_week_cells.sql"),
    ),
    (
        20,
        "events_waiting_for_site_settings",
        include_str!("../../../../migrations/0020_events_waiting_for_site_settings.sql"),
    ),
    (
        21,
        "page_week_rollups",
        include_str!("../../../../migrations/0021_page_week_rollups.sql"),
    ),
    (
        22,
        "visit_pair_week_rollups",
        include_str!("../../../../migrations/0022_visit_pair_week_rollups.sql"),
    ),
    (
        23,
        "goal_recount_in_start_order",
        include_str!("../../../../migrations/0023_goal_recount_in_start_order.sql"),
    ),
    (
        24,
        "visit_pair_day_rollups",
        include_str!("../../../../migrations/0024_visit_pair_day_rollups.sql"),
    ),
    (
        25,
        "visit_pair_hour_rollups",
        include_str!("../../../../migrations/0025_visit_pair_hour_rollups.sql"),
    ),
];

/// An arbitrary but fixed key, so concurrent migrators wait for each other.
const MIGRATION_LOCK_KEY: i64 = 0x7a11_7001;

/// Builds the pool (connections open on first use). Sessions run in UTC.
///
/// # Errors
/// When `DATABASE_URL` does not parse.
pub fn pool(cfg: &PostgresConfig) -> anyhow::Result<Pool> {
    pool_with_options(cfg, "")
}

/// Builds the pool of a service answering reads that must return in milliseconds (as
/// [`pool`]):
///
/// - with PostgreSQL's JIT compilation off. A statement estimated to cost more than
///   `jit_above_cost` is compiled first, which took 160 ms of a 2 s scan of a site's visits
///   and would be a third of the 130 ms a filtered breakdown reads from a few days of them;
///   the statements it would speed up run for seconds, not milliseconds;
/// - with every execution of a prepared statement planned for its parameters
///   (`plan_cache_mode = force_custom_plan`). After five executions PostgreSQL otherwise
///   tries a generic plan, judged by estimates alone: on the bench database it chose one
///   for the filtered breakdowns through pair cells that took 215 ms instead of 15 ms. A
///   prepared statement still saves its parsing and rewriting.
///
/// # Errors
/// When `DATABASE_URL` does not parse.
pub fn query_pool(cfg: &PostgresConfig) -> anyhow::Result<Pool> {
    pool_with_options(cfg, " -c jit=off -c plan_cache_mode=force_custom_plan")
}

fn pool_with_options(cfg: &PostgresConfig, options: &str) -> anyhow::Result<Pool> {
    let mut pg = tokio_postgres::Config::from_str(&cfg.database_url).map_err(|e| {
        anyhow::anyhow!(
            "DATABASE_URL is not a valid PostgreSQL URL ({}): {e}",
            crate::config::redact_url(&cfg.database_url)
        )
    })?;
    let timeout = Duration::from_millis(cfg.database_connect_timeout_ms);
    pg.connect_timeout(timeout);
    // A server gone without a FIN is noticed in about 30 s, not the kernel's two hours.
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    pg.options(format!(
        "-c TimeZone=UTC -c statement_timeout={}{options}",
        cfg.database_statement_timeout_ms
    ));
    if pg.get_application_name().is_none() {
        pg.application_name("tally");
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.database_pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .context("building the PostgreSQL pool")
}

/// Applies the migrations that have not run yet. Safe to call from several processes at
/// once: they serialise on an advisory lock. Returns the versions applied now.
///
/// # Errors
/// When PostgreSQL is unreachable or a migration fails (then none of this call's
/// migrations is applied).
pub async fn migrate(pool: &Pool) -> anyhow::Result<Vec<i32>> {
    let mut client = pool
        .get()
        .await
        .context("connecting to PostgreSQL to migrate")?;
    let tx = client
        .transaction()
        .await
        .context("starting the migration transaction")?;
    // A migration may rewrite a large table: it is not bounded by statement_timeout.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .context("lifting statement_timeout for the migration")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tally_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .context("creating tally_migrations")?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM tally_migrations", &[])
        .await
        .context("reading tally_migrations")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    require_extensions(&tx).await?;
    let mut now_applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {version} ({name})"))?;
        tx.execute(
            "INSERT INTO tally_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .with_context(|| format!("recording migration {version}"))?;
        now_applied.push(*version);
    }
    tx.commit().await.context("committing migrations")?;
    Ok(now_applied)
}

/// The extensions the schema needs, with the Debian package that has each.
const REQUIRED_EXTENSIONS: &[(&str, &str)] = &[("hll", "postgresql-<major>-hll")];

/// Refuses to start on a server without a required extension, naming it (rather than
/// failing inside a migration, or worse, answering without it).
async fn require_extensions(tx: &deadpool_postgres::Transaction<'_>) -> anyhow::Result<()> {
    for (name, package) in REQUIRED_EXTENSIONS {
        let available = tx
            .query_opt(
                "SELECT 1 FROM pg_available_extensions WHERE name = $1",
                &[name],
            )
            .await
            .context("reading pg_available_extensions")?
            .is_some();
        if !available {
            anyhow::bail!(
                "PostgreSQL lacks the `{name}` extension, which Tally's visit rollups need \
                 (visitor sketches): install it on the database server (Debian and Ubuntu: \
                 apt-get install {package}; deploy/postgres builds an image with it), then start again"
            );
        }
    }
    Ok(())
}

/// Checks that PostgreSQL answers.
///
/// # Errors
/// With the reason when it does not.
pub async fn ping(pool: &Pool, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, async {
        let client = pool.get().await.context("no PostgreSQL connection")?;
        client
            .simple_query("SELECT 1")
            .await
            .context("PostgreSQL did not answer SELECT 1")?;
        anyhow::Ok(())
    })
    .await
    .context("PostgreSQL did not answer in time")?
}

/// How a failed write should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The rows themselves can never be stored (bad data): isolate and dead-letter them.
    Data,
    /// Anything else (connection lost, server restarting, deadlock, missing schema):
    /// keep the rows and retry with backoff.
    Transient,
}

/// Classifies a PostgreSQL error. Only errors caused by the values written (SQLSTATE
/// classes 22 and 23) are permanent; everything else is retried, because dead-lettering a
/// batch over an operator problem (say, a missing table) would throw away good data.
pub fn classify(err: &tokio_postgres::Error) -> FailureKind {
    match err.code() {
        Some(code) if code == &SqlState::UNIQUE_VIOLATION => FailureKind::Transient,
        Some(code) if code.code().starts_with("22") || code.code().starts_with("23") => {
            FailureKind::Data
        }
        _ => FailureKind::Transient,
    }
}

/// Records a pool's usage as `<prefix>_postgres_pool_connections{state="in_use"|"idle"}`,
/// `<prefix>_postgres_pool_max_connections` and `<prefix>_postgres_pool_waiting`.
pub fn record_pool_metrics(pool: &Pool, prefix: &str) {
    let status = pool.status();
    let in_use = status.size.saturating_sub(status.available);
    metrics::gauge!(format!("{prefix}_postgres_pool_connections"), "state" => "in_use")
        .set(in_use as f64);
    metrics::gauge!(format!("{prefix}_postgres_pool_connections"), "state" => "idle")
        .set(status.available as f64);
    metrics::gauge!(format!("{prefix}_postgres_pool_max_connections")).set(status.max_size as f64);
    metrics::gauge!(format!("{prefix}_postgres_pool_waiting")).set(status.waiting as f64);
}
