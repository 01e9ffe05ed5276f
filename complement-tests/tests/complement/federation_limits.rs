//! Inbound federation under the operator's limits: a per-origin rate limit (a flood from one
//! server does not slow the others), and the allow/deny lists.

use complement_tests::{FakeServer, FederationOptions};

use crate::prelude::*;

backend_tests!(
    flood_from_one_server_is_limited_alone,
    denied_server_is_refused,
    server_outside_allow_list_is_refused,
);

fn node_opts(f: FederationOptions) -> ServerOptions {
    ServerOptions {
        federation: Some(f),
        ..Default::default()
    }
}

async fn profile_query(fake: &FakeServer, node: &Server, user: &str) -> Resp {
    fake.request(
        &node.server_name,
        &node.fed_url(),
        Method::GET,
        &format!("/_matrix/federation/v1/query/profile?user_id={}", enc(user)),
        None,
    )
    .await
}

async fn flood_from_one_server_is_limited_alone(b: Backend) {
    let node = start_with(
        b,
        node_opts(FederationOptions {
            extra_toml: "inbound_requests_per_second = 1\ninbound_burst = 5\n".into(),
            ..Default::default()
        }),
    )
    .await;
    let alice = node.register("alice").await;
    let (flooder, polite) = tokio::join!(FakeServer::start(), FakeServer::start());
    let mut limited = None;
    for _ in 0..30 {
        let (status, body) = profile_query(&flooder, &node, &alice.user_id).await;
        if status == 429 {
            limited = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let body = limited.expect("30 requests in a row were never rate-limited");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    // Another server is not affected by the first one's flood.
    profile_query(&polite, &node, &alice.user_id).await.ok();
}

async fn denied_server_is_refused(b: Backend) {
    let fake = FakeServer::start().await;
    let node = start_with(
        b,
        node_opts(FederationOptions {
            denied_servers: vec![fake.server_name.clone()],
            ..Default::default()
        }),
    )
    .await;
    let alice = node.register("alice").await;
    profile_query(&fake, &node, &alice.user_id)
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn server_outside_allow_list_is_refused(b: Backend) {
    let (fake, friend) = tokio::join!(FakeServer::start(), FakeServer::start());
    let node = start_with(
        b,
        node_opts(FederationOptions {
            allowed_servers: vec![friend.server_name.clone()],
            ..Default::default()
        }),
    )
    .await;
    let alice = node.register("alice").await;
    profile_query(&fake, &node, &alice.user_id)
        .await
        .expect_err(403, "M_FORBIDDEN");
    profile_query(&friend, &node, &alice.user_id).await.ok();
}
