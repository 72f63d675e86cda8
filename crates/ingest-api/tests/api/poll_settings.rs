//! Poll settings: several choices, hidden results, moved votes and signed voters, each
//! enforced in the vote step.

use crate::helpers::{STREAM_SECRET, VOTER_SECRET, spawn_app, spawn_app_with_secrets};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashMap;

fn question(options: usize, settings: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "question": "Which?",
        "options": (1..=options).map(|i| format!("option {i}")).collect::<Vec<_>>(),
    });
    if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
        b.extend(s.clone());
    }
    body
}

#[tokio::test]
async fn multi_choice_votes_take_between_min_and_max_distinct_options() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let poll = app
        .create_poll_with(question(4, json!({"min_choices": 2, "max_choices": 3})))
        .await;
    let cases = [
        (
            json!({"option_ids": ["o1"], "user_id": "few"}),
            422,
            "choice_count",
        ),
        (
            json!({"option_ids": ["o1", "o2", "o3", "o4"], "user_id": "many"}),
            422,
            "choice_count",
        ),
        (
            json!({"option_ids": ["o1", "o1"], "user_id": "twice"}),
            422,
            "invalid_choice",
        ),
        (
            json!({"option_ids": ["o1", "o9"], "user_id": "unknown"}),
            422,
            "unknown_option",
        ),
        (
            json!({"option_id": "o1", "user_id": "single"}),
            422,
            "choice_count",
        ),
    ];
    for (body, status, code) in cases {
        let (s, answer) = app.vote_with(&poll, body.clone()).await;
        assert_eq!(
            (s, answer["error"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (s, answer) = app
        .vote_with(&poll, json!({"option_ids": ["o3", "o1"], "user_id": "ok"}))
        .await;
    assert_eq!(s, 202, "{answer}");
    assert_eq!(answer["tally"], json!({"o1": 1, "o2": 0, "o3": 1, "o4": 0}));
    assert_eq!(answer["total"], 1, "one voter");
    let tally = app.tally(&poll).await;
    assert_eq!(
        tally.values().sum::<i64>(),
        2,
        "nothing the refused votes chose counted"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_multi_choice_voters_with_duplicates_give_exact_totals() {
    let app = spawn_app_with_secrets().await;
    app.mark_restored().await;
    let poll = app
        .create_poll_with(question(5, json!({"min_choices": 1, "max_choices": 3})))
        .await;
    // 200 users, each sending its ballot 3 times, all at once.
    let ballot = |u: usize| -> Vec<String> {
        (0..5)
            .filter(|o| (u >> o) & 1 == 1 || *o == u % 5)
            .take(3)
            .map(|o| format!("o{}", o + 1))
            .collect()
    };
    let mut expected: HashMap<String, i64> = (1..=5).map(|o| (format!("o{o}"), 0)).collect();
    for u in 0..200 {
        for o in ballot(u) {
            *expected.entry(o).or_default() += 1;
        }
    }
    let statuses: Vec<u16> = futures_util::stream::iter((0..600).map(|i| {
        let (app, poll) = (&app, &poll);
        let u = i % 200;
        async move {
            app.vote_with(
                poll,
                json!({"option_ids": ballot(u), "user_id": format!("u{u}")}),
            )
            .await
            .0
        }
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 200);
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 400);
    assert_eq!(app.tally(&poll).await, expected);
}

#[tokio::test]
async fn after_close_results_show_only_the_total_until_the_poll_closes() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let poll = app
        .create_poll_with(question(2, json!({"results": "after_close"})))
        .await;
    let (s, answer) = app
        .vote_with(&poll, json!({"option_id": "o1", "user_id": "ann"}))
        .await;
    assert_eq!(s, 202);
    assert_eq!(answer.get("tally"), None, "{answer}");
    assert_eq!(
        (answer["total"].as_i64(), answer["results"].as_str()),
        (Some(1), Some("hidden"))
    );
}

#[tokio::test]
async fn after_vote_results_come_with_a_token_that_opens_the_polls_streams() {
    let app = spawn_app_with_secrets().await;
    app.mark_restored().await;
    let poll = app
        .create_poll_with(question(2, json!({"results": "after_vote"})))
        .await;
    let (s, answer) = app
        .vote_with(&poll, json!({"option_id": "o2", "user_id": "ann"}))
        .await;
    assert_eq!(s, 202);
    assert_eq!(answer["tally"], json!({"o1": 0, "o2": 1}));
    let token = answer["results_token"].as_str().expect("a results token");
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        domain::stream_token::verify(
            STREAM_SECRET.as_bytes(),
            &domain::stream_token::poll_scope(&poll),
            token,
            now
        ),
        Ok(())
    );
}

#[tokio::test]
async fn a_voter_may_move_their_vote_when_the_poll_allows_and_is_still_one_voter() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let fixed = app.create_poll_with(question(2, json!({}))).await;
    app.vote_with(&fixed, json!({"option_id": "o1", "user_id": "ann"}))
        .await;
    let (s, _) = app
        .vote_with(&fixed, json!({"option_id": "o2", "user_id": "ann"}))
        .await;
    assert_eq!(s, 409, "without allow_change a second vote is a duplicate");

    let movable = app
        .create_poll_with(question(3, json!({"allow_change": true})))
        .await;
    app.vote_with(&movable, json!({"option_id": "o1", "user_id": "ann"}))
        .await;
    let (s, moved) = app
        .vote_with(&movable, json!({"option_id": "o3", "user_id": "ann"}))
        .await;
    assert_eq!(s, 202);
    assert_eq!(moved["tally"], json!({"o1": 0, "o2": 0, "o3": 1}));
    assert_eq!(
        (moved["total"].as_i64(), moved["seq"].as_i64()),
        (Some(1), Some(2))
    );
    let (s, same) = app
        .vote_with(&movable, json!({"option_id": "o3", "user_id": "ann"}))
        .await;
    assert_eq!(
        (s, same["status"].as_str(), same["seq"].as_i64()),
        (202, Some("unchanged"), Some(2))
    );
    app.close(&movable).await;
    let (s, _) = app
        .vote_with(&movable, json!({"option_id": "o2", "user_id": "ann"}))
        .await;
    assert_eq!(s, 410, "no moves after the close");
}

#[tokio::test]
async fn a_hundred_voters_moving_ten_times_at_once_end_on_their_last_choices() {
    let app = spawn_app_with_secrets().await;
    app.mark_restored().await;
    let poll = app
        .create_poll_with(question(4, json!({"allow_change": true})))
        .await;
    // Each user's moves go one after another (their order is theirs), users all at once.
    let last: Vec<String> = futures_util::stream::iter((0..100).map(|u| {
        let (app, poll) = (&app, &poll);
        async move {
            let mut choice = String::new();
            for round in 0..10 {
                choice = format!("o{}", (u * 7 + round * 3) % 4 + 1);
                let (s, _) = app
                    .vote_with(
                        poll,
                        json!({"option_id": choice, "user_id": format!("u{u}")}),
                    )
                    .await;
                assert!(s == 202, "{s}");
            }
            choice
        }
    }))
    .buffer_unordered(100)
    .collect()
    .await;
    let mut expected: HashMap<String, i64> = (1..=4).map(|o| (format!("o{o}"), 0)).collect();
    for c in last {
        *expected.entry(c).or_default() += 1;
    }
    assert_eq!(app.tally(&poll).await, expected);
}

#[tokio::test]
async fn signed_polls_count_only_voters_the_host_signed_for_once() {
    let app = spawn_app_with_secrets().await;
    app.mark_restored().await;
    let poll = app
        .create_poll_with(question(2, json!({"voters": "signed"})))
        .await;
    let token = domain::poll::voter_token::mint(VOTER_SECRET.as_bytes(), &poll, "ann");
    let forged = domain::poll::voter_token::mint(b"guess", &poll, "ann");
    let others = domain::poll::voter_token::mint(VOTER_SECRET.as_bytes(), &poll, "bob");
    for (body, status, code) in [
        (
            json!({"option_id": "o1", "user_id": "ann"}),
            403,
            "voter_token_required",
        ),
        (
            json!({"option_id": "o1", "user_id": "ann", "voter_token": forged}),
            403,
            "voter_token_invalid",
        ),
        (
            json!({"option_id": "o1", "user_id": "ann", "voter_token": others}),
            403,
            "voter_token_invalid",
        ),
    ] {
        let (s, answer) = app.vote_with(&poll, body).await;
        assert_eq!(
            (s, answer["error"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let signed = json!({"option_id": "o1", "user_id": "ann", "voter_token": token});
    assert_eq!(app.vote_with(&poll, signed.clone()).await.0, 202);
    assert_eq!(app.vote_with(&poll, signed).await.0, 409);
    assert_eq!(app.tally(&poll).await.values().sum::<i64>(), 1);
}

#[tokio::test]
async fn a_signed_poll_cannot_be_made_without_a_voter_secret() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let res = app
        .client
        .post(format!("{}/v1/polls", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&question(2, json!({"voters": "signed"})))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn settings_are_validated_and_echoed() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let res = app
        .client
        .post(format!("{}/v1/polls", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&question(
            2,
            json!({"max_choices": 3, "results": "sometimes"}),
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["details"].as_array().map(Vec::len), Some(2), "{body}");
    let ok = app
        .client
        .post(format!("{}/v1/polls", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&question(
            3,
            json!({"max_choices": 2, "results": "after_vote", "allow_change": true}),
        ))
        .send()
        .await
        .expect("sent");
    let body: serde_json::Value = ok.json().await.expect("json");
    assert_eq!(
        (
            body["max_choices"].as_u64(),
            body["results"].as_str(),
            body["allow_change"].as_bool()
        ),
        (Some(2), Some("after_vote"), Some(true))
    );
}
