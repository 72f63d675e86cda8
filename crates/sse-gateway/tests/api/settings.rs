//! What streams and long polls show of polls whose settings hide their counts.

use crate::helpers::{SseClient, spawn_gateway};
use domain::poll::{PollSettings, Results};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "stream-secret";

fn hiding(results: Results) -> PollSettings {
    PollSettings {
        results,
        ..PollSettings::default()
    }
}

#[tokio::test]
async fn an_after_close_poll_streams_and_long_polls_only_its_total_until_it_closes() {
    let gw = spawn_gateway(|c| c.gateway.poll_coalesce_ms = 0).await;
    let poll = gw
        .create_poll_with(&["a", "b"], hiding(Results::AfterClose))
        .await;
    let mut conn = gw.conn().await;
    gw.vote(&mut conn, &poll, "o1", "ann").await;
    let mut client =
        SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
    let snapshot = client.next_event(WAIT).await.expect("snapshot");
    assert_eq!(snapshot.data["hidden"], true, "{:?}", snapshot.data);
    assert_eq!(snapshot.data["tally"], serde_json::json!({}));
    assert_eq!(snapshot.data["total"], 1);
    gw.vote(&mut conn, &poll, "o2", "bob").await;
    let tally = client.until_seq(2, WAIT).await.pop().expect("tally");
    assert_eq!(
        (tally.data["tally"].clone(), tally.data["total"].clone()),
        (serde_json::json!({}), 2.into())
    );
    let long_poll: serde_json::Value =
        reqwest::get(format!("{}/v1/polls/{poll}/updates", gw.address))
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
    assert_eq!(
        (long_poll["hidden"].clone(), long_poll["tally"].clone()),
        (true.into(), serde_json::json!({}))
    );

    domain::poll::close(&mut conn, &gw.keys, &poll, chrono::Utc::now())
        .await
        .expect("close");
    let closed = client.until_seq(3, WAIT).await.pop().expect("close");
    assert_eq!(
        closed.data["tally"],
        serde_json::json!({"o1": 1, "o2": 1}),
        "counts once closed"
    );
    assert!(closed.data.get("hidden").is_none());
}

#[tokio::test]
async fn an_after_vote_polls_counts_open_to_a_stream_with_the_results_token_only() {
    let gw = spawn_gateway(|c| {
        c.gateway.poll_coalesce_ms = 0;
        c.gateway.stream_token_secret = domain::config::Secret::new(SECRET);
    })
    .await;
    let poll = gw
        .create_poll_with(&["a", "b"], hiding(Results::AfterVote))
        .await;
    let mut conn = gw.conn().await;
    gw.vote(&mut conn, &poll, "o2", "ann").await;
    let exp = chrono::Utc::now().timestamp() + 60;
    let token = domain::stream_token::mint(
        SECRET.as_bytes(),
        &domain::stream_token::poll_scope(&poll),
        exp,
    );
    let url = format!("{}/v1/polls/{poll}/stream", gw.address);
    let mut voter = SseClient::connect(&format!("{url}?token={token}"), None).await;
    let mut stranger = SseClient::connect(&url, None).await;
    let forged =
        domain::stream_token::mint(b"guess", &domain::stream_token::poll_scope(&poll), exp);
    let mut forger = SseClient::connect(&format!("{url}?token={forged}"), None).await;
    let seen = voter.next_event(WAIT).await.expect("snapshot");
    assert_eq!(seen.data["tally"], serde_json::json!({"o1": 0, "o2": 1}));
    for client in [&mut stranger, &mut forger] {
        let hidden = client.next_event(WAIT).await.expect("snapshot");
        assert_eq!(
            hidden.data["tally"],
            serde_json::json!({}),
            "{:?}",
            hidden.data
        );
    }
    let long_poll: serde_json::Value = reqwest::get(format!(
        "{}/v1/polls/{poll}/updates?token={token}",
        gw.address
    ))
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    assert_eq!(long_poll["tally"], serde_json::json!({"o1": 0, "o2": 1}));
}
