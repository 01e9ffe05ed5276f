//! Small endpoints: VoIP TURN server, third-party protocols.

use crate::prelude::*;

backend_tests!(turn_server, thirdparty_protocols, endpoints_require_auth);

async fn turn_server(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let body = alice.get(&format!("{V3}/voip/turnServer")).await.ok();
    assert!(body.is_object(), "{body}");
    if !body["uris"].is_null() {
        assert!(body["uris"].is_array(), "{body}");
        assert!(body["ttl"].is_u64(), "{body}");
        assert!(
            body["username"].is_string() && body["password"].is_string(),
            "{body}"
        );
    }
}

async fn thirdparty_protocols(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let body = alice.get(&format!("{V3}/thirdparty/protocols")).await.ok();
    let protocols = body
        .as_object()
        .unwrap_or_else(|| panic!("protocols must be an object: {body}"));
    for (name, p) in protocols {
        assert!(p["user_fields"].is_array(), "{name}: {p}");
        assert!(p["location_fields"].is_array(), "{name}: {p}");
        assert!(p["instances"].is_array(), "{name}: {p}");
    }
}

async fn endpoints_require_auth(b: Backend) {
    let server = start(b).await;
    let anon = server.client();
    for path in [
        format!("{V3}/voip/turnServer"),
        format!("{V3}/thirdparty/protocols"),
        format!("{V3}/devices"),
        format!("{V3}/pushrules/"),
    ] {
        anon.get(&path).await.expect_err(401, "M_MISSING_TOKEN");
    }
}
