use crate::helpers::{SseClient, spawn_gateway};
use domain::testing::PrivateRedis;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_stream_starts_with_a_snapshot_and_ends_on_every_votes_effect() {
    let gw = spawn_gateway(|_| {}).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let mut client =
        SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
    let first = client.next_event(WAIT).await.expect("snapshot");
    assert_eq!((first.event.as_str(), first.id), ("snapshot", Some(0)));
    assert_eq!(
        first.data["options"][1]["label"], "b",
        "snapshots carry the labels"
    );

    let mut conn = gw.conn().await;
    for i in 0..500 {
        gw.vote(
            &mut conn,
            &poll,
            if i % 3 == 0 { "o1" } else { "o2" },
            &format!("u{i}"),
        )
        .await;
    }
    let events = client.until_seq(500, WAIT).await;
    let last = events.last().expect("events");
    assert_eq!(last.event, "tally");
    let server = gw.state(&poll).await;
    assert_eq!(
        last.data["tally"],
        serde_json::Value::Object(server.tally.clone())
    );
    assert_eq!(last.data["total"], 500);
    // Coalesced: far fewer events than votes, ids strictly increasing.
    assert!(events.len() < 500, "{} events for 500 votes", events.len());
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
}

#[tokio::test]
async fn reconnecting_with_last_event_id_after_fifty_missed_updates_ends_equal_to_the_server() {
    let gw = spawn_gateway(|c| c.gateway.poll_coalesce_ms = 0).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let url = format!("{}/v1/polls/{poll}/stream", gw.address);
    let mut conn = gw.conn().await;
    let mut client = SseClient::connect(&url, None).await;
    client.next_event(WAIT).await.expect("snapshot");
    for i in 0..5 {
        gw.vote(&mut conn, &poll, "o1", &format!("early{i}")).await;
    }
    let seen = client.until_seq(5, WAIT).await;
    let last_id = seen.last().and_then(|e| e.id).expect("id");
    drop(client);

    for i in 0..50 {
        gw.vote(&mut conn, &poll, "o2", &format!("missed{i}")).await;
    }
    let server = gw.state(&poll).await;
    // Let the gateway emit what it received before we come back.
    domain::testing::eventually(WAIT, "gateway caught up", || async {
        (gw.hub
            .existing(&domain::channel::Channel::Poll(poll.clone()))?
            .latest()?
            .position
            .seq
            == server.seq)
            .then_some(())
    })
    .await;
    let mut back = SseClient::connect(&url, Some(last_id)).await;
    let replayed = back.until_seq(server.seq, WAIT).await;
    // Every event replayed is newer than what the client had, in order, ending on the
    // server's state: nothing missed, no gap left unnoticed.
    assert!(
        replayed
            .iter()
            .all(|e| e.id > Some(last_id) && e.event == "tally"),
        "{replayed:?}"
    );
    assert_eq!(
        replayed.len(),
        50,
        "one event per missed update (no coalescing configured)"
    );
    let last = replayed.last().expect("events");
    assert_eq!(last.data["tally"], serde_json::Value::Object(server.tally));
    assert_eq!(last.data["total"], 55);
}

#[tokio::test]
async fn a_gap_older_than_the_history_gets_a_fresh_snapshot() {
    let gw = spawn_gateway(|c| {
        c.gateway.poll_coalesce_ms = 0;
        c.gateway.replay_history = 10;
    })
    .await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let url = format!("{}/v1/polls/{poll}/stream", gw.address);
    let mut watcher = SseClient::connect(&url, None).await; // keeps the topic alive
    let mut conn = gw.conn().await;
    for i in 0..50 {
        gw.vote(&mut conn, &poll, "o1", &format!("v{i}")).await;
    }
    watcher.until_seq(50, WAIT).await;
    let mut back = SseClient::connect(&url, Some(3)).await;
    let first = back.next_event(WAIT).await.expect("event");
    assert_eq!((first.event.as_str(), first.id), ("snapshot", Some(50)));
}

