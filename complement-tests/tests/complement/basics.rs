//! API standards: versions, .well-known, capabilities, error responses, CORS, access tokens.

use crate::prelude::*;

backend_tests!(
    versions_lists_spec_versions,
    responses_are_json,
    well_known_client_is_valid_or_absent,
    capabilities,
    unknown_endpoint_is_404_unrecognized,
    wrong_method_is_405_unrecognized,
    malformed_json_is_400_not_json,
    nul_characters_are_refused,
    unknown_token_is_401,
    missing_token_is_401,
    access_token_query_parameter,
    cors_preflight,
    cors_headers_on_responses,
);

async fn versions_lists_spec_versions(b: Backend) {
    let server = start(b).await;
    // No access token required.
    let body = server.client().get("/_matrix/client/versions").await.ok();
    let versions = arr(&body["versions"]);
    assert!(!versions.is_empty(), "no versions: {body}");
    for v in &versions {
        let v = v
            .as_str()
            .unwrap_or_else(|| panic!("version not a string: {body}"));
        let valid = v
            .strip_prefix("v1.")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            || v.starts_with("r0.");
        assert!(valid, "version {v:?} does not look like a spec version");
    }
    assert!(
        versions
            .iter()
            .any(|v| v.as_str().is_some_and(|s| s.starts_with("v1."))),
        "no v1.x version advertised: {body}"
    );
    if !body["unstable_features"].is_null() {
        let feats = body["unstable_features"]
            .as_object()
            .unwrap_or_else(|| panic!("unstable_features must be an object: {body}"));
        assert!(feats.values().all(Value::is_boolean), "{body}");
    }
}

async fn responses_are_json(b: Backend) {
    let server = start(b).await;
    let c = server.client();
    for path in [
        "/_matrix/client/versions",
        "/_matrix/client/v3/nope/not/here",
    ] {
        let resp = c.raw(Method::GET, path, None, &[], false).await;
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            ct.starts_with("application/json"),
            "{path}: content-type {ct:?} is not application/json"
        );
        let text = resp.text().await.expect("body");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {text}"));
        assert!(v.is_object(), "{path}: body is not a JSON object: {text}");
    }
}

async fn well_known_client_is_valid_or_absent(b: Backend) {
    let server = start(b).await;
    let (status, body) = server.client().get("/.well-known/matrix/client").await;
    match status {
        200 => assert!(
            body["m.homeserver"]["base_url"].is_string(),
            "well-known without m.homeserver.base_url: {body}"
        ),
        404 => {}
        other => panic!("/.well-known/matrix/client must be 200 or 404, got {other}: {body}"),
    }
}

async fn capabilities(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    anon.get(&format!("{V3}/capabilities"))
        .await
        .expect_err(401, "M_MISSING_TOKEN");

    let alice = server.register("alice").await;
    let body = alice.get(&format!("{V3}/capabilities")).await.ok();
    let caps = &body["capabilities"];
    assert!(caps.is_object(), "no capabilities object: {body}");
    if !caps["m.change_password"].is_null() {
        assert!(caps["m.change_password"]["enabled"].is_boolean(), "{body}");
    }
    if !caps["m.room_versions"].is_null() {
        let default = caps["m.room_versions"]["default"]
            .as_str()
            .unwrap_or_else(|| panic!("m.room_versions.default missing: {body}"));
        let available = caps["m.room_versions"]["available"]
            .as_object()
            .unwrap_or_else(|| panic!("m.room_versions.available missing: {body}"));
        assert!(
            available.contains_key(default),
            "default not available: {body}"
        );
        for (v, stability) in available {
            assert!(
                stability == "stable" || stability == "unstable",
                "room version {v} has stability {stability}"
            );
        }
    }
}

async fn unknown_endpoint_is_404_unrecognized(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&format!("{V3}/this/endpoint/does/not/exist"))
        .await
        .expect_err(404, "M_UNRECOGNIZED");
    alice
        .post(&format!("{V3}/definitely_not_an_endpoint"), &json!({}))
        .await
        .expect_err(404, "M_UNRECOGNIZED");
    alice
        .get("/_matrix/client/v3/rooms/!x:y/not_a_room_endpoint")
        .await
        .expect_err(404, "M_UNRECOGNIZED");
}

async fn wrong_method_is_405_unrecognized(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    // whoami is GET only.
    alice
        .post(&format!("{V3}/account/whoami"), &json!({}))
        .await
        .expect_err(405, "M_UNRECOGNIZED");
    // login is GET and POST.
    alice
        .put(&format!("{V3}/login"), &json!({}))
        .await
        .expect_err(405, "M_UNRECOGNIZED");
    // createRoom is POST only.
    alice
        .get(&format!("{V3}/createRoom"))
        .await
        .expect_err(405, "M_UNRECOGNIZED");
}

async fn malformed_json_is_400_not_json(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let json_ct = [("content-type", "application/json")];
    for (path, auth) in [
        (format!("{V3}/createRoom"), true),
        (format!("{V3}/login"), false),
        (
            format!(
                "{V3}/user/{}/account_data/com.example.x",
                enc(&alice.user_id)
            ),
            true,
        ),
    ] {
        let method = if path.contains("account_data") {
            Method::PUT
        } else {
            Method::POST
        };
        let resp = alice
            .raw(method, &path, Some("{\"name\": "), &json_ct, auth)
            .await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_NOT_JSON")),
            "{path}: {body}"
        );
    }
}

