//! Profiles: displayname, avatar_url, propagation into member events.

use crate::prelude::*;

backend_tests!(
    set_and_get_displayname,
    set_and_get_avatar_url,
    full_profile,
    unknown_user_profile_is_404,
    setting_another_users_profile_is_forbidden,
    displayname_change_updates_member_events,
    avatar_url_must_be_mxc,
    custom_profile_fields,
    delete_displayname,
);

async fn set_and_get_displayname(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/profile/{}/displayname", enc(&alice.user_id));
    alice
        .put(&path, &json!({"displayname": "Alice Liddell"}))
        .await
        .ok();
    let body = alice.get(&path).await.ok();
    assert_eq!(body["displayname"], "Alice Liddell");
    // Readable by others.
    let bob = server.register("bob").await;
    let body = bob.get(&path).await.ok();
    assert_eq!(body["displayname"], "Alice Liddell");
}

async fn set_and_get_avatar_url(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/profile/{}/avatar_url", enc(&alice.user_id));
    let url = format!("mxc://{}/AbCdEf123", server.server_name);
    alice.put(&path, &json!({"avatar_url": url})).await.ok();
    let body = alice.get(&path).await.ok();
    assert_eq!(body["avatar_url"], url.as_str());
}

async fn full_profile(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let url = format!("mxc://{}/pic", server.server_name);
    alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            &json!({"displayname": "Al"}),
        )
        .await
        .ok();
    alice
        .put(
            &format!("{V3}/profile/{}/avatar_url", enc(&alice.user_id)),
            &json!({"avatar_url": url}),
        )
        .await
        .ok();
    let body = alice
        .get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    assert_eq!(body["displayname"], "Al");
    assert_eq!(body["avatar_url"], url.as_str());
}

async fn unknown_user_profile_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&format!("{V3}/profile/{}", enc(&server.user_id("nobody"))))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn setting_another_users_profile_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    bob.put(
        &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
        &json!({"displayname": "Hacked"}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    bob.put(
        &format!("{V3}/profile/{}/avatar_url", enc(&alice.user_id)),
        &json!({"avatar_url": "mxc://x/y"}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
}

async fn displayname_change_updates_member_events(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = bob.sync_token().await;
    alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            &json!({"displayname": "Queen Alice"}),
        )
        .await
        .ok();
    let member = bob.state(&room, "m.room.member", &alice.user_id).await.ok();
    assert_eq!(member["membership"], "join");
    assert_eq!(member["displayname"], "Queen Alice");
    bob.sync_until(Some(&since), |s| {
        timeline(s, &room).iter().any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == alice.user_id.as_str()
                && e["content"]["displayname"] == "Queen Alice"
        })
    })
    .await;
    let joined = bob
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    assert_eq!(
        joined["joined"][alice.user_id.as_str()]["display_name"],
        "Queen Alice"
    );
}

async fn avatar_url_must_be_mxc(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/profile/{}/avatar_url", enc(&alice.user_id));
    let (status, body) = alice
        .put(&path, &json!({"avatar_url": "https://example.org/pic.png"}))
        .await;
    assert_eq!(status, 400, "{body}");
    // An empty string clears the avatar (what Element sends).
    let url = format!("mxc://{}/pic", server.server_name);
    alice.put(&path, &json!({"avatar_url": url})).await.ok();
    alice.put(&path, &json!({"avatar_url": ""})).await.ok();
    let body = alice
        .get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    assert!(body.get("avatar_url").is_none(), "{body}");
}

async fn custom_profile_fields(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let tz = format!("{V3}/profile/{}/m.tz", enc(&alice.user_id));
    alice.put(&tz, &json!({"m.tz": "Europe/Paris"})).await.ok();
    let body = bob.get(&tz).await.ok();
    assert_eq!(body["m.tz"], "Europe/Paris");
    let custom = format!("{V3}/profile/{}/org.example.job", enc(&alice.user_id));
    alice
        .put(&custom, &json!({"org.example.job": {"title": "Queen"}}))
        .await
        .ok();
    let full = alice
        .get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    assert_eq!(full["m.tz"], "Europe/Paris", "{full}");
    assert_eq!(full["org.example.job"]["title"], "Queen", "{full}");
    bob.put(&tz, &json!({"m.tz": "UTC"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice.delete(&custom).await.ok();
    alice.get(&custom).await.expect_err(404, "M_NOT_FOUND");
}

async fn delete_displayname(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/profile/{}/displayname", enc(&alice.user_id));
    alice.put(&path, &json!({"displayname": "Al"})).await.ok();
    alice.delete(&path).await.ok();
    let body = alice
        .get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    assert!(body.get("displayname").is_none(), "{body}");
}