#[tokio::test]
async fn two_thousand_browsers_get_the_update_over_one_redis_subscription() {
    let redis = PrivateRedis::start().await;
    let url = redis.url.clone();
    let gw = spawn_gateway(|c| {
        c.redis.redis_url = url;
        c.gateway.max_connections_per_ip = 5_000;
    })
    .await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let stream_url = format!("{}/v1/polls/{poll}/stream", gw.address);
    let clients: Vec<SseClient> = futures_util::stream::iter(0..2000)
        .map(|_| {
            let url = stream_url.clone();
            async move {
                let mut c = SseClient::connect(&url, None).await;
                c.next_event(WAIT).await.expect("snapshot");
                c
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut conn = gw.conn().await;
    gw.vote(&mut conn, &poll, "o2", "the-voter").await;
    let received: Vec<bool> = futures_util::stream::iter(clients)
        .map(|mut c| async move {
            // Under a loaded machine the subscription may miss a PING and be remade, and
            // a remade subscription resends every stream a snapshot first: the update can
            // arrive as a tally or as a snapshot that already holds it, never not at all.
            let deadline = tokio::time::Instant::now() + WAIT;
            while let Some(e) = c
                .next_event(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                if matches!(e.event.as_str(), "tally" | "snapshot") && e.data["total"] == 1 {
                    return true;
                }
            }
            false
        })
        .buffer_unordered(500)
        .collect()
        .await;
    assert_eq!(received.iter().filter(|ok| **ok).count(), 2000);
    let numpat: i64 = domain::redis_client::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut conn)
        .await
        .expect("NUMPAT");
    assert_eq!(numpat, 1, "one pattern subscription for all 2000 browsers");
    let clients_list: String = domain::redis_client::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    assert_eq!(clients_list.lines().count(), 1, "{clients_list}");
}

#[tokio::test]
async fn a_browser_that_stops_reading_stalls_nobody_and_is_resynchronised_later() {
    let gw = spawn_gateway(|c| {
        c.gateway.poll_coalesce_ms = 0;
        c.gateway.max_client_lag = 16;
    })
    .await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let addr = gw.address.trim_start_matches("http://").to_string();
    // A browser that connects and then never reads: a tiny receive buffer fills at once.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    stalled
        .write_all(format!("GET /v1/polls/{poll}/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut healthy =
        SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
    healthy.next_event(WAIT).await.expect("snapshot");

    let votes = 20_000;
    let voters: Vec<_> = (0..4)
        .map(|lane| {
            let (keys, redis, poll) = (gw.keys.clone(), gw.redis.clone(), poll.clone());
            tokio::spawn(async move {
                let conn = domain::redis::connection(&redis).expect("REDIS_URL parses");
                for i in (lane..votes).step_by(4) {
                    let ballot = domain::poll::Ballot {
                        option_ids: vec!["o1".into()],
                        user_id: format!("u{i}"),
                    };
                    domain::poll::vote(
                        &conn,
                        &keys,
                        &domain::poll::Vote::open(poll.as_str(), ballot),
                        chrono::Utc::now(),
                    )
                    .await
                    .expect("vote");
                }
            })
        })
        .collect();
    // The healthy browser keeps up while the other one is stuck.
    healthy
        .until_seq(votes as i64, Duration::from_secs(60))
        .await;
    for v in voters {
        v.await.expect("voter");
    }
    let topic = gw
        .hub
        .existing(&domain::channel::Channel::Poll(poll.clone()))
        .expect("topic");
    assert!(
        topic.queued() <= 16,
        "the gateway holds at most the lag capacity for the stuck browser, not {}",
        topic.queued()
    );

    // When it reads again it is sent a snapshot of the latest state, not 20,000 events.
    // What the kernel's buffers took before the gateway saw the stall (megabytes, at a
    // few kilobytes a read through the tiny window) comes first: only the new bytes are
    // searched, and the deadline only bounds a failure.
    let wanted = format!("id: {votes}\n");
    let mut received: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = tokio::time::timeout_at(deadline, stalled.read(&mut buf))
            .await
            .expect("reads again")
            .expect("read");
        assert!(n > 0, "stream ended");
        let searched_from = received.len().saturating_sub(wanted.len());
        received.extend_from_slice(&buf[..n]);
        if received[searched_from..]
            .windows(wanted.len())
            .any(|w| w == wanted.as_bytes())
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received);
    // The kernel's socket buffers took some events before the browser stalled; the rest
    // were skipped for a snapshot of the latest state.
    let events = text.matches("event: ").count();
    assert!(
        text.matches("event: snapshot").count() >= 2,
        "resynchronised with a snapshot"
    );
    assert!(events < votes, "{events} events for {votes} updates");
}

#[tokio::test]
async fn after_losing_its_subscription_the_gateway_resubscribes_and_resends_snapshots() {
    let redis = PrivateRedis::start().await;
    let url = redis.url.clone();
    let gw = spawn_gateway(|c| c.redis.redis_url = url).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let mut client =
        SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
    client.next_event(WAIT).await.expect("snapshot");

    let mut conn = gw.conn().await;
    let killed: i64 = domain::redis_client::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "the gateway holds exactly one subscription");
    for i in 0..3 {
        gw.vote(&mut conn, &poll, "o1", &format!("while-away-{i}"))
            .await;
    }
    // After resubscribing, the gateway sends the state of that moment as a snapshot (what
    // it missed while away is in it), and the stream goes on to the latest vote.
    let mut events = client.until_seq(3, Duration::from_secs(20)).await;
    if !events.iter().any(|e| e.event == "snapshot") {
        let more = client
            .next_event(Duration::from_secs(20))
            .await
            .expect("the resync snapshot");
        events.push(more);
    }
    // The first snapshot was read before the kill: any snapshot now is the resync.
    assert!(
        events.iter().any(|e| e.event == "snapshot"),
        "a snapshot after the resubscription"
    );
    let last = events
        .iter()
        .filter_map(|e| e.id.map(|id| (id, e)))
        .max_by_key(|(id, _)| *id)
        .map(|(_, e)| e)
        .expect("events");
    assert_eq!(last.data["total"], 3);
    gw.wait_ready().await;
}

#[tokio::test]
async fn a_poll_restored_after_redis_lost_it_reaches_open_streams() {
    let gw = spawn_gateway(|c| c.gateway.poll_coalesce_ms = 0).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let mut conn = gw.conn().await;
    for i in 0..9 {
        gw.vote(&mut conn, &poll, "o1", &format!("v{i}")).await;
    }
    let mut client =
        SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
    client.until_seq(9, WAIT).await;
    // Redis lost the poll (and two unpersisted votes); the worker restores 7 from PostgreSQL.
    let k = gw.keys.poll(&poll);
    let _: () = domain::redis_client::cmd("DEL")
        .arg(&k.def)
        .arg(&k.tally)
        .arg(&k.voters)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let restored = domain::poll::PersistedPoll {
        poll_id: poll.clone(),
        question: "Which one?".into(),
        options: vec![],
        closes_at_ms: None,
        closed: false,
        settings: domain::poll::PollSettings::default(),
        seq: 7,
        tally: vec![("o1".into(), 7), ("o2".into(), 0)],
        voters: (0..7)
            .map(|u| (format!("u{u}"), "o1".to_string()))
            .collect(),
    };
    assert!(
        domain::poll::restore(&mut conn, &gw.keys, &restored)
            .await
            .expect("restore")
    );
    let reset = client.next_event(WAIT).await.expect("an event");
    assert_eq!(
        (reset.event.as_str(), reset.id),
        ("snapshot", Some(7)),
        "a lower sequence replaces the browser's state"
    );
    assert_ne!(reset.epoch, 0, "the restore is stated as a new epoch");
    assert_eq!(reset.data["epoch"], reset.epoch);
    assert_eq!(reset.data["total"], 7);
}

#[tokio::test]
async fn closing_a_poll_reaches_open_streams() {
    let gw = spawn_gateway(|c| c.gateway.poll_coalesce_ms = 0).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let mut conn = gw.conn().await;
    gw.vote(&mut conn, &poll, "o1", "ann").await;
    let mut client =
        SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
    let first = client.until_seq(1, WAIT).await;
    assert_eq!(
        first.last().map(|e| e.data["closed"].clone()),
        Some(false.into())
    );
    let outcome = domain::poll::close(&mut conn, &gw.keys, &poll, chrono::Utc::now())
        .await
        .expect("close");
    assert_eq!(outcome, domain::poll::CloseOutcome::Closed);
    let closed = client
        .next_event(WAIT)
        .await
        .expect("the close reaches the stream");
    assert_eq!(closed.data["closed"], true);
    assert_eq!(closed.data["total"], 1);
    assert_eq!(
        closed.id,
        Some(2),
        "the close takes the next sequence number"
    );
}

#[tokio::test]
async fn streams_end_when_the_gateway_shuts_down() {
    let gw = spawn_gateway(|_| {}).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let mut client =
        SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
    client.next_event(WAIT).await.expect("snapshot");
    gw.shutdown.cancel();
    assert!(
        client.next_event(Duration::from_secs(10)).await.is_none(),
        "the stream ends"
    );
}

#[tokio::test]
async fn unknown_polls_are_404_and_connection_caps_hold() {
    let gw = spawn_gateway(|c| c.gateway.max_connections_per_ip = 2).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    assert_eq!(
        reqwest::get(format!("{}/v1/polls/nope/stream", gw.address))
            .await
            .expect("sent")
            .status(),
        404
    );
    let url = format!("{}/v1/polls/{poll}/stream", gw.address);
    let _a = SseClient::connect(&url, None).await;
    let _b = SseClient::connect(&url, None).await;
    let third = reqwest::get(&url).await.expect("sent");
    assert_eq!(third.status(), 429);
}

#[tokio::test]
async fn long_polling_answers_at_once_waits_for_a_change_or_times_out() {
    let gw = spawn_gateway(|_| {}).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let base = format!("{}/v1/polls/{poll}/updates", gw.address);
    let now: serde_json::Value = reqwest::get(format!("{base}?since_seq=-1"))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (now["seq"].as_i64(), now["changed"].as_bool()),
        (Some(0), Some(true))
    );

    let waiting = tokio::spawn(reqwest::get(format!("{base}?since_seq=0&wait=20")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = gw.conn().await;
    gw.vote(&mut conn, &poll, "o1", "lp").await;
    let answered: serde_json::Value = waiting
        .await
        .expect("join")
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (answered["seq"].as_i64(), answered["changed"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(answered["tally"]["o1"], 1);

    let quiet: serde_json::Value = reqwest::get(format!("{base}?since_seq=1&wait=1"))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(quiet["changed"], false);
    assert_eq!(
        reqwest::get(format!("{base}?since_seq=x"))
            .await
            .expect("sent")
            .status(),
        400
    );
}