async fn unknown_token_is_401(b: Backend) {
    let server = start(b).await;
    let bogus = server.client().with_token("not-a-real-token");
    bogus.whoami().await.expect_err(401, "M_UNKNOWN_TOKEN");
    bogus
        .get(&format!("{V3}/sync?timeout=0"))
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    bogus
        .post(&format!("{V3}/createRoom"), &json!({}))
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
}

async fn missing_token_is_401(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    anon.whoami().await.expect_err(401, "M_MISSING_TOKEN");
    anon.post(&format!("{V3}/createRoom"), &json!({}))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
    anon.get(&format!("{V3}/joined_rooms"))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

async fn access_token_query_parameter(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let token = alice.token.clone().expect("token");
    let anon = server.client();
    let body = anon
        .get(&format!("{V3}/account/whoami?access_token={}", enc(&token)))
        .await
        .ok();
    assert_eq!(body["user_id"], alice.user_id.as_str());
    anon.get(&format!("{V3}/account/whoami?access_token=bogus"))
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn list_contains(list: &str, item: &str) -> bool {
    list.split(',')
        .any(|x| x.trim().eq_ignore_ascii_case(item) || x.trim() == "*")
}

async fn cors_preflight(b: Backend) {
    let server = start(b).await;
    let c = server.client();
    for (path, method) in [
        (format!("{V3}/login"), "POST"),
        // Authenticated endpoints: OPTIONS must not run endpoint logic (no 401).
        (format!("{V3}/account/whoami"), "GET"),
        (format!("{V3}/sync"), "GET"),
        (
            format!("{V3}/rooms/!room:x/send/m.room.message/txn1"),
            "PUT",
        ),
    ] {
        let resp = c
            .raw(
                Method::OPTIONS,
                &path,
                None,
                &[
                    ("origin", "https://app.example.org"),
                    ("access-control-request-method", method),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                false,
            )
            .await;
        let status = resp.status().as_u16();
        assert!(
            (200..300).contains(&status),
            "OPTIONS {path}: status {status}"
        );
        let origin = header(&resp, "access-control-allow-origin");
        assert!(
            origin == "*" || origin == "https://app.example.org",
            "OPTIONS {path}: access-control-allow-origin = {origin:?}"
        );
        let methods = header(&resp, "access-control-allow-methods");
        assert!(
            list_contains(&methods, method),
            "OPTIONS {path}: allow-methods {methods:?} lacks {method}"
        );
        let headers = header(&resp, "access-control-allow-headers");
        for h in ["authorization", "content-type"] {
            assert!(
                headers.split(',').any(|x| x.trim().eq_ignore_ascii_case(h)),
                "OPTIONS {path}: allow-headers {headers:?} lacks {h}"
            );
        }
    }
}

async fn cors_headers_on_responses(b: Backend) {
    let server = start(b).await;
    let c = server.client();
    let origin = [("origin", "https://app.example.org")];
    // A successful response and an error response both carry the CORS headers.
    for path in [
        "/_matrix/client/versions".to_owned(),
        format!("{V3}/account/whoami"),
    ] {
        let resp = c.raw(Method::GET, &path, None, &origin, false).await;
        let allow = header(&resp, "access-control-allow-origin");
        assert!(
            allow == "*" || allow == "https://app.example.org",
            "GET {path} ({}): access-control-allow-origin = {allow:?}",
            resp.status()
        );
    }
}

/// U+0000, which PostgreSQL cannot keep in text, is refused the same way on both databases:
/// in a body, a path parameter or a query parameter; and nothing of it was stored.
async fn nul_characters_are_refused(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({"name": "clean"})).await;
    let me = enc(&alice.user_id);
    let bodies = [
        (
            Method::POST,
            format!("{V3}/createRoom"),
            json!({"name": "a\u{0}b"}),
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{}/send/m.room.message/t1", enc(&room)),
            json!({"msgtype": "m.text", "body": "x\u{0}y"}),
        ),
        (
            Method::PUT,
            format!("{V3}/profile/{me}/displayname"),
            json!({"displayname": "\u{0}"}),
        ),
        (
            Method::PUT,
            format!("{V3}/presence/{me}/status"),
            json!({"presence": "online", "status_msg": "\u{0}"}),
        ),
        (
            Method::POST,
            format!("{V3}/user_directory/search"),
            json!({"search_term": "a\u{0}"}),
        ),
        (
            Method::POST,
            format!("{V3}/rooms/{}/report", enc(&room)),
            json!({"reason": "\u{0}"}),
        ),
        (
            Method::PUT,
            format!("{V3}/user/{me}/account_data/m.x"),
            json!({"k\u{0}": 1}),
        ),
    ];
    for (method, path, body) in bodies {
        let resp = alice.request(method, &path, Some(&body)).await;
        resp.expect_err(400, "M_BAD_JSON");
    }
    alice
        .get(&format!("{V3}/user/{me}/account_data/m.x%00"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .get(&format!(
            "{V3}/rooms/{}/messages?dir=b&from=%00",
            enc(&room)
        ))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    // Nothing was stored: the room still has its name, the profile has no NUL.
    let name = alice
        .get(&format!("{V3}/rooms/{}/state/m.room.name", enc(&room)))
        .await
        .ok();
    assert_eq!(name["name"], "clean", "{name}");
    let profile = alice.get(&format!("{V3}/profile/{me}")).await.ok();
    assert!(!profile.to_string().contains("\\u0000"), "{profile}");
}
