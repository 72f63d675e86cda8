//! Completing the OpenAPI documents: what every route answers the same way is written
//! once here, not in each route's annotation (where it was forgotten: 415 and 429 missing
//! on writes, error bodies without a schema).
//!
//! - Every operation that takes a body also answers 408 (the body did not arrive within
//!   `BODY_READ_TIMEOUT_MS`), 413 (over the route's limit) and 415 (a content type the
//!   route does not read).
//! - Every 4xx and 5xx answer without a body schema gets the [`Problem`] schema, which
//!   covers both error shapes of [`crate::problem`].

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

const PROBLEM: &str = "Problem";

/// Adds the shared answers and the `Problem` schema to `api`.
pub fn complete(api: &mut OpenApi) {
    for item in api.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(op);
        }
    }
    api.components
        .get_or_insert_with(utoipa::openapi::Components::new)
        .schemas
        .insert(PROBLEM.to_string(), RefOr::T(problem_schema()));
}

fn complete_operation(op: &mut Operation) {
    if op.request_body.is_some() {
        for (status, description) in [
            (
                "408",
                "The body did not arrive within BODY_READ_TIMEOUT_MS (the connection is closed)",
            ),
            ("413", "The body is over this route's limit"),
            (
                "415",
                "A Content-Type (or Content-Encoding) this route does not read",
            ),
        ] {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| RefOr::T(Response::new(description)));
        }
    }
    for (status, response) in &mut op.responses.responses {
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        if let RefOr::T(response) = response
            && response.content.is_empty()
        {
            response.content.insert(
                "application/json".to_string(),
                Content::new(Some(Ref::from_schema_name(PROBLEM))),
            );
        }
    }
}

/// `{"error": "<code or message>", "success"?: false, "details"?: [...]}`.
fn problem_schema() -> Schema {
    ObjectBuilder::new()
        .description(Some(
            "An error. Tally's own routes answer `{\"error\": \"<stable_code>\"}`; the event and stats routes (and their compatibility aliases) `{\"success\": false, \"error\": \"<message>\"}`. Either may list `details`.",
        ))
        .property("error", ObjectBuilder::new().schema_type(Type::String))
        .required("error")
        .property("success", ObjectBuilder::new().schema_type(Type::Boolean))
        .property(
            "details",
            ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)),
        )
        .build()
        .into()
}
