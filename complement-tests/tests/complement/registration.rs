//! Account registration: UIA dummy flow, availability, errors, tokens, shared-secret admin API.

use crate::prelude::*;

backend_tests!(
    register_with_dummy_uia,
    register_without_session,
    register_with_device_id_and_display_name,
    register_inhibit_login,
    username_availability,
    register_taken_username_fails_before_uia,
    register_invalid_username,
    registration_disabled_is_403,
    registration_token_flow,
    registration_token_validity,
    registration_token_wrong_token,
    shared_secret_register,
    shared_secret_register_rejects_bad_mac_and_reused_nonce,
    shared_secret_register_disabled_without_secret,
    shared_secret_register_works_when_registration_disabled,
    register_user_command_uses_shared_secret,
);

fn user_id_localpart_is_valid(user_id: &str, server_name: &str) -> bool {
    let Some(rest) = user_id.strip_prefix('@') else {
        return false;
    };
    let Some(local) = rest.strip_suffix(&format!(":{server_name}")) else {
        return false;
    };
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c))
}

async fn register_with_dummy_uia(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    let body = json!({"username": "alice", "password": Client::default_password("alice")});
    // A UIA endpoint never succeeds without auth: 401 with flows and a session.
    let first = anon.post(&format!("{V3}/register"), &body).await;
    let uia = first.clone().expect_status(401);
    let flows = arr(&uia["flows"]);
    assert!(
        flows
            .iter()
            .any(|f| arr(&f["stages"]) == vec![json!("m.login.dummy")]),
        "no [m.login.dummy] flow offered: {uia}"
    );
    assert!(uia["session"].is_string(), "no session: {uia}");
    assert!(
        uia["params"].is_object() || uia["params"].is_null(),
        "params must be an object: {uia}"
    );

    let done = anon
        .uia_step(
            Method::POST,
            &format!("{V3}/register"),
            &body,
            &first,
            json!({"type": "m.login.dummy"}),
        )
        .await
        .ok();
    assert_eq!(done["user_id"], server.user_id("alice"));
    let token = done["access_token"].as_str().expect("access_token");
    let device = done["device_id"].as_str().expect("device_id");
    assert!(!token.is_empty() && !device.is_empty());

    let who = anon.with_token(token).whoami().await.ok();
    assert_eq!(who["user_id"], server.user_id("alice"));
    assert_eq!(who["device_id"], device);
}

async fn register_without_session(b: Backend) {
    // The contract: a single POST with `auth: {type: m.login.dummy}` registers.
    let server = start(b).await;
    let anon = server.client();
    let done = anon
        .post(
            &format!("{V3}/register"),
            &json!({
                "username": "carol",
                "password": "pw-carol-Secret1!",
                "auth": {"type": "m.login.dummy"},
            }),
        )
        .await
        .ok();
    assert_eq!(done["user_id"], server.user_id("carol"));
    anon.login("carol", "pw-carol-Secret1!").await;
}

async fn register_with_device_id_and_display_name(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    let resp = anon
        .register_raw(
            json!({
                "username": "alice",
                "password": "pw-alice-Secret1!",
                "device_id": "MYDEVICE",
                "initial_device_display_name": "Alice's phone",
            }),
            None,
        )
        .await
        .ok();
    assert_eq!(resp["device_id"], "MYDEVICE");
    let alice = anon.from_login_response(&resp, "pw-alice-Secret1!");
    let dev = alice.get(&format!("{V3}/devices/MYDEVICE")).await.ok();
    assert_eq!(dev["device_id"], "MYDEVICE");
    assert_eq!(dev["display_name"], "Alice's phone");
}

async fn register_inhibit_login(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    let resp = anon
        .register_raw(
            json!({
                "username": "alice",
                "password": "pw-alice-Secret1!",
                "inhibit_login": true,
            }),
            None,
        )
        .await
        .ok();
    assert_eq!(resp["user_id"], server.user_id("alice"));
    assert!(
        resp["access_token"].is_null(),
        "inhibit_login must not return an access token: {resp}"
    );
    // The account exists and can log in.
    let alice = anon.login("alice", "pw-alice-Secret1!").await;
    let devices = alice.get(&format!("{V3}/devices")).await.ok();
    assert_eq!(
        arr(&devices["devices"]).len(),
        1,
        "inhibit_login must not create a device: {devices}"
    );
}

