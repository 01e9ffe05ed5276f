//! Device management: list, get, rename, delete (with UIA), bulk delete.

use crate::prelude::*;

backend_tests!(
    list_devices,
    get_device,
    get_unknown_device_is_404,
    rename_device,
    delete_device_requires_uia,
    delete_devices_bulk,
    devices_of_other_users_are_invisible,
    last_seen_reflects_use,
);

async fn login_named(server: &Server, user: &Client, display_name: &str) -> Client {
    let body = server
        .client()
        .login_raw(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": user.password,
            "initial_device_display_name": display_name,
        }))
        .await
        .ok();
    user.from_login_response(&body, &user.password)
}

async fn list_devices(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let laptop = login_named(&server, &alice, "Laptop").await;
    let body = alice.get(&format!("{V3}/devices")).await.ok();
    let devices = arr(&body["devices"]);
    assert_eq!(devices.len(), 2, "{body}");
    assert!(
        devices
            .iter()
            .any(|d| d["device_id"] == alice.device_id.as_str())
    );
    let lap = devices
        .iter()
        .find(|d| d["device_id"] == laptop.device_id.as_str())
        .unwrap_or_else(|| panic!("laptop missing: {body}"));
    assert_eq!(lap["display_name"], "Laptop");
    if !lap["last_seen_ts"].is_null() {
        assert!(lap["last_seen_ts"].is_i64() || lap["last_seen_ts"].is_u64());
    }
}

async fn get_device(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let laptop = login_named(&server, &alice, "Laptop").await;
    let body = alice
        .get(&format!("{V3}/devices/{}", enc(&laptop.device_id)))
        .await
        .ok();
    assert_eq!(body["device_id"], laptop.device_id.as_str());
    assert_eq!(body["display_name"], "Laptop");
}

async fn get_unknown_device_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&format!("{V3}/devices/NOSUCHDEVICE"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let (status, body) = alice
        .put(
            &format!("{V3}/devices/NOSUCHDEVICE"),
            &json!({"display_name": "x"}),
        )
        .await;
    assert_eq!(status, 404, "renaming an unknown device: {body}");
}

async fn rename_device(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/devices/{}", enc(&alice.device_id));
    alice
        .put(&path, &json!({"display_name": "Work phone"}))
        .await
        .ok();
    let body = alice.get(&path).await.ok();
    assert_eq!(body["display_name"], "Work phone");
    // Renaming one device does not touch another.
    let other = alice.login_again().await;
    alice
        .put(&path, &json!({"display_name": "Home phone"}))
        .await
        .ok();
    let body = alice
        .get(&format!("{V3}/devices/{}", enc(&other.device_id)))
        .await
        .ok();
    assert_ne!(body["display_name"], "Home phone");
}

async fn delete_device_requires_uia(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other = alice.login_again().await;
    let path = format!("{V3}/devices/{}", enc(&other.device_id));

    let first = alice.delete_with(&path, &json!({})).await;
    let uia = first.clone().expect_status(401);
    assert!(
        arr(&uia["flows"])
            .iter()
            .any(|f| arr(&f["stages"]).contains(&json!("m.login.password"))),
        "{uia}"
    );
    // Still there after the 401.
    other.whoami().await.ok();

    alice
        .uia_step(
            Method::DELETE,
            &path,
            &json!({}),
            &first,
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": alice.user_id},
                "password": alice.password,
            }),
        )
        .await
        .ok();
    other.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    alice.get(&path).await.expect_err(404, "M_NOT_FOUND");
    let body = alice.get(&format!("{V3}/devices")).await.ok();
    assert_eq!(arr(&body["devices"]).len(), 1, "{body}");
}

async fn delete_devices_bulk(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let second = alice.login_again().await;
    let third = alice.login_again().await;
    let resp = alice
        .uia(
            Method::POST,
            &format!("{V3}/delete_devices"),
            json!({"devices": [second.device_id, third.device_id]}),
        )
        .await;
    resp.ok();
    second.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    third.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    alice.whoami().await.ok();
    let body = alice.get(&format!("{V3}/devices")).await.ok();
    let ids: Vec<Value> = arr(&body["devices"])
        .iter()
        .map(|d| d["device_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(alice.device_id)], "{body}");
}

async fn devices_of_other_users_are_invisible(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    bob.get(&format!("{V3}/devices/{}", enc(&alice.device_id)))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let body = bob.get(&format!("{V3}/devices")).await.ok();
    assert!(
        !arr(&body["devices"])
            .iter()
            .any(|d| d["device_id"] == alice.device_id.as_str()),
        "{body}"
    );
    // Bob cannot delete alice's device (even with his own password).
    let resp = bob
        .uia(
            Method::DELETE,
            &format!("{V3}/devices/{}", enc(&alice.device_id)),
            json!({}),
        )
        .await;
    let _ = resp;
    alice.whoami().await.ok();
}

async fn last_seen_reflects_use(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other = alice.login_again().await;
    other.whoami().await.ok();
    let body = alice
        .get(&format!("{V3}/devices/{}", enc(&other.device_id)))
        .await
        .ok();
    assert!(
        body["last_seen_ts"].as_i64().is_some_and(|t| t > 0),
        "{body}"
    );
    assert!(body["last_seen_ip"].is_string(), "{body}");
}
