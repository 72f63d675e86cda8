use domain::config::{HttpConfig, RedisConfig};
use domain::keys::Keys;
use domain::poll::{Ballot, NewPoll, PollOption, VoteOutcome};
use domain::shutdown::CancellationToken;
use domain::testing::TestRedis;
use sse_gateway::config::{Config, GatewaySettings};
use sse_gateway::hub::Hub;
use sse_gateway::startup::Application;
use std::sync::Arc;
use std::time::Duration;

pub struct TestGateway {
    pub address: String,
    pub redis: RedisConfig,
    pub keys: Keys,
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    _test_redis: TestRedis,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn default_settings() -> GatewaySettings {
    domain::config::from_iter(Vec::<(String, String)>::new()).expect("defaults")
}

pub async fn spawn_gateway(tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let gateway = spawn_gateway_no_wait(tweak).await;
    gateway.wait_ready().await;
    gateway
}

/// Starts a gateway without waiting for its Redis subscription.
pub async fn spawn_gateway_no_wait(tweak: impl FnOnce(&mut Config)) -> TestGateway {
    spawn_gateway_on(TestRedis::new(), tweak).await
}

/// A second gateway on the same Redis key prefix as `first` (one deployment, two
/// processes).
pub async fn spawn_second_gateway(
    first: &TestGateway,
    tweak: impl FnOnce(&mut Config),
) -> TestGateway {
    let mut redis = TestRedis::new();
    redis.config = first.redis.clone();
    let gateway = spawn_gateway_on(redis, tweak).await;
    gateway.wait_ready().await;
    gateway
}

async fn spawn_gateway_on(test_redis: TestRedis, tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let mut config = Config {
        http: HttpConfig::bound_to("127.0.0.1:0"),
        redis: test_redis.config.clone(),
        gateway: default_settings(),
    };
    config.http.http_workers = 2;
    tweak(&mut config);
    let shutdown = CancellationToken::new();
    let app = Application::build(config.clone(), shutdown.clone())
        .await
        .expect("builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let hub = app.hub();
    tokio::spawn(app.run_until_stopped());
    TestGateway {
        address,
        keys: domain::redis::keys(&config.redis),
        redis: config.redis,
        hub,
        shutdown,
        _test_redis: test_redis,
    }
}

impl TestGateway {
    pub async fn conn(&self) -> domain::redis::RedisConn {
        domain::redis::connection(&self.redis).expect("REDIS_URL parses")
    }

    /// Waits until the gateway's subscription is live (readiness says so).
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.address);
        domain::testing::eventually(Duration::from_secs(10), "gateway ready", || {
            let url = url.clone();
            async move { (reqwest::get(url).await.ok()?.status() == 200).then_some(()) }
        })
        .await;
    }

    /// Creates a poll in Redis as ingest-api would, with the shard markers set.
    pub async fn create_poll(&self, options: &[&str]) -> String {
        self.create_poll_with(options, domain::poll::PollSettings::default())
            .await
    }

    /// The same with `settings`.
    pub async fn create_poll_with(
        &self,
        options: &[&str],
        settings: domain::poll::PollSettings,
    ) -> String {
        let mut conn = self.conn().await;
        domain::poll::shard_marker::set_all_restored(&mut conn, &self.keys)
            .await
            .expect("shard markers");
        let id = uuid::Uuid::now_v7().to_string();
        let poll = NewPoll {
            question: "Which one?".into(),
            options: options
                .iter()
                .enumerate()
                .map(|(i, l)| PollOption {
                    id: format!("o{}", i + 1),
                    label: (*l).into(),
                })
                .collect(),
            closes_at: None,
            settings,
        };
        assert!(
            domain::poll::create(&mut conn, &self.keys, &id, &poll, chrono::Utc::now())
                .await
                .expect("create")
        );
        id
    }

    /// Casts a vote as ingest-api would (the script publishes the new state).
    pub async fn vote(
        &self,
        conn: &mut domain::redis::RedisConn,
        poll: &str,
        option: &str,
        user: &str,
    ) {
        let ballot = Ballot {
            option_ids: vec![option.into()],
            user_id: user.into(),
        };
        let outcome = domain::poll::vote(
            conn,
            &self.keys,
            &domain::poll::Vote::open(poll, ballot),
            chrono::Utc::now(),
        )
        .await
        .expect("vote");
        assert!(matches!(outcome, VoteOutcome::Accepted(_)), "{outcome:?}");
    }

    pub async fn state(&self, poll: &str) -> domain::poll::PollState {
        domain::poll::read_state(&mut self.conn().await, &self.keys, poll, chrono::Utc::now())
            .await
            .expect("read")
            .expect("exists")
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    /// The sequence number of the event's position (`seq` or `epoch.seq`).
    pub id: Option<i64>,
    /// The epoch of its position (0 when the id has none).
    pub epoch: i64,
    /// The id as sent (a multiplexed stream's carries every topic's position).
    pub raw_id: Option<String>,
    pub data: serde_json::Value,
}

thread_local! {
    /// One client per test thread: building a client loads TLS roots, which for thousands
    /// of streams opened at once stalled the test's runtime long enough for the gateway to
    /// time out connections whose request had not been sent yet.
    static HTTP_CLIENT: reqwest::Client = reqwest::Client::new();
}

fn http_client() -> reqwest::Client {
    HTTP_CLIENT.with(reqwest::Client::clone)
}

/// A minimal EventSource: reads events off a streaming response.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(url: &str, last_event_id: Option<i64>) -> Self {
        Self::connect_raw(url, last_event_id.map(|id| id.to_string()).as_deref()).await
    }

    /// Connects with `Last-Event-ID` exactly as given.
    pub async fn connect_raw(url: &str, last_event_id: Option<&str>) -> Self {
        let mut req = http_client().get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.expect("connect");
        assert_eq!(response.status(), 200, "stream refused");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next data event (comments and retry hints skipped), or `None` at the end of the
    /// stream or after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut epoch, mut data, mut raw_id) =
                    (String::from("message"), None, 0, String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        let v = v.trim();
                        raw_id = Some(v.to_string());
                        let (e, s) = v.split_once('.').unwrap_or(("0", v));
                        epoch = e.parse().unwrap_or(0);
                        id = s.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent {
                        event,
                        id,
                        epoch,
                        raw_id,
                        data: serde_json::from_str(&data).expect("JSON data"),
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until an event with `id >= seq` arrives; returns every event read.
    pub async fn until_seq(&mut self, seq: i64, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(e) = self.next_event(left).await else {
                panic!(
                    "no event with id >= {seq} within {timeout:?}; saw {:?}",
                    seen.iter().map(|e: &SseEvent| e.id).collect::<Vec<_>>()
                )
            };
            let done = e.id.is_some_and(|id| id >= seq);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}
