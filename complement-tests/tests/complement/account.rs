//! Password change and account deactivation (user-interactive auth with m.login.password).

use crate::prelude::*;

backend_tests!(
    change_password_requires_uia_with_password,
    change_password_logs_out_other_devices,
    change_password_keep_other_devices,
    change_password_wrong_password_fails,
    deactivate_account,
    deactivate_wrong_password_fails,
    third_party_ids_list,
);

async fn change_password_requires_uia_with_password(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/account/password");
    let body = json!({"new_password": "brand-New-Passw0rd"});
    let first = alice.post(&path, &body).await;
    let uia = first.clone().expect_status(401);
    assert!(
        arr(&uia["flows"])
            .iter()
            .any(|f| arr(&f["stages"]).contains(&json!("m.login.password"))),
        "m.login.password not offered: {uia}"
    );
    alice
        .uia_step(
            Method::POST,
            &path,
            &body,
            &first,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": alice.user_id},
                "password": alice.password,
            }),
        )
        .await
        .ok();
    let anon = server.client();
    anon.login_raw(&json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": alice.password,
    }))
    .await
    .expect_err(403, "M_FORBIDDEN");
    anon.login("alice", "brand-New-Passw0rd").await;
}

async fn change_password_logs_out_other_devices(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other = alice.login_again().await;
    alice
        .uia(
            Method::POST,
            &format!("{V3}/account/password"),
            json!({"new_password": "brand-New-Passw0rd"}),
        )
        .await
        .ok();
    // logout_devices defaults to true: other tokens are revoked ...
    other.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    // ... but the requesting one should not be.
    alice.whoami().await.ok();
}

async fn change_password_keep_other_devices(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other = alice.login_again().await;
    alice
        .uia(
            Method::POST,
            &format!("{V3}/account/password"),
            json!({"new_password": "brand-New-Passw0rd", "logout_devices": false}),
        )
        .await
        .ok();
    other.whoami().await.ok();
    alice.whoami().await.ok();
    server.client().login("alice", "brand-New-Passw0rd").await;
}

async fn change_password_wrong_password_fails(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/account/password");
    let body = json!({"new_password": "brand-New-Passw0rd"});
    let first = alice.post(&path, &body).await;
    first.clone().expect_status(401);
    let failed = alice
        .uia_step(
            Method::POST,
            &path,
            &body,
            &first,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": alice.user_id},
                "password": "not-the-password",
            }),
        )
        .await;
    let failed = failed.expect_status(401);
    assert_eq!(failed["errcode"], "M_FORBIDDEN", "{failed}");
    assert!(failed["flows"].is_array(), "{failed}");
    // Unchanged.
    server.client().login("alice", &alice.password).await;
}

async fn deactivate_account(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other = alice.login_again().await;
    let path = format!("{V3}/account/deactivate");
    let first = alice.post(&path, &json!({})).await;
    first.clone().expect_status(401);
    let done = alice.uia(Method::POST, &path, json!({})).await.ok();
    assert_eq!(
        done["id_server_unbind_result"], "success",
        "no identifiers to unbind => success: {done}"
    );
    alice.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    other.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    let (status, body) = server
        .client()
        .login_raw(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": alice.password,
        }))
        .await;
    assert_eq!(status, 403, "deactivated user logged in: {body}");
    assert!(
        body["errcode"] == "M_FORBIDDEN" || body["errcode"] == "M_USER_DEACTIVATED",
        "{body}"
    );
}

async fn deactivate_wrong_password_fails(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/account/deactivate");
    let first = alice.post(&path, &json!({})).await;
    first.clone().expect_status(401);
    let failed = alice
        .uia_step(
            Method::POST,
            &path,
            &json!({}),
            &first,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": alice.user_id},
                "password": "wrong",
            }),
        )
        .await;
    failed.expect_err(401, "M_FORBIDDEN");
    alice.whoami().await.ok();
}

async fn third_party_ids_list(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let body = alice.get(&format!("{V3}/account/3pid")).await.ok();
    assert!(body["threepids"].is_array(), "{body}");
}
