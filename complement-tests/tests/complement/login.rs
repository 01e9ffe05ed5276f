//! Login, whoami and logout.

use crate::prelude::*;

backend_tests!(
    login_flows_include_password,
    login_by_localpart,
    login_by_full_user_id,
    login_wrong_password_is_403,
    repeated_wrong_passwords_are_rate_limited,
    login_unknown_user_is_403,
    login_unknown_type_is_400,
    login_without_type_is_400,
    login_with_device_id_reuses_device,
    whoami,
    logout_invalidates_only_that_token,
    logout_all_invalidates_every_token,
);

fn password_login(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
}

async fn login_flows_include_password(b: Backend) {
    let server = start(b).await;
    let body = server.client().get(&format!("{V3}/login")).await.ok();
    assert!(
        arr(&body["flows"])
            .iter()
            .any(|f| f["type"] == "m.login.password"),
        "m.login.password not offered: {body}"
    );
}

async fn login_by_localpart(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let body = server
        .client()
        .login_raw(&password_login("alice", &alice.password))
        .await
        .ok();
    assert_eq!(body["user_id"], alice.user_id.as_str());
    let token = body["access_token"].as_str().expect("access_token");
    assert_ne!(
        Some(token),
        alice.token.as_deref(),
        "login must issue a new token"
    );
    let device = body["device_id"].as_str().expect("device_id");
    assert_ne!(device, alice.device_id, "login must create a new device");
    let who = alice.with_token(token).whoami().await.ok();
    assert_eq!(who["user_id"], alice.user_id.as_str());
    assert_eq!(who["device_id"], device);
}

async fn login_by_full_user_id(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let session = server.client().login(&alice.user_id, &alice.password).await;
    assert_eq!(session.user_id, alice.user_id);
    session.whoami().await.ok();
}

async fn login_wrong_password_is_403(b: Backend) {
    let server = start(b).await;
    server.register("alice").await;
    server
        .client()
        .login_raw(&password_login("alice", "definitely-wrong"))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

/// One login attempt, without the harness's retry on 429.
async fn login_once(c: &Client, user: &str, password: &str) -> (u16, Value) {
    let body = password_login(user, password).to_string();
    let resp = c
        .raw(
            Method::POST,
            &format!("{V3}/login"),
            Some(&body),
            &[("content-type", "application/json")],
            false,
        )
        .await;
    complement_tests::client::into_resp(resp).await
}

async fn repeated_wrong_passwords_are_rate_limited(b: Backend) {
    let opts = ServerOptions {
        extra_toml: "[limits]\nfailed_logins_per_minute = 3\n".into(),
        ..Default::default()
    };
    let server = start_with(b, opts).await;
    let alice = server.register("alice").await;
    let anon = server.client();
    for _ in 0..3 {
        login_once(&anon, "alice", "wrong-guess")
            .await
            .expect_err(403, "M_FORBIDDEN");
    }
    // The allowance is used up: refused before the password is looked at, even the right one.
    login_once(&anon, "alice", "wrong-guess")
        .await
        .expect_err(403, "M_FORBIDDEN");
    let limited = login_once(&anon, "alice", &alice.password)
        .await
        .expect_err(429, "M_LIMIT_EXCEEDED");
    let wait = limited["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(wait > 0 && wait <= 20_000, "{limited}");
    // Logged-in sessions are untouched.
    alice.whoami().await.ok();
}

async fn login_unknown_user_is_403(b: Backend) {
    let server = start(b).await;
    server
        .client()
        .login_raw(&password_login("nobody", "whatever-Passw0rd"))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn login_unknown_type_is_400(b: Backend) {
    let server = start(b).await;
    server.register("alice").await;
    let (status, body) = server
        .client()
        .login_raw(&json!({"type": "com.example.not_a_login_type", "user": "alice"}))
        .await;
    assert_eq!(status, 400, "unknown login type: {body}");
    assert!(body["errcode"].is_string(), "{body}");
}

async fn login_without_type_is_400(b: Backend) {
    let server = start(b).await;
    server.register("alice").await;
    for body in [
        json!({}),
        json!({"user": "alice", "password": "x"}),
        json!({"type": 5, "user": "alice"}),
    ] {
        let (status, resp) = server.client().login_raw(&body).await;
        assert_eq!(status, 400, "{body} -> {resp}");
        assert_eq!(resp["errcode"], "M_MISSING_PARAM", "{body} -> {resp}");
    }
}

async fn login_with_device_id_reuses_device(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let anon = server.client();
    let mut req = password_login("alice", &alice.password);
    req["device_id"] = json!("REUSED");
    req["initial_device_display_name"] = json!("Laptop");
    let first = anon.login_raw(&req).await.ok();
    assert_eq!(first["device_id"], "REUSED");
    let first_token = first["access_token"].as_str().expect("token").to_owned();

    let second = anon.login_raw(&req).await.ok();
    assert_eq!(second["device_id"], "REUSED");
    let second_token = second["access_token"].as_str().expect("token").to_owned();
    assert_ne!(first_token, second_token);

    // Setting device_id invalidates tokens previously assigned to that device.
    alice
        .with_token(&first_token)
        .whoami()
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    let who = alice.with_token(&second_token).whoami().await.ok();
    assert_eq!(who["device_id"], "REUSED");

    let devices = alice.get(&format!("{V3}/devices")).await.ok();
    let reused: Vec<_> = arr(&devices["devices"])
        .into_iter()
        .filter(|d| d["device_id"] == "REUSED")
        .collect();
    assert_eq!(reused.len(), 1, "device listed once: {devices}");
}

async fn whoami(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let who = alice.whoami().await.ok();
    assert_eq!(who["user_id"], alice.user_id.as_str());
    assert_eq!(who["device_id"], alice.device_id.as_str());
    assert!(
        who["is_guest"].is_null() || who["is_guest"] == false,
        "{who}"
    );
}

async fn logout_invalidates_only_that_token(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other = alice.login_again().await;
    other.post(&format!("{V3}/logout"), &json!({})).await.ok();
    other.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    alice.whoami().await.ok();
    // The device of the logged-out token is gone.
    let devices = alice.get(&format!("{V3}/devices")).await.ok();
    assert!(
        !arr(&devices["devices"])
            .iter()
            .any(|d| d["device_id"] == other.device_id.as_str()),
        "logged-out device still listed: {devices}"
    );
}

async fn logout_all_invalidates_every_token(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let second = alice.login_again().await;
    let third = alice.login_again().await;
    second
        .post(&format!("{V3}/logout/all"), &json!({}))
        .await
        .ok();
    for c in [&alice, &second, &third] {
        c.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    }
    // The password still works.
    let fresh = alice.login_again().await;
    let devices = fresh.get(&format!("{V3}/devices")).await.ok();
    assert_eq!(arr(&devices["devices"]).len(), 1, "{devices}");
}
