//! Reporting content: events, rooms and users reported by users, and the admin API that lists,
//! shows and clears the reports.

use crate::prelude::*;

backend_tests!(
    report_event_and_admin_lists_it,
    report_event_errors,
    report_room_and_user,
    reports_admin_api_needs_an_admin,
    reports_admin_api_rejects_bad_parameters,
);

const SECRET: &str = "reports-secret";

fn opts() -> ServerOptions {
    ServerOptions {
        shared_secret: Some(SECRET.to_owned()),
        ..Default::default()
    }
}

/// An admin account made with shared-secret registration.
async fn admin(server: &Server) -> Client {
    let anon = server.client();
    let nonce = anon.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let password = "admin-Passw0rd!";
    let body = json!({
        "nonce": nonce, "username": "root", "password": password, "admin": true,
        "mac": crypto::registration_mac(SECRET, &nonce, "root", password, true),
    });
    let resp = anon.post("/_synapse/admin/v1/register", &body).await.ok();
    anon.with_token(resp["access_token"].as_str().expect("access_token"))
}

async fn report_event_and_admin_lists_it(b: Backend) {
    let server = start_with(b, opts()).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let bad = alice.send_text(&room, "something awful").await;
    bob.post(
        &format!("{V3}/rooms/{}/report/{}", enc(&room), enc(&bad)),
        &json!({"reason": "this makes me sad", "score": -100}),
    )
    .await
    .ok();
    let root = admin(&server).await;
    let list = root.get("/_synapse/admin/v1/event_reports").await.ok();
    assert_eq!(list["total"], 1, "{list}");
    let r = &list["event_reports"][0];
    assert_eq!(r["event_id"], bad.as_str());
    assert_eq!(r["room_id"], room.as_str());
    assert_eq!(r["user_id"], bob.user_id.as_str());
    assert_eq!(r["sender"], alice.user_id.as_str());
    assert_eq!(r["reason"], "this makes me sad");
    assert_eq!(r["score"], -100);
    assert_eq!(r["name"], "Shared");
    assert!(r["received_ts"].as_i64().is_some_and(|t| t > 0), "{r}");
    let id = r["id"].as_i64().expect("id");

    // One report in full, with the event.
    let one = root
        .get(&format!("/_synapse/admin/v1/event_reports/{id}"))
        .await
        .ok();
    assert_eq!(one["event_json"]["content"]["body"], "something awful");
    // Filters and paging.
    let second = alice.send_text(&room, "more").await;
    bob.post(
        &format!("{V3}/rooms/{}/report/{}", enc(&room), enc(&second)),
        &json!({"reason": "again"}),
    )
    .await
    .ok();
    let page = root
        .get("/_synapse/admin/v1/event_reports?limit=1")
        .await
        .ok();
    assert_eq!(page["total"], 2);
    assert_eq!(page["event_reports"][0]["reason"], "again", "newest first");
    assert_eq!(page["next_token"], 1);
    let rest = root
        .get("/_synapse/admin/v1/event_reports?limit=1&from=1")
        .await
        .ok();
    assert_eq!(rest["event_reports"][0]["reason"], "this makes me sad");
    assert!(rest.get("next_token").is_none(), "{rest}");
    let by_alice = root
        .get(&format!(
            "/_synapse/admin/v1/event_reports?user_id={}",
            enc(&alice.user_id)
        ))
        .await
        .ok();
    assert_eq!(by_alice["total"], 0);

    // Cleared reports are gone.
    root.delete(&format!("/_synapse/admin/v1/event_reports/{id}"))
        .await
        .ok();
    root.get(&format!("/_synapse/admin/v1/event_reports/{id}"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let after = root.get("/_synapse/admin/v1/event_reports").await.ok();
    assert_eq!(after["total"], 1);
}

async fn report_event_errors(b: Backend) {
    let server = start(b).await;
    let (alice, _bob, room) = public_room_with_two(&server).await;
    let ev = alice.send_text(&room, "hello").await;
    let carol = server.register("carol").await;
    let path = format!("{V3}/rooms/{}/report/{}", enc(&room), enc(&ev));
    // Not joined: the same 404 as for an unknown event.
    carol
        .post(&path, &json!({"reason": "x"}))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .post(
            &format!("{V3}/rooms/{}/report/{}", enc(&room), enc("$nope")),
            &json!({"reason": "x"}),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
    // An event of another room.
    let other = alice.create_room(json!({})).await;
    let elsewhere = alice.send_text(&other, "elsewhere").await;
    alice
        .post(
            &format!("{V3}/rooms/{}/report/{}", enc(&room), enc(&elsewhere)),
            &json!({}),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .post(&path, &json!({"score": "very bad"}))
        .await
        .expect_err(400, "M_BAD_JSON");
    alice
        .post(&path, &json!({"score": 5}))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post(&path, &json!({"reason": "x".repeat(1001)}))
        .await
        .expect_err(400, "M_BAD_JSON");
    server
        .client()
        .post(&path, &json!({}))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

async fn report_room_and_user(b: Backend) {
    let server = start_with(b, opts()).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    // bob is not in the room and may still report it.
    bob.post(
        &format!("{V3}/rooms/{}/report", enc(&room)),
        &json!({"reason": "bad room"}),
    )
    .await
    .ok();
    bob.post(
        &format!("{V3}/rooms/{}/report", enc("!unknown:localhost")),
        &json!({"reason": "x"}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    bob.post(
        &format!("{V3}/users/{}/report", enc(&alice.user_id)),
        &json!({"reason": "rude"}),
    )
    .await
    .ok();
    bob.post(
        &format!("{V3}/users/{}/report", enc("@ghost:localhost")),
        &json!({"reason": "x"}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");

    let root = admin(&server).await;
    let rooms = root.get("/_synapse/admin/v1/room_reports").await.ok();
    assert_eq!(rooms["total"], 1, "{rooms}");
    assert_eq!(rooms["room_reports"][0]["room_id"], room.as_str());
    assert_eq!(rooms["room_reports"][0]["name"], "Secret");
    assert_eq!(rooms["room_reports"][0]["reason"], "bad room");
    let users = root.get("/_synapse/admin/v1/user_reports").await.ok();
    assert_eq!(users["total"], 1, "{users}");
    assert_eq!(
        users["user_reports"][0]["target_user_id"],
        alice.user_id.as_str()
    );
    assert_eq!(users["user_reports"][0]["user_id"], bob.user_id.as_str());
    // Reports are kept across a restart.
    let mut server = server;
    server.restart().await;
    let again = root.get("/_synapse/admin/v1/user_reports").await.ok();
    assert_eq!(again["total"], 1);
}

async fn reports_admin_api_needs_an_admin(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get("/_synapse/admin/v1/event_reports")
        .await
        .expect_err(403, "M_FORBIDDEN");
    server
        .client()
        .get("/_synapse/admin/v1/event_reports")
        .await
        .expect_err(401, "M_MISSING_TOKEN");
    alice
        .get("/_synapse/admin/v1/event_reports/1")
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn reports_admin_api_rejects_bad_parameters(b: Backend) {
    let server = start_with(b, opts()).await;
    let root = admin(&server).await;
    for path in [
        "/_synapse/admin/v1/event_reports?limit=abc",
        "/_synapse/admin/v1/event_reports?from=-1",
        "/_synapse/admin/v1/room_reports?dir=sideways",
        "/_synapse/admin/v1/user_reports/%ff",
        "/_synapse/admin/v1/event_reports/not-a-number",
    ] {
        root.get(path).await.expect_err(400, "M_INVALID_PARAM");
    }
}
