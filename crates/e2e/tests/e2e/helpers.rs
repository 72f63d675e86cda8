//! Starting and stopping the real service binaries.

use domain::testing::{TestDb, TestRedis};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// POSTs `body` to ingest-api's admin route `path` until it answers 201 (the worker may
/// still be restoring the registries); returns the answer.
pub async fn admin_post(
    ingest: &Service,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    domain::testing::eventually(Duration::from_secs(30), "an admin write", || async {
        let res = client
            .post(format!("{}{path}", ingest.url()))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .ok()?;
        (res.status() == 201).then_some(res.json::<serde_json::Value>().await.ok()?)
    })
    .await
}

/// The directory holding the workspace's binaries (next to this test's `deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

/// A running service process; killed with SIGKILL when dropped.
pub struct Service {
    pub port: u16,
    child: Child,
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Whether the service's `/metrics` shows `series` (a name with its labels, as
    /// written there) above zero; `None` when `/metrics` does not answer.
    pub async fn counted(&self, client: &reqwest::Client, series: &str) -> Option<bool> {
        let metrics = client
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            metrics
                .lines()
                .any(|l| l.starts_with(series) && !l.ends_with(" 0")),
        )
    }

    /// `kill -9`: no shutdown code runs.
    pub async fn kill_9(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the process to exit on its own.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s of SIGTERM")
            .expect("wait")
    }
}

pub use domain::testing::PrivateRedis;

/// The environment shared by the processes of one test.
pub struct Stack {
    pub redis: TestRedis,
    pub db: TestDb,
    log_dir: PathBuf,
}

impl Stack {
    pub async fn new() -> Self {
        let redis = TestRedis::new();
        let db = TestDb::new().await;
        let log_dir = bin_dir()
            .join("e2e-logs")
            .join(&redis.config.redis_key_prefix);
        std::fs::create_dir_all(&log_dir).expect("log dir");
        Self { redis, db, log_dir }
    }

    /// The same, on a Redis of the test's own.
    pub async fn with_redis_url(url: &str) -> Self {
        let mut stack = Self::new().await;
        stack.redis.config.redis_url = url.to_string();
        stack
    }

    fn base_env(&self) -> Vec<(String, String)> {
        vec![
            ("REDIS_URL".into(), self.redis.config.redis_url.clone()),
            (
                "EVENT_QUEUE_SHARDS".into(),
                self.redis.config.event_queue_shards.to_string(),
            ),
            (
                "REDIS_KEY_PREFIX".into(),
                self.redis.config.redis_key_prefix.clone(),
            ),
            ("DATABASE_URL".into(), self.db.config.database_url.clone()),
            ("BIND_ADDR".into(), "127.0.0.1:0".into()),
            ("HTTP_WORKERS".into(), "2".into()),
            ("RUST_LOG".into(), "info".into()),
            ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("RESTORE_CHECK_INTERVAL_MS".into(), "200".into()),
            ("VOTE_RATE_LIMIT_PER_IP_PER_S".into(), "0".into()),
            // Weeks built while events drain (and put out of date by them), not only after.
            ("VISIT_WEEK_BUILD_INTERVAL_MS".into(), "1000".into()),
        ]
    }

