//! `GET /v1/polls/{poll_id}`: persisted results, as the poll's settings allow them shown.

use crate::helpers::spawn_app;
use serde_json::json;

async fn poll_with(app: &crate::helpers::TestApp, id: &str, settings: &str, closed: bool) {
    app.sql(&format!(
        "INSERT INTO polls (poll_id, question, created_at, shard, closed_at, {settings_columns})
             VALUES ('{id}', 'Q?', now(), 0, {closed_at}, {settings});
         INSERT INTO poll_options (poll_id, option_id, label, position, votes) VALUES
             ('{id}', 'o1', 'a', 0, 2), ('{id}', 'o2', 'b', 1, 1);
         INSERT INTO votes (vote_id, poll_id, option_id, option_ids, user_id, seq, voted_at) VALUES
             (gen_random_uuid(), '{id}', 'o1', '{{o1,o2}}', 'u1', 1, now()),
             (gen_random_uuid(), '{id}', 'o1', '{{o1}}', 'u2', 2, now());",
        settings_columns = "max_choices, results",
        closed_at = if closed { "now()" } else { "NULL" },
    ))
    .await;
}

#[tokio::test]
async fn counts_are_withheld_while_the_settings_hide_them_and_total_counts_voters() {
    let app = spawn_app().await;
    poll_with(&app, "open-hidden", "2, 'after_close'", false).await;
    poll_with(&app, "closed-hidden", "2, 'after_vote'", true).await;
    poll_with(&app, "public", "2, 'always'", false).await;
    let (status, hidden) = app.get_json("/v1/polls/open-hidden").await;
    assert_eq!(status, 200, "{hidden}");
    assert_eq!(hidden["hidden"], true);
    assert_eq!(
        hidden["options"],
        json!([{"id": "o1", "label": "a"}, {"id": "o2", "label": "b"}]),
        "no votes while hidden"
    );
    assert_eq!(hidden["total"], 2, "two voters, three choices");
    assert_eq!(hidden["settings"]["results"], "after_close");
    let (_, closed) = app.get_json("/v1/polls/closed-hidden").await;
    assert_eq!(closed["options"][0]["votes"], 2, "shown once closed");
    assert!(closed.get("hidden").is_none());
    let (_, public) = app.get_json("/v1/polls/public").await;
    assert_eq!(public["options"][1]["votes"], 1);
    assert!(public.get("watchers").is_some());
}