async fn username_availability(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    let body = anon
        .get(&format!("{V3}/register/available?username=fresh_name"))
        .await
        .ok();
    assert_eq!(body["available"], true);

    server.register("fresh_name").await;
    anon.get(&format!("{V3}/register/available?username=fresh_name"))
        .await
        .expect_err(400, "M_USER_IN_USE");

    anon.get(&format!(
        "{V3}/register/available?username={}",
        enc("not valid:name")
    ))
    .await
    .expect_err(400, "M_INVALID_USERNAME");
}

async fn register_taken_username_fails_before_uia(b: Backend) {
    let server = start(b).await;
    server.register("alice").await;
    let anon = server.client();
    // The spec requires these checks before user-interactive auth: no 401 first.
    anon.post(
        &format!("{V3}/register"),
        &json!({"username": "alice", "password": "another-Passw0rd"}),
    )
    .await
    .expect_err(400, "M_USER_IN_USE");
    // Also when going through the whole flow.
    let resp = anon
        .register_raw(
            json!({"username": "alice", "password": "another-Passw0rd"}),
            None,
        )
        .await;
    resp.expect_err(400, "M_USER_IN_USE");
}

async fn register_invalid_username(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    for name in ["has space", "colon:inside", "quote\"d"] {
        let body = json!({"username": name, "password": "pw-Secret1!"});
        let first = anon.post(&format!("{V3}/register"), &body).await;
        match first.0 {
            // Rejected before UIA, as the spec requires for invalid names.
            400 => {
                first.expect_err(400, "M_INVALID_USERNAME");
            }
            // The spec also allows mapping the name onto a valid localpart.
            401 => {
                let done = anon.register_raw(body, None).await.ok();
                let uid = done["user_id"].as_str().expect("user_id");
                assert!(
                    user_id_localpart_is_valid(uid, &server.server_name),
                    "{name:?} was mapped to invalid user id {uid}"
                );
            }
            other => panic!("registering {name:?}: unexpected {other}: {}", first.1),
        }
    }
}

