//! Filters: POST/GET /user/{userId}/filter.

use crate::prelude::*;

backend_tests!(
    create_and_get_filter,
    unknown_filter_is_404,
    filter_for_another_user_is_forbidden,
    invalid_filter_is_400,
);

fn filter_path(user: &str) -> String {
    format!("{V3}/user/{}/filter", enc(user))
}

async fn create_and_get_filter(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let filter = json!({
        "event_fields": ["type", "content", "sender"],
        "event_format": "client",
        "presence": {"not_senders": ["@spam:example.org"]},
        "room": {
            "timeline": {"limit": 10, "types": ["m.room.message"]},
            "state": {"lazy_load_members": true},
        },
    });
    let created = alice.post(&filter_path(&alice.user_id), &filter).await.ok();
    let id = created["filter_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no filter_id: {created}"));
    assert!(!id.starts_with('{'), "filter ids must not start with {{");
    let got = alice
        .get(&format!("{}/{}", filter_path(&alice.user_id), enc(id)))
        .await
        .ok();
    assert_eq!(got["room"]["timeline"]["limit"], 10, "{got}");
    assert_eq!(
        got["room"]["timeline"]["types"],
        json!(["m.room.message"]),
        "{got}"
    );
    assert_eq!(got["room"]["state"]["lazy_load_members"], true, "{got}");
    assert_eq!(
        got["event_fields"],
        json!(["type", "content", "sender"]),
        "{got}"
    );
    assert_eq!(
        got["presence"]["not_senders"],
        json!(["@spam:example.org"]),
        "{got}"
    );
}

async fn unknown_filter_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&format!("{}/999999", filter_path(&alice.user_id)))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn filter_for_another_user_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    bob.post(&filter_path(&alice.user_id), &json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Bob cannot read alice's filters either.
    let created = alice
        .post(&filter_path(&alice.user_id), &json!({}))
        .await
        .ok();
    let id = created["filter_id"].as_str().expect("filter_id");
    let (status, body) = bob
        .get(&format!("{}/{}", filter_path(&alice.user_id), enc(id)))
        .await;
    assert!(status == 403 || status == 404, "{status} {body}");
}

async fn invalid_filter_is_400(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let (status, body) = alice
        .post(
            &filter_path(&alice.user_id),
            &json!({"room": {"timeline": {"limit": "ten"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}