    /// Starts binary `name` with the stack's environment plus `extra`, and waits until it
    /// reports its port and answers `/readyz`... or at least `/healthz` (a worker whose
    /// PostgreSQL is cut off is alive but not ready).
    pub async fn start(&self, name: &'static str, extra: &[(&str, &str)]) -> Service {
        let path = bin_dir().join(name);
        assert!(
            path.exists(),
            "{} is missing: run `cargo build --bins` first (make test does)",
            path.display()
        );
        let log = self
            .log_dir
            .join(format!("{name}-{}.log", domain::testing::random_id()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(&path);
        cmd.env_clear()
            .envs(self.base_env())
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log fd")))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn service");
        let port = domain::testing::eventually(
            Duration::from_secs(20),
            &format!("{name} reports its port"),
            || {
                let log = log.clone();
                async move { port_from_log(&std::fs::read_to_string(&log).unwrap_or_default()) }
            },
        )
        .await;
        let service = Service { port, child };
        let client = reqwest::Client::new();
        domain::testing::eventually(Duration::from_secs(20), &format!("{name} is alive"), || {
            let url = format!("{}/healthz", service.url());
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
        service
    }

    /// How many log lines of this stack's processes contain `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> usize {
        std::fs::read_dir(&self.log_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
            .map(|text| text.lines().filter(|l| l.contains(needle)).count())
            .sum()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.db.pool().get().await.expect("pg");
        client.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// Waits (up to `limit`, a failure bound) until PostgreSQL holds exactly `total` events
    /// and nothing is left in Redis, queued or claimed.
    pub async fn wait_all_stored(&self, total: i64, limit: Duration, what: &str) {
        domain::testing::eventually(limit, what, || async {
            (self.count("SELECT count(*) FROM events").await == total
                && self.items_in_redis().await == 0)
                .then_some(())
        })
        .await;
    }

    /// Items still in Redis, in every shard of the events queue: queued, or claimed by
    /// some worker and not acknowledged.
    pub async fn items_in_redis(&self) -> u64 {
        let mut conn = self.redis.conn().await;
        let mut total = 0;
        for keys in self.redis.events_queues() {
            let mut lists: Vec<String> = domain::redis_client::cmd("SMEMBERS")
                .arg(&keys.workers)
                .query_async::<Vec<String>>(&mut conn)
                .await
                .expect("SMEMBERS")
                .iter()
                .map(|w| keys.processing(w))
                .collect();
            lists.push(keys.queue.clone());
            for key in lists {
                let n: u64 = domain::redis_client::cmd("LLEN")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("LLEN");
                total += n;
            }
        }
        total
    }
}

impl Drop for Stack {
    /// Logs are kept only when the test failed (to read what happened).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

fn port_from_log(text: &str) -> Option<u16> {
    text.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["message"] == "listening" || v["message"] == "running" {
            v["port"].as_u64().and_then(|p| u16::try_from(p).ok())
        } else {
            None
        }
    })
}

/// Posts `batches` batches of `per_batch` events to `/v1/events`, `concurrency` at a time.
/// Events spread over 3 sites, 2 days, 24 hours, 20 paths (one in ten without a path) and
/// 500 users (one in ten anonymous). Returns how many were accepted.
pub async fn post_events(
    ingest: &str,
    batches: usize,
    per_batch: usize,
    concurrency: usize,
) -> usize {
    use futures_util::StreamExt;
    let client = reqwest::Client::new();
    futures_util::stream::iter(0..batches)
        .map(|b| {
            let client = client.clone();
            let url = format!("{ingest}/v1/events");
            async move {
                let events: Vec<serde_json::Value> = (0..per_batch)
                    .map(|i| synthetic_event(b * per_batch + i))
                    .collect();
                loop {
                    let res = client
                        .post(&url)
                        .json(&serde_json::json!({ "events": events }))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 202 => return per_batch,
                        Ok(r) if r.status() == 503 || r.status() == 429 => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Ok(r) => panic!("ingest answered {}", r.status()),
                        Err(e) => panic!("ingest unreachable: {e}"),
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .fold(0, |acc, n| async move { acc + n })
        .await
}

pub fn synthetic_event(n: usize) -> serde_json::Value {
    let mut e = serde_json::json!({
        "site_id": format!("site-{}", n % 3),
        "event_type": if n.is_multiple_of(5) { "click" } else { "page_view" },
        "timestamp": format!("2025-11-{:02}T{:02}:{:02}:00Z", 14 + n % 2, n % 24, n % 60),
    });
    if !n.is_multiple_of(10) {
        e["path"] = serde_json::json!(format!("/p{}", n % 20));
    }
    if n % 10 != 1 {
        e["user_id"] = serde_json::json!(format!("u{}", n % 500));
    }
    e
}

/// Asserts that every rollup agrees with a direct count over the raw events.
pub async fn assert_rollups_match_events(stack: &Stack) {
    let pairs = [
        (
            "SELECT count(*) FROM events",
            "SELECT coalesce(sum(events), 0)::bigint FROM rollup_hourly",
        ),
        (
            "SELECT count(*) FROM events",
            "SELECT coalesce(sum(events), 0)::bigint FROM rollup_minutely",
        ),
        (
            "SELECT count(*) FROM events WHERE path IS NOT NULL",
            "SELECT coalesce(sum(views), 0)::bigint FROM rollup_hourly_paths",
        ),
        (
            "SELECT count(*) FROM (SELECT DISTINCT site_id, event_type, (ts AT TIME ZONE 'UTC')::date, user_id FROM events WHERE user_id IS NOT NULL) d",
            "SELECT count(*) FROM daily_visitors",
        ),
        (
            "SELECT count(*) FROM (SELECT DISTINCT site_id, event_type, (ts AT TIME ZONE 'UTC')::date, user_id, extract(hour FROM ts AT TIME ZONE 'UTC') FROM events WHERE user_id IS NOT NULL) d",
            "SELECT coalesce(sum(bit_count(hours::bit(24))), 0)::bigint FROM daily_visitors",
        ),
    ];
    for (direct, rollup) in pairs {
        assert_eq!(
            stack.count(direct).await,
            stack.count(rollup).await,
            "{rollup} disagrees with {direct}"
        );
    }
}

/// Visits from the raw events, by a gaps-and-islands pass written here independently of
/// the worker: a visitor's events with gaps under 30 minutes, ties by event id.
pub const VISITS_FROM_EVENTS: &str = "
WITH marked AS (
    SELECT *, CASE WHEN ts - lag(ts) OVER w < interval '30 minutes' THEN 0 ELSE 1 END AS starts
    FROM events WHERE user_id IS NOT NULL
    WINDOW w AS (PARTITION BY site_id, user_id ORDER BY ts, event_id)
), numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY site_id, user_id ORDER BY ts, event_id) AS visit_no
    FROM marked
)
SELECT site_id, user_id AS visitor, min(ts) AS started_at, max(ts) AS ended_at,
       count(*)::int AS events, count(*) FILTER (WHERE event_type = 'page_view')::int AS pageviews,
       (array_agg(path ORDER BY ts, event_id) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1] AS entry_page,
       (array_agg(path ORDER BY ts DESC, event_id DESC) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1] AS exit_page,
       (array_agg(referrer_source ORDER BY ts, event_id))[1] AS source,
       (array_agg(device ORDER BY ts, event_id))[1] AS device,
       (array_agg(utm_source ORDER BY ts, event_id))[1] AS utm_source
FROM numbered GROUP BY site_id, user_id, visit_no";

/// The visit rollups a plain aggregation of the stored visits gives, written here
/// independently of the worker and of migrations 0011, 0012 and 0019: per site, dimension
/// code, span (UTC hours for the totals only; every dimension by the date in the site's
/// time zone as the user set it, and by the Monday of that date), bucket and value, the sums (visits only for entry and exit
/// pages) and the exact distinct visitors (none kept by entry or exit page).
const ROLLUPS_FROM_VISITS: &str = "
SELECT v.site_id, d.code, s.span,
       CASE s.span WHEN 1 THEN date_trunc('hour', v.started_at AT TIME ZONE 'UTC')
            WHEN 24 THEN (v.started_at AT TIME ZONE coalesce(site.timezone, 'UTC'))::date
            ELSE date_trunc('week', (v.started_at AT TIME ZONE coalesce(site.timezone, 'UTC'))::date) END AS bucket,
       coalesce(md5(d.value), '-') AS value_key, count(*) AS visits,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE sum(pageviews) END AS pageviews,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE sum(events) END AS events,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE count(*) FILTER (WHERE pageviews = 1) END AS bounces,
       CASE WHEN d.code IN (1, 2) THEN 0
            ELSE sum(extract(epoch FROM ended_at - started_at) * 1000000)::bigint END AS duration_us,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE count(DISTINCT visitor) END AS visitors
FROM visits v LEFT JOIN sites site USING (site_id) CROSS JOIN (VALUES (1), (24), (168)) AS s(span)
CROSS JOIN LATERAL (VALUES (0, NULL), (1, entry_page), (2, exit_page), (3, source),
    (10, device), (11, browser), (12, os), (13, country)) AS d(code, value)
WHERE s.span <> 1 OR d.code = 0
GROUP BY 1, 2, 3, 4, 5";

/// The goal cells a plain aggregation of the stored visits' conversions gives (written
/// here independently of the worker and of migrations 0013 and 0019): per site, goal,
/// dimension code (100 and up), the date in the site's zone (and its Monday) and value, the visits that converted
/// the goal, their conversions (as `events`) and exact distinct visitors (none by entry or
/// exit page).
const GOAL_CELLS_FROM_VISITS: &str = "
SELECT v.site_id, 100 + d.code AS code, s.span,
       CASE s.span WHEN 24 THEN (v.started_at AT TIME ZONE coalesce(site.timezone, 'UTC'))::date
            ELSE date_trunc('week', (v.started_at AT TIME ZONE coalesce(site.timezone, 'UTC'))::date) END AS bucket,
       g.key || '/' || coalesce(md5(d.value), '-') AS value_key, count(*) AS visits,
       0 AS pageviews, sum(g.value::bigint) AS events, 0 AS bounces, 0::bigint AS duration_us,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE count(DISTINCT visitor) END AS visitors
FROM visits v LEFT JOIN sites site USING (site_id) CROSS JOIN LATERAL jsonb_each_text(v.goals) AS g
CROSS JOIN (VALUES (24), (168)) AS s(span)
CROSS JOIN LATERAL (VALUES (0, NULL), (1, entry_page), (2, exit_page), (3, source),
    (10, device), (11, browser), (12, os), (13, country)) AS d(code, value)
GROUP BY v.site_id, d.code, s.span, 4, g.key, d.value";

/// How far a visitor count above the sketches' exact size may be off: 4 standard errors
/// (docs/api.md).
pub const SKETCH_BOUND: f64 = 4.0 * 1.04 / 128.0;

/// Asserts that the worker's visit rollups hold exactly the sums of the stored visits, and
/// their visitors exactly up to the sketches' exact size (within 4 standard errors above):
/// as readers see them (the cells with their queued members, `visit_rollup_cells`), and
/// once every queued member is folded in, the cells alone; week cells once every sealed
/// week is built (those of weeks out of date are not read).
pub async fn assert_visit_rollups_match_visits(stack: &Stack) {
    // Cells a late event moved a visit out of are repaired a moment after (a worker runs).
    // The repair pauses four times as long as its last round took (sketch_repair.rs): a
    // round slowed to 10 s by a loaded host's drain delays the next by 40 s, so 30 s (as
    // here until a cluster run of the million-event test hit it) is too short a deadline.
    domain::testing::eventually(
        std::time::Duration::from_secs(180),
        "every stale visitor sketch repaired",
        || async {
            (stack.count("SELECT count(*) FROM visit_rollup_stale").await == 0).then_some(())
        },
    )
    .await;
    // Every sealed week is built and up to date a moment after its last change (a worker
    // runs): the comparisons below then cover week cells too.
    domain::testing::eventually(
        std::time::Duration::from_secs(60),
        "every sealed week built",
        || async {
            (stack
                .count("SELECT count(*) FROM tally_visit_weeks_to_build(1)")
                .await
                == 0)
                .then_some(())
        },
    )
    .await;
    let as_read = "SELECT site_id, dimension AS code, span_hours AS span, bucket AT TIME ZONE 'UTC' AS bucket,
                          coalesce(goal_id || '/', '') || coalesce(md5(value), '-') AS value_key,
                          sum(visits)::bigint AS visits, sum(pageviews)::bigint AS pageviews,
                          sum(events)::bigint AS events, sum(bounces)::bigint AS bounces,
                          sum(duration_us)::bigint AS duration_us,
                          coalesce(round(hll_cardinality(hll_union_agg(visitors))), 0)::bigint AS visitors
                   FROM visit_rollup_cells WHERE dimension < 200
                   GROUP BY site_id, dimension, span_hours, bucket, goal_id, value";
    assert_rollups_equal_visits(stack, as_read, "as read").await;
    domain::testing::eventually(
        std::time::Duration::from_secs(60),
        "every queued sketch member folded",
        || async {
            (stack
                .count("SELECT count(*) FROM visit_rollup_pending")
                .await
                == 0)
                .then_some(())
        },
    )
    .await;
    let stored = "SELECT site_id, dimension AS code, span_hours AS span, bucket AT TIME ZONE 'UTC' AS bucket,
                         coalesce(goal_id || '/', '') || coalesce(md5(value), '-') AS value_key,
                         visits, pageviews, events, bounces,
                         duration_us, coalesce(round(hll_cardinality(visitors)), 0)::bigint AS visitors
                  FROM visit_rollups WHERE dimension < 200";
    assert_rollups_equal_visits(stack, stored, "folded").await;
}

/// Compares rollup rows `stored` (SQL) with the cells computed from the visits.
async fn assert_rollups_equal_visits(stack: &Stack, stored: &str, what: &str) {
    let (wrong, sample): (i64, Option<String>) = {
        let client = stack.db.pool().get().await.expect("pg");
        // The test's own aggregation of a million events' visits by hour, day and week
        // takes longer than the services' statement timeout on a busy machine.
        client
            .batch_execute("SET statement_timeout = '600s'")
            .await
            .expect("statement timeout");
        let row = client
            .query_one(
                &format!(
                    "WITH weeks AS (SELECT site_id, week AT TIME ZONE 'UTC' AS bucket FROM visit_rollup_weeks
                                    WHERE generation = built_generation),
                     t AS (SELECT * FROM ({ROLLUPS_FROM_VISITS} UNION ALL {GOAL_CELLS_FROM_VISITS}) t
                           WHERE span <> 168 OR (site_id, bucket) IN (SELECT * FROM weeks)),
                     s AS (SELECT * FROM ({stored}) s
                           WHERE span <> 168 OR (site_id, bucket) IN (SELECT * FROM weeks)),
                     j AS (SELECT t, s FROM t FULL JOIN s USING (site_id, code, span, bucket, value_key)
                           WHERE NOT (t IS NULL AND s.visits = 0 AND s.pageviews = 0 AND s.events = 0
                                      AND s.bounces = 0 AND s.duration_us = 0 AND s.visitors = 0)
                             AND (t IS NULL OR s IS NULL
                                  OR (t.visits, t.pageviews, t.events, t.bounces, t.duration_us)
                                     <> (s.visits, s.pageviews, s.events, s.bounces, s.duration_us)
                                  OR (t.visitors <= {exact} AND t.visitors <> s.visitors)
                                  OR abs(t.visitors - s.visitors) > {SKETCH_BOUND} * t.visitors))
                     SELECT count(*), min(j::text) FROM j",
                    exact = domain::visits::EXACT_VISITORS_UP_TO
                ),
                &[],
            )
            .await
            .expect("comparing the visit rollups");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        wrong, 0,
        "visit rollups ({what}) differ from the stored visits, e.g. (truth, stored) = {sample:?}"
    );
}

/// The sites' goals as SQL rows `(site_id, goal_id, event_name, path_regex, is_step)`, a
/// page pattern made a regular expression by the query API's translation (not the
/// worker's matcher nor migration 0013's), `is_step` when a funnel of the site has it.
async fn goal_matchers(stack: &Stack) -> String {
    let client = stack.db.pool().get().await.expect("pg");
    let rows = client
        .query("SELECT site_id, goals, funnels FROM sites", &[])
        .await
        .expect("reading the sites' goals");
    let quote = |s: Option<&str>| {
        s.map_or("NULL".to_string(), |s| {
            format!("'{}'", s.replace('\'', "''"))
        })
    };
    let mut values = Vec::new();
    for r in &rows {
        let site: String = r.get(0);
        let goals: Vec<domain::goals::Goal> =
            serde_json::from_value(r.get(1)).expect("sites.goals is a list of goals");
        let funnels: Vec<domain::goals::Funnel> =
            serde_json::from_value(r.get(2)).expect("sites.funnels is a list of funnels");
        for g in goals {
            let is_step = funnels.iter().any(|f| f.steps.contains(&g.goal_id));
            values.push(format!(
                "({}, {}, {}, {}, {is_step})",
                quote(Some(&site)),
                quote(Some(&g.goal_id)),
                quote(g.event_name.as_deref()),
                quote(g.path_regex().as_deref())
            ));
        }
    }
    if values.is_empty() {
        "SELECT NULL::text, NULL::text, NULL::text, NULL::text, false WHERE false".into()
    } else {
        format!("VALUES {}", values.join(", "))
    }
}

/// Asserts that the page day rows are the raw page events counted per site, type, path
/// and the date in the site's zone of their UTC hour's midpoint.
pub async fn assert_page_days_match_events(stack: &Stack) {
    let truth = "SELECT e.site_id, e.event_type, path,
                        (((date_trunc('hour', ts AT TIME ZONE 'UTC') + interval '30 minutes')
                            AT TIME ZONE 'UTC') AT TIME ZONE coalesce(s.timezone, 'UTC'))::date AS day,
                        count(*)::bigint AS views
                 FROM events e LEFT JOIN sites s USING (site_id) WHERE path IS NOT NULL
                 GROUP BY 1, 2, 3, 4";
    let stored = "SELECT site_id, event_type, path, day, views FROM page_day_rollups";
    let differing = stack
        .count(&format!(
            "SELECT count(*) FROM ((({stored}) EXCEPT ALL ({truth})) \
             UNION ALL (({truth}) EXCEPT ALL ({stored}))) d"
        ))
        .await;
    assert_eq!(
        differing, 0,
        "page day rows differ from the raw page events"
    );
    // The page week rows of built weeks: the same counts by the Monday of each day.
    let truth_weeks = format!(
        "SELECT site_id, event_type, path, date_trunc('week', day)::date AS week, sum(views)::bigint \
         FROM ({truth}) t GROUP BY 1, 2, 3, 4"
    );
    let built = "SELECT site_id, (week AT TIME ZONE 'UTC')::date AS week FROM visit_rollup_weeks \
                 WHERE generation = built_generation";
    let stored_weeks = "SELECT site_id, event_type, path, week, views FROM page_week_rollups";
    let differing = stack
        .count(&format!(
            "WITH built AS ({built}), \
                  t AS (SELECT * FROM ({truth_weeks}) t WHERE (site_id, week) IN (SELECT * FROM built)), \
                  s AS (SELECT * FROM ({stored_weeks}) s WHERE (site_id, week) IN (SELECT * FROM built)) \
             SELECT count(*) FROM ((SELECT * FROM s EXCEPT ALL SELECT * FROM t) \
                 UNION ALL (SELECT * FROM t EXCEPT ALL SELECT * FROM s)) d"
        ))
        .await;
    assert_eq!(
        differing, 0,
        "page week rows of built weeks differ from the raw page events"
    );
}

/// Asserts that the stored visits are exactly those of the raw events (their conversions
/// too), and their rollups those of the visits.
pub async fn assert_visits_match_events(stack: &Stack) {
    assert_visit_rollups_match_visits(stack).await;
    assert_page_days_match_events(stack).await;
    let stored = "SELECT site_id, visitor, started_at, ended_at, events, pageviews, entry_page, \
                  exit_page, source, device, utm_source FROM visits";
    let differing = stack
        .count(&format!(
            "SELECT count(*) FROM ((({stored}) EXCEPT ALL ({VISITS_FROM_EVENTS})) \
             UNION ALL (({VISITS_FROM_EVENTS}) EXCEPT ALL ({stored}))) d"
        ))
        .await;
    assert_eq!(
        differing, 0,
        "stored visits differ from the raw events' visits"
    );
    let goals = goal_matchers(stack).await;
    let differing = stack
        .count(&format!(
            "WITH tv AS ({VISITS_FROM_EVENTS}), goal(site_id, goal_id, event_name, path_regex, is_step) AS ({goals}),
             truth AS (SELECT tv.site_id, tv.visitor, tv.started_at, goal.goal_id, count(*)::int AS n
                 FROM tv JOIN events e ON e.site_id = tv.site_id AND e.user_id = tv.visitor
                     AND e.ts BETWEEN tv.started_at AND tv.ended_at
                 JOIN goal ON goal.site_id = e.site_id AND (e.event_type = goal.event_name
                     OR (e.event_type = 'page_view' AND e.path ~ goal.path_regex))
                 GROUP BY 1, 2, 3, 4),
             stored AS (SELECT site_id, visitor, started_at, g.key AS goal_id, g.value::int AS n
                 FROM visits CROSS JOIN LATERAL jsonb_each_text(goals) AS g)
             SELECT count(*) FROM ((SELECT * FROM stored EXCEPT ALL SELECT * FROM truth)
                 UNION ALL (SELECT * FROM truth EXCEPT ALL SELECT * FROM stored)) d"
        ))
        .await;
    assert_eq!(
        differing, 0,
        "stored conversions differ from the raw events' matches of the sites' goals"
    );
    let differing = stack
        .count(&format!(
            "WITH tv AS ({VISITS_FROM_EVENTS}), goal(site_id, goal_id, event_name, path_regex, is_step) AS ({goals}),
             truth AS (SELECT tv.site_id, tv.visitor, tv.started_at,
                              (extract(epoch FROM e.ts) * 1000000)::bigint AS at, e.event_id::text, goal.goal_id
                 FROM tv JOIN events e ON e.site_id = tv.site_id AND e.user_id = tv.visitor
                     AND e.ts BETWEEN tv.started_at AND tv.ended_at
                 JOIN goal ON goal.site_id = e.site_id AND goal.is_step AND (e.event_type = goal.event_name
                     OR (e.event_type = 'page_view' AND e.path ~ goal.path_regex))),
             stored AS (SELECT site_id, visitor, started_at, (s->>0)::bigint, s->>1, s->>2
                 FROM visits CROSS JOIN LATERAL jsonb_array_elements(steps) AS s)
             SELECT count(*) FROM ((SELECT * FROM stored EXCEPT ALL SELECT * FROM truth)
                 UNION ALL (SELECT * FROM truth EXCEPT ALL SELECT * FROM stored)) d"
        ))
        .await;
    assert_eq!(
        differing, 0,
        "stored funnel steps differ from the raw events' matches of the sites' funnel goals"
    );
    let visits = stack.count("SELECT count(*) FROM visits").await;
    assert!(visits > 0, "no visits to compare");
    assert_eq!(
        visits,
        stack
            .count(&format!("SELECT count(*) FROM ({VISITS_FROM_EVENTS}) v"))
            .await
    );
}