async fn registration_disabled_is_403(b: Backend) {
    let server = start_with(
        b,
        ServerOptions {
            registration: false,
            ..Default::default()
        },
    )
    .await;
    let anon = server.client();
    anon.post(
        &format!("{V3}/register"),
        &json!({"username": "alice", "password": "pw-Secret1!"}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    anon.post(
        &format!("{V3}/register"),
        &json!({
            "username": "alice",
            "password": "pw-Secret1!",
            "auth": {"type": "m.login.dummy"},
        }),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    // Nothing was created.
    anon.login_raw(&json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw-Secret1!",
    }))
    .await
    .expect_err(403, "M_FORBIDDEN");
}

fn token_server_opts() -> ServerOptions {
    ServerOptions {
        require_token: true,
        tokens: vec!["tok1".to_owned(), "second.token-2".to_owned()],
        ..Default::default()
    }
}

async fn registration_token_flow(b: Backend) {
    let server = start_with(b, token_server_opts()).await;
    let anon = server.client();
    let body = json!({"username": "alice", "password": "pw-alice-Secret1!"});
    let first = anon.post(&format!("{V3}/register"), &body).await;
    let uia = first.clone().expect_status(401);
    let flows = arr(&uia["flows"]);
    assert!(!flows.is_empty(), "{uia}");
    for f in &flows {
        assert!(
            arr(&f["stages"]).contains(&json!("m.login.registration_token")),
            "every flow must require m.login.registration_token: {uia}"
        );
    }

    // A dummy stage alone does not complete registration.
    let dummy_only = anon
        .uia_step(
            Method::POST,
            &format!("{V3}/register"),
            &body,
            &first,
            json!({"type": "m.login.dummy"}),
        )
        .await;
    assert_ne!(
        dummy_only.0, 200,
        "registered without a token: {}",
        dummy_only.1
    );

    let done = anon.register_raw(body, Some("tok1")).await.ok();
    assert_eq!(done["user_id"], server.user_id("alice"));
    assert!(done["access_token"].is_string());
    anon.login("alice", "pw-alice-Secret1!").await;

    // The second configured token works too.
    let done = anon
        .register_raw(
            json!({"username": "bob", "password": "pw-bob-Secret1!"}),
            Some("second.token-2"),
        )
        .await
        .ok();
    assert_eq!(done["user_id"], server.user_id("bob"));
}

async fn registration_token_validity(b: Backend) {
    let server = start_with(b, token_server_opts()).await;
    let anon = server.client();
    let path = format!("{V1}/register/m.login.registration_token/validity");
    let ok = anon.get(&format!("{path}?token=tok1")).await.ok();
    assert_eq!(ok["valid"], true);
    let bad = anon.get(&format!("{path}?token=nope")).await.ok();
    assert_eq!(bad["valid"], false);
}

async fn registration_token_wrong_token(b: Backend) {
    let server = start_with(b, token_server_opts()).await;
    let anon = server.client();
    let body = json!({"username": "alice", "password": "pw-alice-Secret1!"});
    let first = anon.post(&format!("{V3}/register"), &body).await;
    first.clone().expect_status(401);
    let wrong = anon
        .uia_step(
            Method::POST,
            &format!("{V3}/register"),
            &body,
            &first,
            json!({"type": "m.login.registration_token", "token": "wrong"}),
        )
        .await;
    // A failed stage: 401 again, with an error code and the flows.
    let wrong = wrong.expect_status(401);
    assert!(
        wrong["errcode"].is_string(),
        "failed stage without errcode: {wrong}"
    );
    assert!(wrong["flows"].is_array(), "{wrong}");
    assert!(
        !arr(&wrong["completed"]).contains(&json!("m.login.registration_token")),
        "{wrong}"
    );
    anon.get(&format!("{V3}/register/available?username=alice"))
        .await
        .ok();
}

const SECRET: &str = "it's a secret to everybody";

fn secret_opts() -> ServerOptions {
    ServerOptions {
        shared_secret: Some(SECRET.to_owned()),
        ..Default::default()
    }
}

async fn nonce(c: &Client) -> String {
    let body = c.get("/_synapse/admin/v1/register").await.ok();
    body["nonce"]
        .as_str()
        .unwrap_or_else(|| panic!("no nonce: {body}"))
        .to_owned()
}

fn admin_register_body(
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
    secret: &str,
) -> Value {
    json!({
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": admin,
        "mac": crypto::registration_mac(secret, nonce, user, password, admin),
    })
}

async fn shared_secret_register(b: Backend) {
    let server = start_with(b, secret_opts()).await;
    let anon = server.client();

    let n = nonce(&anon).await;
    let body = anon
        .post(
            "/_synapse/admin/v1/register",
            &admin_register_body(&n, "svc", "pw-svc-Secret1!", false, SECRET),
        )
        .await
        .ok();
    assert_eq!(body["user_id"], server.user_id("svc"));
    let token = body["access_token"].as_str().expect("access_token");
    let who = anon.with_token(token).whoami().await.ok();
    assert_eq!(who["user_id"], server.user_id("svc"));
    anon.login("svc", "pw-svc-Secret1!").await;

    // An admin account.
    let n = nonce(&anon).await;
    let body = anon
        .post(
            "/_synapse/admin/v1/register",
            &admin_register_body(&n, "root", "pw-root-Secret1!", true, SECRET),
        )
        .await
        .ok();
    assert_eq!(body["user_id"], server.user_id("root"));

    // Taken user name.
    let n = nonce(&anon).await;
    anon.post(
        "/_synapse/admin/v1/register",
        &admin_register_body(&n, "svc", "other-Passw0rd", false, SECRET),
    )
    .await
    .expect_err(400, "M_USER_IN_USE");
}

async fn shared_secret_register_rejects_bad_mac_and_reused_nonce(b: Backend) {
    let server = start_with(b, secret_opts()).await;
    let anon = server.client();

    // Wrong secret => wrong MAC.
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            &admin_register_body(&n, "mallory", "pw-Secret1!", false, "wrong secret"),
        )
        .await;
    assert_eq!(status, 403, "bad MAC must be refused: {body}");

    // MAC computed for admin=false but admin=true requested.
    let n = nonce(&anon).await;
    let mut tampered = admin_register_body(&n, "mallory", "pw-Secret1!", false, SECRET);
    tampered["admin"] = json!(true);
    let (status, body) = anon.post("/_synapse/admin/v1/register", &tampered).await;
    assert_eq!(status, 403, "tampered admin flag must be refused: {body}");

    // A nonce is single-use.
    let n = nonce(&anon).await;
    anon.post(
        "/_synapse/admin/v1/register",
        &admin_register_body(&n, "first", "pw-Secret1!", false, SECRET),
    )
    .await
    .ok();
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            &admin_register_body(&n, "second", "pw-Secret1!", false, SECRET),
        )
        .await;
    assert!(
        (400..500).contains(&status),
        "reused nonce must be refused, got {status}: {body}"
    );
    // Unknown nonce.
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            &admin_register_body("made-up-nonce", "third", "pw-Secret1!", false, SECRET),
        )
        .await;
    assert!(
        (400..500).contains(&status),
        "unknown nonce accepted: {status} {body}"
    );
    // None of the refused accounts exist.
    for name in ["mallory", "second", "third"] {
        anon.get(&format!("{V3}/register/available?username={name}"))
            .await
            .ok();
    }
}

async fn shared_secret_register_disabled_without_secret(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    // Without a configured secret nothing may be registered through the admin API, whatever
    // MAC is presented (handing out a nonce is harmless, registering is not).
    let (status, body) = anon.get("/_synapse/admin/v1/register").await;
    let nonce = match (status, body["nonce"].as_str()) {
        (200, Some(n)) => n.to_owned(),
        _ => "no-nonce".to_owned(),
    };
    for secret in ["", "secret"] {
        let (status, body) = anon
            .post(
                "/_synapse/admin/v1/register",
                &admin_register_body(&nonce, "intruder", "pw-Secret1!", true, secret),
            )
            .await;
        assert_ne!(
            status, 200,
            "registered without a configured secret: {body}"
        );
    }
    anon.get(&format!("{V3}/register/available?username=intruder"))
        .await
        .ok();
}

async fn shared_secret_register_works_when_registration_disabled(b: Backend) {
    let server = start_with(
        b,
        ServerOptions {
            registration: false,
            shared_secret: Some(SECRET.to_owned()),
            ..Default::default()
        },
    )
    .await;
    let anon = server.client();
    let n = nonce(&anon).await;
    let body = anon
        .post(
            "/_synapse/admin/v1/register",
            &admin_register_body(&n, "staff", "pw-staff-Secret1!", false, SECRET),
        )
        .await
        .ok();
    assert_eq!(body["user_id"], server.user_id("staff"));
    anon.login("staff", "pw-staff-Secret1!").await;
}

/// `ganglion --config FILE register-user NAME [--admin]`, the password on standard input.
fn register_user_command(
    server: &Server,
    name: &str,
    admin: bool,
    password: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(server.config_path())
        .arg("register-user")
        .arg(name);
    if admin {
        cmd.arg("--admin");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ganglion register-user");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    child.wait_with_output().expect("register-user finishes")
}

async fn register_user_command_uses_shared_secret(b: Backend) {
    let server = start_with(b, secret_opts()).await;
    let out = tokio::task::block_in_place(|| {
        register_user_command(&server, "root", true, "pw-root-Secret1!")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&server.user_id("root")), "{stdout}");
    let root = server.client().login("root", "pw-root-Secret1!").await;
    // An admin: the admin API answers.
    root.get("/_synapse/admin/v1/event_reports").await.ok();
    // A taken name is refused with the server's reason.
    let again = tokio::task::block_in_place(|| {
        register_user_command(&server, "root", false, "other-Passw0rd!")
    });
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("M_USER_IN_USE"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Without a shared secret in the configuration it says so.
    let plain = start(b).await;
    let out = tokio::task::block_in_place(|| register_user_command(&plain, "x", false, "pw"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shared_secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
