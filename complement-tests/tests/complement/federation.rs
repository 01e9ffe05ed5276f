//! Federation between real servers on loopback: two and three Ganglion nodes, a fake server
//! that sends forged traffic, and (with `GANGLION_TEST_SYNAPSE=1`) Synapse from PyPI as a peer.
//!
//! Every node runs on its own loopback address with an IP-literal server name and an explicit
//! port (`127.0.0.11:FEDPORT`), so no DNS, `.well-known` or SRV is involved; federation is
//! HTTPS with leaves of the harness's throwaway CA (see `complement_tests::tls`). All waits are
//! bounded wait-for-condition loops on `/sync` (or polling of a GET), never fixed sleeps.

use std::future::Future;

use complement_tests::FederationOptions;
use complement_tests::fake::FakeServer;
use complement_tests::synapse::{self, Synapse};

use crate::prelude::*;

backend_tests!(
    server_keys_over_tls,
    notary_key_query,
    join_remote_room_by_alias,
    join_remote_room_by_id_with_server_name_and_via,
    knock_on_remote_room_then_invited,
    restricted_room_joined_from_another_server,
    messages_both_ways,
    state_both_ways,
    typing_both_ways,
    receipts_both_ways,
    presence_both_ways,
    backfill_history_after_join,
    leave_and_rejoin,
    kick_enforced_remotely,
    ban_enforced_remotely,
    stopped_node_catches_up,
    three_nodes,
    forged_signature_never_appears,
    event_from_server_not_in_room_never_appears,
    synapse_joins_ganglion_room,
    ganglion_joins_synapse_room,
    ganglion_paginates_synapse_history,
    synapse_paginates_ganglion_history,
    presence_with_synapse,
    synapse_joins_ganglion_restricted_room,
    ganglion_joins_synapse_restricted_room,
    synapse_knocks_on_ganglion_room,
    ganglion_knocks_on_synapse_room,
    synapse_member_follows_ganglion_upgrade,
);

/// Upper bound for anything that crosses servers.
const FED_DEADLINE: Duration = Duration::from_secs(60);
/// Poll interval of [`wait_until`].
const POLL: Duration = Duration::from_millis(200);

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn fed_opts() -> ServerOptions {
    ServerOptions {
        federation: Some(FederationOptions::default()),
        ..Default::default()
    }
}

/// A federating Ganglion node on the next loopback address.
async fn node(b: Backend) -> Server {
    start_with(b, fed_opts()).await
}

/// Two federating nodes, started concurrently.
async fn two_nodes(b: Backend) -> (Server, Server) {
    tokio::join!(node(b), node(b))
}

/// Polls `check` until it returns true; panics after [`FED_DEADLINE`].
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + FED_DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {FED_DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The membership of `user` in `room` as last seen in this sync response (timeline, then
/// state; joined, left and invited sections).
fn membership_in(sync: &Value, room: &str, user: &str) -> Option<String> {
    let mut found = None;
    for section in ["join", "leave", "invite"] {
        let r = &sync["rooms"][section][room];
        let mut events = arr(&r["state"]["events"]);
        events.extend(arr(&r["timeline"]["events"]));
        events.extend(arr(&r["invite_state"]["events"]));
        for e in events {
            if e["type"] == "m.room.member" && e["state_key"] == user {
                found = e["content"]["membership"].as_str().map(str::to_owned);
            }
        }
    }
    found
}

/// Long-polls `c`'s sync until `user` has `membership` in `room`.
async fn wait_membership(
    c: &Client,
    since: Option<&str>,
    room: &str,
    user: &str,
    m: &str,
) -> Value {
    c.sync_until_within(since, FED_DEADLINE, |s| {
        membership_in(s, room, user).as_deref() == Some(m)
    })
    .await
}

/// Long-polls `c`'s sync until a timeline event of `room` has this body.
async fn wait_body(c: &Client, since: Option<&str>, room: &str, body: &str) -> Value {
    c.sync_until_within(since, FED_DEADLINE, |s| {
        bodies(&timeline(s, room)).iter().any(|b| b == body)
    })
    .await
}

/// A state event of `room` (timeline or state section) of this type and state key.
fn state_event_in(sync: &Value, room: &str, event_type: &str, state_key: &str) -> Option<Value> {
    let mut events = sync_state(sync, room);
    events.extend(timeline(sync, room));
    events
        .into_iter()
        .rev()
        .find(|e| e["type"] == event_type && e["state_key"] == state_key)
}

/// Waits until `GET /rooms/{room}/state/{type}/{key}` on `c`'s server has `field == value`.
async fn wait_state_field(
    c: &Client,
    room: &str,
    event_type: &str,
    state_key: &str,
    field: &str,
    value: &Value,
) {
    let what = format!(
        "{event_type}/{state_key} {field}={value} on {}",
        c.server_name
    );
    wait_until(&what, || async {
        let (status, body) = c.state(room, event_type, state_key).await;
        status == 200 && &body[field] == value
    })
    .await;
}

/// Alice on `a` creates a public room with alias `#local:a`; bob on `b` joins it by alias.
/// Returns `(alice, bob, room_id)` once alice has seen bob's join.
async fn shared_room(a: &Server, b: &Server, local: &str) -> (Client, Client, String) {
    let (alice, bob) = tokio::join!(a.register("alice"), b.register("bob"));
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": local, "name": "Fed"}))
        .await;
    let started = Instant::now();
    let joined = bob.join(&alias(a, local)).await;
    println!(
        "federated join of {} into a room on {} took {:?}",
        bob.user_id,
        a.server_name,
        started.elapsed()
    );
    assert_eq!(joined, room);
    wait_membership(&alice, None, &room, &bob.user_id, "join").await;
    (alice, bob, room)
}

async fn set_typing(c: &Client, room: &str, typing: bool) -> Resp {
    c.put(
        &format!("{V3}/rooms/{}/typing/{}", enc(room), enc(&c.user_id)),
        &json!({"typing": typing, "timeout": 30000}),
    )
    .await
}

fn typing_users(sync: &Value, room: &str) -> Option<Vec<Value>> {
    ephemeral(sync, room)
        .into_iter()
        .rev()
        .find(|e| e["type"] == "m.typing")
        .map(|e| arr(&e["content"]["user_ids"]))
}

/// `from` starts typing, `to` sees it; `from` stops, `to` sees that.
async fn typing_round_trip(from: &Client, to: &Client, room: &str) {
    let since = to.sync_token().await;
    set_typing(from, room, true).await.ok();
    let me = json!(from.user_id);
    let sync = to
        .sync_until_within(Some(&since), FED_DEADLINE, |s| {
            typing_users(s, room).is_some_and(|u| u.contains(&me))
        })
        .await;
    set_typing(from, room, false).await.ok();
    to.sync_until_within(Some(&next_batch(&sync)), FED_DEADLINE, |s| {
        typing_users(s, room).is_some_and(|u| !u.contains(&me))
    })
    .await;
}

fn has_receipt(sync: &Value, room: &str, event_id: &str, user: &str) -> bool {
    ephemeral(sync, room).iter().any(|e| {
        e["type"] == "m.receipt" && e["content"][event_id]["m.read"][user]["ts"].is_number()
    })
}

/// `to` sends a message, `from` sends a read receipt for it, `to` sees the receipt.
async fn receipt_round_trip(from: &Client, to: &Client, room: &str) {
    let event = to
        .send_text(room, &format!("read me {}", random_string(6)))
        .await;
    // `from` must have the event before it can acknowledge it.
    wait_until(&format!("{event} on {}", from.server_name), || async {
        from.event(room, &event).await.0 == 200
    })
    .await;
    let since = to.sync_token().await;
    from.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(room), enc(&event)),
        &json!({}),
    )
    .await
    .ok();
    to.sync_until_within(Some(&since), FED_DEADLINE, |s| {
        has_receipt(s, room, &event, &from.user_id)
    })
    .await;
}

/// `from` sets its displayname; `to` sees the new name in `from`'s member event and through a
/// (federated) profile lookup.
async fn displayname_round_trip(from: &Client, to: &Client, room: &str) {
    let name = format!("Renamed {}", random_string(5));
    let since = to.sync_token().await;
    from.put(
        &format!("{V3}/profile/{}/displayname", enc(&from.user_id)),
        &json!({"displayname": name}),
    )
    .await
    .ok();
    to.sync_until_within(Some(&since), FED_DEADLINE, |s| {
        state_event_in(s, room, "m.room.member", &from.user_id)
            .is_some_and(|e| e["content"]["displayname"] == name)
    })
    .await;
    wait_until(
        &format!("profile of {} seen by {}", from.user_id, to.server_name),
        || async {
            let (status, body) = to
                .get(&format!("{V3}/profile/{}", enc(&from.user_id)))
                .await;
            status == 200 && body["displayname"] == name
        },
    )
    .await;
}

/// Gives `user` power level `level` in `room` (as `admin`).
async fn grant_power(admin: &Client, room: &str, user: &str, level: i64) {
    let mut pl = admin.state(room, "m.room.power_levels", "").await.ok();
    pl["users"][user] = json!(level);
    admin.send_state(room, "m.room.power_levels", "", &pl).await;
}

/// Messages, state, typing, receipts and profile changes both ways between two users of
/// different servers who are both joined to `room` (`x` is the room's creator).
async fn both_ways(x: &Client, y: &Client, room: &str) {
    // Messages.
    let since_y = y.sync_token().await;
    x.send_text(room, "hello from x").await;
    wait_body(y, Some(&since_y), room, "hello from x").await;
    let since_x = x.sync_token().await;
    y.send_text(room, "hello from y").await;
    wait_body(x, Some(&since_x), room, "hello from y").await;

    // State: x sets the topic, y sees it; x lets y set the name, x sees it.
    let since_y = y.sync_token().await;
    x.send_state(
        room,
        "m.room.topic",
        "",
        &json!({"topic": "federated topic"}),
    )
    .await;
    y.sync_until_within(Some(&since_y), FED_DEADLINE, |s| {
        state_event_in(s, room, "m.room.topic", "")
            .is_some_and(|e| e["content"]["topic"] == "federated topic")
    })
    .await;
    wait_state_field(
        y,
        room,
        "m.room.topic",
        "",
        "topic",
        &json!("federated topic"),
    )
    .await;
    grant_power(x, room, &y.user_id, 50).await;
    let y_user = y.user_id.clone();
    wait_until("power level 50 for y on y's server", || async {
        let (status, body) = y.state(room, "m.room.power_levels", "").await;
        status == 200 && body["users"][&y_user] == 50
    })
    .await;
    let since_x = x.sync_token().await;
    y.send_state(room, "m.room.name", "", &json!({"name": "Named by y"}))
        .await;
    x.sync_until_within(Some(&since_x), FED_DEADLINE, |s| {
        state_event_in(s, room, "m.room.name", "")
            .is_some_and(|e| e["content"]["name"] == "Named by y")
    })
    .await;

    // Typing, receipts, profiles.
    typing_round_trip(x, y, room).await;
    typing_round_trip(y, x, room).await;
    receipt_round_trip(x, y, room).await;
    receipt_round_trip(y, x, room).await;
    displayname_round_trip(x, y, room).await;
    displayname_round_trip(y, x, room).await;
}

// ------------------------------------------------------------------------------------------
// Keys
// ------------------------------------------------------------------------------------------

/// The first `ed25519:*` key of a key response: `(key_id, public_b64)`.
fn first_verify_key(keys: &Value) -> (String, String) {
    let map = keys["verify_keys"]
        .as_object()
        .unwrap_or_else(|| panic!("no verify_keys in {keys}"));
    let (id, k) = map
        .iter()
        .find(|(id, _)| id.starts_with("ed25519:"))
        .unwrap_or_else(|| panic!("no ed25519 verify key in {keys}"));
    let public = k["key"]
        .as_str()
        .unwrap_or_else(|| panic!("verify key without key: {keys}"))
        .to_owned();
    (id.clone(), public)
}

fn assert_self_signed(keys: &Value, server_name: &str) {
    let (key_id, public) = first_verify_key(keys);
    let sig = keys["signatures"][server_name][&key_id]
        .as_str()
        .unwrap_or_else(|| panic!("key response not signed by {server_name} {key_id}: {keys}"));
    assert!(
        crypto::verify_json(&public, keys, sig),
        "bad self-signature on {keys}"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn server_keys_over_tls(b: Backend) {
    let a = node(b).await;
    let keys = a.fed_get("/_matrix/key/v2/server").await.ok();
    assert_eq!(keys["server_name"], a.server_name, "{keys}");
    assert!(
        keys["valid_until_ts"]
            .as_u64()
            .is_some_and(|t| t > now_ms()),
        "valid_until_ts must be in the future: {keys}"
    );
    assert_self_signed(&keys, &a.server_name);
    let version = a.fed_get("/_matrix/federation/v1/version").await.ok();
    assert!(version["server"]["name"].is_string(), "{version}");
    // The listener really serves the test CA's leaf: a client without the CA refuses it.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    assert!(
        untrusting
            .get(format!("{}/_matrix/key/v2/server", a.fed_url()))
            .send()
            .await
            .is_err(),
        "a client without the test CA must not accept the federation certificate"
    );
}

async fn notary_key_query(b: Backend) {
    let (a, n) = two_nodes(b).await;
    let a_keys = a.fed_get("/_matrix/key/v2/server").await.ok();
    let (a_key_id, _) = first_verify_key(&a_keys);
    let n_keys = n.fed_get("/_matrix/key/v2/server").await.ok();
    let (n_key_id, n_public) = first_verify_key(&n_keys);

    let check = |resp: &Value| {
        let list = arr(&resp["server_keys"]);
        let entry = list
            .iter()
            .find(|k| k["server_name"] == a.server_name)
            .unwrap_or_else(|| panic!("no keys of {} in {resp}", a.server_name));
        assert!(
            entry["verify_keys"][&a_key_id]["key"].is_string(),
            "{entry}"
        );
        assert_self_signed(entry, &a.server_name);
        let notary_sig = entry["signatures"][&n.server_name][&n_key_id]
            .as_str()
            .unwrap_or_else(|| panic!("notary {} did not sign {entry}", n.server_name));
        assert!(
            crypto::verify_json(&n_public, entry, notary_sig),
            "bad notary signature on {entry}"
        );
    };

    let resp = n
        .fed_post(
            "/_matrix/key/v2/query",
            &json!({"server_keys": {&a.server_name: {&a_key_id: {"minimum_valid_until_ts": now_ms()}}}}),
        )
        .await
        .ok();
    check(&resp);
    let resp = n
        .fed_post(
            "/_matrix/key/v2/query",
            &json!({"server_keys": {&a.server_name: {}}}),
        )
        .await
        .ok();
    check(&resp);
    let resp = n
        .fed_get(&format!("/_matrix/key/v2/query/{}", enc(&a.server_name)))
        .await
        .ok();
    check(&resp);
}

// ------------------------------------------------------------------------------------------
// Joins, messages, state, EDUs
// ------------------------------------------------------------------------------------------

async fn join_remote_room_by_alias(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let alice = a.register("alice").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "lobby"}))
        .await;
    let bob = bn.register("bob").await;
    // The alias resolves over federation.
    let dir = bob
        .get(&format!("{V3}/directory/room/{}", enc(&alias(&a, "lobby"))))
        .await
        .ok();
    assert_eq!(dir["room_id"], room, "{dir}");
    assert!(
        arr(&dir["servers"]).contains(&json!(a.server_name)),
        "servers must include the room's server: {dir}"
    );
    let started = Instant::now();
    assert_eq!(bob.join(&alias(&a, "lobby")).await, room);
    println!("federated join by alias took {:?}", started.elapsed());
    // Both sides see bob joined.
    wait_membership(&bob, None, &room, &bob.user_id, "join").await;
    wait_membership(&alice, None, &room, &bob.user_id, "join").await;
    let members = bob
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    assert!(members["joined"][&alice.user_id].is_object(), "{members}");
    assert!(members["joined"][&bob.user_id].is_object(), "{members}");
}

async fn join_remote_room_by_id_with_server_name_and_via(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let alice = a.register("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let (bob, carol) = tokio::join!(bn.register("bob"), bn.register("carol"));
    let started = Instant::now();
    let body = bob
        .post(
            &format!(
                "{V3}/join/{}?server_name={}",
                enc(&room),
                enc(&a.server_name)
            ),
            &json!({}),
        )
        .await
        .ok();
    println!(
        "federated join by id (server_name) took {:?}",
        started.elapsed()
    );
    assert_eq!(body["room_id"], room);
    let started = Instant::now();
    let body = carol
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), enc(&a.server_name)),
            &json!({}),
        )
        .await
        .ok();
    println!("federated join by id (via) took {:?}", started.elapsed());
    assert_eq!(body["room_id"], room);
    wait_membership(&alice, None, &room, &bob.user_id, "join").await;
    wait_membership(&alice, None, &room, &carol.user_id, "join").await;
}

/// Waits until `c`'s sync has `room` in the `knock` or `invite` section; its stripped state.
async fn wait_stripped_state(c: &Client, room: &str, section: &str) -> Vec<Value> {
    let s = c
        .sync_until_within(None, FED_DEADLINE, |s| !s["rooms"][section][room].is_null())
        .await;
    arr(&s["rooms"][section][room][format!("{section}_state")]["events"])
}

#[track_caller]
fn assert_named(stripped: &[Value], name: &str) {
    assert!(
        stripped
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == name),
        "no m.room.name {name:?} in {stripped:?}"
    );
}

async fn knock_on_remote_room_then_invited(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let alice = a.register("alice").await;
    let room = alice
        .create_room(
            json!({"preset": "private_chat", "room_version": "12", "name": "Remote door",
                            "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                               "content": {"join_rule": "knock"}}]}),
        )
        .await;
    let bob = bn.register("bob").await;
    let body = bob
        .post(
            &format!("{V3}/knock/{}?via={}", enc(&room), enc(&a.server_name)),
            &json!({"reason": "may I?"}),
        )
        .await
        .ok();
    assert_eq!(body["room_id"], room);
    // The knocker's server shows the room's public state as the resident server sent it.
    let knock_state = wait_stripped_state(&bob, &room, "knock").await;
    assert_named(&knock_state, "Remote door");
    wait_membership(&alice, None, &room, &bob.user_id, "knock").await;
    // Let in: the invite crosses over with the room's state, and bob joins.
    alice.invite(&room, &bob.user_id).await.ok();
    let invite_state = wait_stripped_state(&bob, &room, "invite").await;
    assert_named(&invite_state, "Remote door");
    bob.join(&room).await;
    wait_membership(&alice, None, &room, &bob.user_id, "join").await;
}

async fn restricted_room_joined_from_another_server(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let alice = a.register("alice").await;
    let space = alice
        .create_room(json!({"preset": "public_chat", "name": "Dept",
                            "creation_content": {"type": "m.space"}}))
        .await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Dept only",
                            "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                "content": {"join_rule": "restricted",
                                            "allow": [{"type": "m.room_membership",
                                                       "room_id": space}]}}]}))
        .await;
    let bob = bn.register("bob").await;
    let via = format!("?via={}", enc(&a.server_name));
    // Not in the space yet: refused.
    bob.post(&format!("{V3}/join/{}{via}", enc(&room)), &json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // In the space: A vouches for him (join_authorised_via_users_server, A's signature).
    bob.post(&format!("{V3}/join/{}{via}", enc(&space)), &json!({}))
        .await
        .ok();
    bob.post(&format!("{V3}/join/{}{via}", enc(&room)), &json!({}))
        .await
        .ok();
    wait_membership(&alice, None, &room, &bob.user_id, "join").await;
    let member = alice.state(&room, "m.room.member", &bob.user_id).await.ok();
    assert_eq!(
        member["join_authorised_via_users_server"],
        alice.user_id.as_str(),
        "{member}"
    );
    bob.send_text(&room, "in through the space").await;
    wait_body(&alice, None, &room, "in through the space").await;
}

async fn messages_both_ways(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "chat").await;
    let since_b = bob.sync_token().await;
    let since_a = alice.sync_token().await;
    let e1 = alice.send_text(&room, "from alice").await;
    let e2 = bob.send_text(&room, "from bob").await;
    let sync = wait_body(&bob, Some(&since_b), &room, "from alice").await;
    let ev = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["event_id"] == e1)
        .unwrap_or_else(|| panic!("event id {e1} differs on the receiving side: {sync}"));
    assert_eq!(ev["sender"], alice.user_id);
    wait_body(&alice, Some(&since_a), &room, "from bob").await;
    // Both servers have both events under the same ids.
    assert_eq!(
        bob.event(&room, &e1).await.ok()["content"]["body"],
        "from alice"
    );
    assert_eq!(
        alice.event(&room, &e2).await.ok()["content"]["body"],
        "from bob"
    );
    // A burst arrives complete and in order.
    let since_b = bob.sync_token().await;
    for i in 0..20 {
        alice.send_text(&room, &format!("burst {i}")).await;
    }
    wait_body(&bob, Some(&since_b), &room, "burst 19").await;
    let seen: Vec<String> = bodies(&bob.all_messages_backwards(&room).await)
        .into_iter()
        .filter(|b| b.starts_with("burst "))
        .rev()
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
    assert_eq!(seen, expected);
}

async fn state_both_ways(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "state").await;
    let since_b = bob.sync_token().await;
    alice
        .send_state(&room, "m.room.topic", "", &json!({"topic": "from A"}))
        .await;
    alice
        .send_state(&room, "org.example.fed", "k", &json!({"v": 1}))
        .await;
    bob.sync_until_within(Some(&since_b), FED_DEADLINE, |s| {
        state_event_in(s, &room, "org.example.fed", "k").is_some_and(|e| e["content"]["v"] == 1)
    })
    .await;
    wait_state_field(&bob, &room, "m.room.topic", "", "topic", &json!("from A")).await;
    // Without power, bob's state change is refused by his own server.
    bob.put_state(&room, "m.room.name", "", &json!({"name": "nope"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    grant_power(&alice, &room, &bob.user_id, 50).await;
    let bob_id = bob.user_id.clone();
    wait_until("bob's power level on B", || async {
        let (s, pl) = bob.state(&room, "m.room.power_levels", "").await;
        s == 200 && pl["users"][&bob_id] == 50
    })
    .await;
    let since_a = alice.sync_token().await;
    bob.send_state(&room, "m.room.name", "", &json!({"name": "from B"}))
        .await;
    alice
        .sync_until_within(Some(&since_a), FED_DEADLINE, |s| {
            state_event_in(s, &room, "m.room.name", "")
                .is_some_and(|e| e["content"]["name"] == "from B")
        })
        .await;
    wait_state_field(&alice, &room, "m.room.name", "", "name", &json!("from B")).await;
    // The full state agrees on both sides.
    let state_of = |c: Client| {
        let room = room.clone();
        async move {
            let mut v: Vec<(String, String, String)> = arr(&c
                .get(&format!("{V3}/rooms/{}/state", enc(&room)))
                .await
                .ok())
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or("").to_owned(),
                    e["state_key"].as_str().unwrap_or("").to_owned(),
                    e["event_id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
            v.sort();
            v
        }
    };
    assert_eq!(state_of(alice.clone()).await, state_of(bob.clone()).await);
}

async fn typing_both_ways(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "typing").await;
    typing_round_trip(&alice, &bob, &room).await;
    typing_round_trip(&bob, &alice, &room).await;
}

async fn receipts_both_ways(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "receipts").await;
    receipt_round_trip(&alice, &bob, &room).await;
    receipt_round_trip(&bob, &alice, &room).await;
}

fn presence_of(sync: &Value, user: &str) -> Option<Value> {
    arr(&sync["presence"]["events"])
        .into_iter()
        .rev()
        .find(|e| e["type"] == "m.presence" && e["sender"] == user)
}

async fn presence_round_trip(from: &Client, to: &Client, status: &str) {
    let since = to.sync_token().await;
    from.put(
        &format!("{V3}/presence/{}/status", enc(&from.user_id)),
        &json!({"presence": "online", "status_msg": status}),
    )
    .await
    .ok();
    to.sync_until_within(Some(&since), FED_DEADLINE, |s| {
        presence_of(s, &from.user_id).is_some_and(|e| {
            e["content"]["presence"] == "online" && e["content"]["status_msg"] == status
        })
    })
    .await;
    wait_until(
        &format!("presence of {} on {}", from.user_id, to.server_name),
        || async {
            let (s, body) = to
                .get(&format!("{V3}/presence/{}/status", enc(&from.user_id)))
                .await;
            s == 200 && body["presence"] == "online" && body["status_msg"] == status
        },
    )
    .await;
}

async fn presence_both_ways(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, _room) = shared_room(&a, &bn, "presence").await;
    presence_round_trip(&alice, &bob, "alice is here").await;
    presence_round_trip(&bob, &alice, "bob is here").await;
}

// ------------------------------------------------------------------------------------------
// History, membership changes, outages
// ------------------------------------------------------------------------------------------

async fn backfill_history_after_join(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let alice = a.register("alice").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "history"}))
        .await;
    const N: usize = 320;
    for i in 0..N {
        alice.send_text(&room, &format!("old {i}")).await;
    }
    let bob = bn.register("bob").await;
    let started = Instant::now();
    bob.join(&alias(&a, "history")).await;
    println!(
        "federated join into a room with {N} events took {:?}",
        started.elapsed()
    );
    let events = bob.all_messages_backwards(&room).await;
    let seen: Vec<String> = bodies(&events)
        .into_iter()
        .filter(|b| b.starts_with("old "))
        .rev()
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("old {i}")).collect();
    assert_eq!(
        seen.len(),
        N,
        "bob paginated {} of the {N} messages sent before he joined",
        seen.len()
    );
    assert_eq!(seen, expected, "history out of order");
    // The room's creation is part of the history too.
    assert!(
        events.iter().any(|e| e["type"] == "m.room.create"),
        "pagination must reach m.room.create"
    );
}

async fn leave_and_rejoin(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "revolving").await;
    let since_a = alice.sync_token().await;
    bob.leave(&room).await.ok();
    wait_membership(&alice, Some(&since_a), &room, &bob.user_id, "leave").await;
    // While bob is away, alice talks; bob's sync shows the room as left.
    alice.send_text(&room, "while bob was away").await;
    let sync = bob.sync(None, 0).await;
    assert!(
        sync["rooms"]["join"][&room].is_null(),
        "room still joined after leave: {sync}"
    );
    let since_a = alice.sync_token().await;
    let started = Instant::now();
    assert_eq!(bob.join(&alias(&a, "revolving")).await, room);
    println!("federated rejoin took {:?}", started.elapsed());
    wait_membership(&alice, Some(&since_a), &room, &bob.user_id, "join").await;
    let since_b = bob.sync_token().await;
    let since_a = alice.sync_token().await;
    alice.send_text(&room, "welcome back").await;
    bob.send_text(&room, "glad to be back").await;
    wait_body(&bob, Some(&since_b), &room, "welcome back").await;
    wait_body(&alice, Some(&since_a), &room, "glad to be back").await;
}

/// The room is in the `leave` section of a sync, with `user`'s membership `m`.
fn left_with(sync: &Value, room: &str, user: &str, m: &str) -> bool {
    !sync["rooms"]["leave"][room].is_null() && membership_in(sync, room, user).as_deref() == Some(m)
}

async fn kick_enforced_remotely(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "kick").await;
    let since_b = bob.sync_token().await;
    alice
        .moderate("kick", &room, &bob.user_id, Some("out"))
        .await
        .ok();
    bob.sync_until_within(Some(&since_b), FED_DEADLINE, |s| {
        left_with(s, &room, &bob.user_id, "leave")
    })
    .await;
    // Bob's own server now refuses his events in the room.
    let resp = bob
        .try_send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "still here?"}),
        )
        .await
        .expect("send");
    assert_eq!(resp.0, 403, "a kicked user must not send: {resp:?}");
    // A kick is not a ban: bob may join again.
    let since_a = alice.sync_token().await;
    bob.join(&alias(&a, "kick")).await;
    wait_membership(&alice, Some(&since_a), &room, &bob.user_id, "join").await;
}

async fn ban_enforced_remotely(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "ban").await;
    let since_b = bob.sync_token().await;
    alice
        .moderate("ban", &room, &bob.user_id, Some("gone"))
        .await
        .ok();
    bob.sync_until_within(Some(&since_b), FED_DEADLINE, |s| {
        left_with(s, &room, &bob.user_id, "ban")
    })
    .await;
    let resp = bob
        .try_send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "banned?"}),
        )
        .await
        .expect("send");
    assert_eq!(resp.0, 403, "a banned user must not send: {resp:?}");
    let resp = bob.join_raw(&alias(&a, "ban")).await;
    assert_eq!(resp.0, 403, "a banned user must not rejoin: {resp:?}");
    let resp = bob
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), enc(&a.server_name)),
            &json!({}),
        )
        .await;
    assert_eq!(resp.0, 403, "a banned user must not rejoin by id: {resp:?}");
    // Alice still sees bob as banned; nothing bob tried reached the room.
    let m = alice.state(&room, "m.room.member", &bob.user_id).await.ok();
    assert_eq!(m["membership"], "ban");
    let msgs = alice.all_messages_backwards(&room).await;
    assert!(
        !bodies(&msgs).iter().any(|b| b == "banned?"),
        "a banned user's message reached the room"
    );
    // Unban lets bob back in.
    alice
        .moderate("unban", &room, &bob.user_id, None)
        .await
        .ok();
    wait_until("unban on B", || async {
        bob.join_raw(&alias(&a, "ban")).await.0 == 200
    })
    .await;
}

async fn stopped_node_catches_up(b: Backend) {
    let (a, mut bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "outage").await;
    bn.stop().await;
    const N: usize = 10;
    for i in 0..N {
        alice.send_text(&room, &format!("during outage {i}")).await;
    }
    alice
        .send_state(
            &room,
            "m.room.topic",
            "",
            &json!({"topic": "changed during outage"}),
        )
        .await;
    bn.start_again().await;
    // Nobody on B says anything: B tells A it is up when it starts, and A sends what it queued
    // without waiting for its backoff to run out.
    wait_until("everything sent during the outage on B", || async {
        let msgs = bob.all_messages_backwards(&room).await;
        let got = bodies(&msgs);
        (0..N).all(|i| got.contains(&format!("during outage {i}")))
    })
    .await;
    wait_state_field(
        &bob,
        &room,
        "m.room.topic",
        "",
        "topic",
        &json!("changed during outage"),
    )
    .await;
    // And live traffic flows again, both ways.
    let since_a = alice.sync_token().await;
    bob.send_text(&room, "bob is back").await;
    wait_body(&alice, Some(&since_a), &room, "bob is back").await;
    let since_b = bob.sync_token().await;
    alice.send_text(&room, "after the outage").await;
    wait_body(&bob, Some(&since_b), &room, "after the outage").await;
}

async fn three_nodes(b: Backend) {
    let (a, bn, cn) = tokio::join!(node(b), node(b), node(b));
    let (alice, bob, room) = shared_room(&a, &bn, "trio").await;
    let carol = cn.register("carol").await;
    // Carol joins through B only: B is resident and can help her join.
    let started = Instant::now();
    let body = carol
        .post(
            &format!("{V3}/join/{}?via={}", enc(&room), enc(&bn.server_name)),
            &json!({}),
        )
        .await
        .ok();
    println!(
        "federated join via a non-creating resident server took {:?}",
        started.elapsed()
    );
    assert_eq!(body["room_id"], room);
    wait_membership(&alice, None, &room, &carol.user_id, "join").await;
    wait_membership(&bob, None, &room, &carol.user_id, "join").await;
    let members = carol
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    for u in [&alice.user_id, &bob.user_id, &carol.user_id] {
        assert!(
            members["joined"][u].is_object(),
            "{u} missing on C: {members}"
        );
    }
    let clients = [&alice, &bob, &carol];
    let tokens: Vec<String> = {
        let mut v = Vec::new();
        for c in clients {
            v.push(c.sync_token().await);
        }
        v
    };
    for c in clients {
        c.send_text(&room, &format!("hi from {}", c.localpart()))
            .await;
    }
    for (i, c) in clients.iter().enumerate() {
        let want: Vec<String> = clients
            .iter()
            .map(|o| format!("hi from {}", o.localpart()))
            .collect();
        c.sync_until_within(Some(&tokens[i]), FED_DEADLINE, |s| {
            bodies(&timeline(s, &room))
                .iter()
                .any(|b| want.contains(b) && !b.ends_with(c.localpart()))
        })
        .await;
        wait_until(
            &format!("all three messages on {}", c.server_name),
            || async {
                let got = bodies(&c.all_messages_backwards(&room).await);
                want.iter().all(|w| got.contains(w))
            },
        )
        .await;
    }
    // Typing from C reaches A and B.
    let (sa, sb) = (alice.sync_token().await, bob.sync_token().await);
    set_typing(&carol, &room, true).await.ok();
    let me = json!(carol.user_id);
    for (c, since) in [(&alice, sa), (&bob, sb)] {
        c.sync_until_within(Some(&since), FED_DEADLINE, |s| {
            typing_users(s, &room).is_some_and(|u| u.contains(&me))
        })
        .await;
    }
}

// ------------------------------------------------------------------------------------------
// Forged traffic
// ------------------------------------------------------------------------------------------

/// The event ids of `room`'s power levels and of `user`'s membership, from the client API.
async fn auth_ids(c: &Client, room: &str, user: &str) -> (String, String) {
    let state = arr(&c.get(&format!("{V3}/rooms/{}/state", enc(room))).await.ok());
    let find = |t: &str, k: &str| {
        state
            .iter()
            .find(|e| e["type"] == t && e["state_key"] == k)
            .and_then(|e| e["event_id"].as_str())
            .unwrap_or_else(|| panic!("no {t}/{k} in room state"))
            .to_owned()
    };
    (find("m.room.power_levels", ""), find("m.room.member", user))
}

/// A hand-made PDU with its event id and message body.
struct Forged {
    pdu: Value,
    id: String,
    body: String,
}

/// Sends the forged PDU from the fake server to `target`, then has `alice` send a genuine
/// marker message, waits until `observer` (on `target`) sees the marker and asserts that no
/// sync response in between, nor `/messages`, nor `GET /event` shows the PDU.
async fn assert_pdu_never_appears(
    fake: &FakeServer,
    target: &Server,
    observer: &Client,
    alice: &Client,
    room: &str,
    forged: Forged,
) {
    let Forged {
        pdu,
        id: forged_id,
        body: forged_body,
    } = forged;
    let (forged_id, forged_body) = (forged_id.as_str(), forged_body.as_str());
    let since = observer.sync_token().await;
    let resp = fake
        .send_transaction(&target.server_name, &target.fed_url(), vec![pdu], vec![])
        .await;
    assert_eq!(
        resp.0, 200,
        "the transaction itself is well-formed: {resp:?}"
    );
    println!("/send result for the forged PDU: {}", resp.1);
    let marker = format!("genuine after forgery {}", random_string(6));
    alice.send_text(room, &marker).await;
    let seen = observer
        .sync_collect_until_within(Some(&since), None, FED_DEADLINE, |s| {
            bodies(&timeline(s, room)).contains(&marker)
        })
        .await;
    for s in &seen {
        assert!(
            !bodies(&timeline(s, room)).iter().any(|b| b == forged_body),
            "forged event appeared in /sync: {s}"
        );
        assert!(
            !has_event(&timeline(s, room), forged_id),
            "forged event id in /sync: {s}"
        );
    }
    let history = observer.all_messages_backwards(room).await;
    assert!(
        !bodies(&history).iter().any(|b| b == forged_body),
        "forged event appeared in /messages"
    );
    let resp = observer.event(room, forged_id).await;
    assert_eq!(
        resp.0, 404,
        "forged event must not be retrievable: {resp:?}"
    );
}

async fn forged_signature_never_appears(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "forgery").await;
    let fake = FakeServer::start().await;
    // A's real key id, signed with a key that is not A's.
    let a_keys = a.fed_get("/_matrix/key/v2/server").await.ok();
    let (a_key_id, _) = first_verify_key(&a_keys);
    let version = a_key_id.trim_start_matches("ed25519:");
    let impostor = crypto::ServerKey::generate(&a.server_name, version);
    let (pl, alice_member) = auth_ids(&alice, &room, &alice.user_id).await;
    let prev = alice.send_text(&room, "last genuine before forgery").await;
    wait_body(&bob, None, &room, "last genuine before forgery").await;
    let body = format!("forged as alice {}", random_string(6));
    let mut pdu = json!({
        "type": "m.room.message",
        "room_id": room,
        "sender": alice.user_id,
        "origin_server_ts": now_ms(),
        "content": {"msgtype": "m.text", "body": body},
        "depth": 50,
        "prev_events": [prev],
        "auth_events": [pl, alice_member],
    });
    let id = impostor.hash_and_sign_event(&mut pdu);
    let forged = Forged { pdu, id, body };
    assert_pdu_never_appears(&fake, &bn, &bob, &alice, &room, forged).await;

    // The same with an unknown key id of A's.
    let unknown = crypto::ServerKey::generate(&a.server_name, "notarealkey");
    let body = format!("forged with unknown key {}", random_string(6));
    let mut pdu = json!({
        "type": "m.room.message",
        "room_id": room,
        "sender": alice.user_id,
        "origin_server_ts": now_ms(),
        "content": {"msgtype": "m.text", "body": body},
        "depth": 50,
        "prev_events": [prev],
        "auth_events": [pl, alice_member],
    });
    let id = unknown.hash_and_sign_event(&mut pdu);
    let forged = Forged { pdu, id, body };
    assert_pdu_never_appears(&fake, &bn, &bob, &alice, &room, forged).await;
}

async fn event_from_server_not_in_room_never_appears(b: Backend) {
    let (a, bn) = two_nodes(b).await;
    let (alice, bob, room) = shared_room(&a, &bn, "outsider").await;
    let fake = FakeServer::start().await;
    let (pl, _) = auth_ids(&alice, &room, &alice.user_id).await;
    let prev = alice.send_text(&room, "last genuine before outsider").await;
    wait_body(&bob, None, &room, "last genuine before outsider").await;
    let body = format!("outsider speaks {}", random_string(6));
    let mut pdu = json!({
        "type": "m.room.message",
        "room_id": room,
        "sender": fake.user_id("mallory"),
        "origin_server_ts": now_ms(),
        "content": {"msgtype": "m.text", "body": body},
        "depth": 50,
        "prev_events": [prev],
        "auth_events": [pl],
    });
    // Correctly signed by the fake server, whose key B can fetch: only the auth rules stop it.
    let id = fake.key.hash_and_sign_event(&mut pdu);
    let forged = Forged { pdu, id, body };
    assert_pdu_never_appears(&fake, &bn, &bob, &alice, &room, forged).await;
}

// ------------------------------------------------------------------------------------------
// Synapse interop (GANGLION_TEST_SYNAPSE=1)
// ------------------------------------------------------------------------------------------

/// Starts Synapse only, registers users through the shared-secret admin API and through
/// `/register`, logs in with the harness client, fetches Synapse's keys over TLS with the test
/// CA and has the fake server make an X-Matrix-signed request that Synapse authenticates by
/// fetching the fake server's key. Checks the Synapse side of the harness on its own.
#[tokio::test(flavor = "multi_thread")]
async fn synapse_starts_and_registers() {
    if !synapse::enabled_or_skip() {
        return;
    }
    let started = Instant::now();
    let syn = Synapse::start().await;
    println!(
        "synapse start: {:?} (process start to both listeners answering: {:?})",
        started.elapsed(),
        syn.startup
    );
    let sam = syn.register("sam").await;
    let who = sam.whoami().await.ok();
    assert_eq!(who["user_id"], syn.user_id("sam"));
    let again = syn
        .client()
        .login(&sam.user_id, &Client::default_password("sam"))
        .await;
    assert_eq!(again.whoami().await.ok()["user_id"], sam.user_id);
    let by_localpart = syn
        .client()
        .login("sam", &Client::default_password("sam"))
        .await;
    assert_ne!(by_localpart.device_id, again.device_id);
    // UIA registration through the harness client works against Synapse too.
    let uia = syn
        .client()
        .register("uia_user", &Client::default_password("uia_user"))
        .await;
    assert_eq!(uia.whoami().await.ok()["user_id"], syn.user_id("uia_user"));
    // Rooms and sync helpers.
    let room = sam.create_room(json!({"preset": "public_chat"})).await;
    uia.join(&room).await;
    let since = uia.sync_token().await;
    sam.send_text(&room, "hello on synapse").await;
    uia.sync_until(Some(&since), |s| {
        bodies(&timeline(s, &room))
            .iter()
            .any(|b| b == "hello on synapse")
    })
    .await;
    // Keys over TLS with the test CA.
    let keys = complement_tests::client::into_resp(
        syn.fed_http()
            .get(format!("{}/_matrix/key/v2/server", syn.fed_url()))
            .send()
            .await
            .expect("GET synapse keys"),
    )
    .await
    .ok();
    assert_eq!(keys["server_name"], syn.server_name);
    assert_self_signed(&keys, &syn.server_name);
    // The fake server's X-Matrix signing and key endpoint convince a real implementation.
    let fake = FakeServer::start().await;
    let resp = fake
        .request(
            &syn.server_name,
            &syn.fed_url(),
            Method::GET,
            &format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                enc(&sam.user_id)
            ),
            None,
        )
        .await;
    assert_eq!(
        resp.0, 200,
        "synapse rejected the fake server's request: {resp:?}"
    );
    assert!(
        fake.received()
            .iter()
            .any(|r| r.path.starts_with("/_matrix/key/v2/server")),
        "synapse should have fetched the fake server's key over TLS"
    );
    // A request signed with a key the fake server does not publish is refused.
    let rogue = crypto::ServerKey::generate(&fake.server_name, "rogue");
    let resp = fake
        .request_signed_by(
            &rogue,
            &syn.server_name,
            &syn.fed_url(),
            Method::GET,
            &format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                enc(&sam.user_id)
            ),
            None,
        )
        .await;
    assert_eq!(
        resp.0, 401,
        "synapse accepted a request signed with an unpublished key: {resp:?}"
    );
    // Synapse's complaints about the generated config (if any), for whoever reads the output.
    let log = std::fs::read_to_string(syn.log_path()).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains(" - WARNING - ") || l.contains(" - ERROR - "))
    {
        println!("synapse: {line}");
    }
}

async fn synapse_joins_ganglion_room(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "interop"}))
        .await;
    let started = Instant::now();
    let joined = sam.join(&alias(&g, "interop")).await;
    println!(
        "synapse joining a ganglion room took {:?}",
        started.elapsed()
    );
    assert_eq!(joined, room);
    wait_membership(&alice, None, &room, &sam.user_id, "join").await;
    wait_membership(&sam, None, &room, &sam.user_id, "join").await;
    both_ways(&alice, &sam, &room).await;
}

async fn ganglion_joins_synapse_room(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let room = sam
        .create_room(json!({"preset": "public_chat", "room_alias_name": "interop"}))
        .await;
    let syn_alias = format!("#interop:{}", syn.server_name);
    let started = Instant::now();
    let joined = alice.join(&syn_alias).await;
    println!(
        "ganglion joining a synapse room took {:?}",
        started.elapsed()
    );
    assert_eq!(joined, room);
    wait_membership(&sam, None, &room, &alice.user_id, "join").await;
    wait_membership(&alice, None, &room, &alice.user_id, "join").await;
    both_ways(&sam, &alice, &room).await;
}

/// History of a Synapse room from before the Ganglion user joined: backfilled on pagination,
/// in order, down to the room's creation.
async fn ganglion_paginates_synapse_history(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let sam = syn.register("sam").await;
    let room = sam
        .create_room(json!({"preset": "public_chat", "room_alias_name": "old-news"}))
        .await;
    const N: usize = 120;
    for i in 0..N {
        sam.send_text(&room, &format!("old {i}")).await;
    }
    let alice = g.register("alice").await;
    alice.join(&format!("#old-news:{}", syn.server_name)).await;
    let events = alice.all_messages_backwards(&room).await;
    let seen: Vec<String> = bodies(&events)
        .into_iter()
        .filter(|b| b.starts_with("old "))
        .rev()
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("old {i}")).collect();
    assert_eq!(
        seen, expected,
        "history from Synapse missing or out of order"
    );
    assert!(
        events.iter().any(|e| e["type"] == "m.room.create"),
        "pagination must reach m.room.create"
    );
}

/// The other way round: Synapse backfills a Ganglion room's history from us.
async fn synapse_paginates_ganglion_history(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "archive"}))
        .await;
    const N: usize = 120;
    for i in 0..N {
        alice.send_text(&room, &format!("old {i}")).await;
    }
    let sam = syn.register("sam").await;
    sam.join(&alias(&g, "archive")).await;
    wait_until("Synapse paginates the whole history", || async {
        let got = bodies(&sam.all_messages_backwards(&room).await);
        (0..N).all(|i| got.contains(&format!("old {i}")))
    })
    .await;
}

async fn presence_with_synapse(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "status"}))
        .await;
    sam.join(&alias(&g, "status")).await;
    wait_membership(&alice, None, &room, &sam.user_id, "join").await;
    presence_round_trip(&alice, &sam, "alice is here").await;
    presence_round_trip(&sam, &alice, "sam is here").await;
}

/// A space and a room only its members may join (`restricted`), created by `c`.
async fn space_and_restricted_room(c: &Client, version: &str) -> (String, String) {
    let space = c
        .create_room(
            json!({"preset": "public_chat", "name": "Dept", "room_version": version,
                            "creation_content": {"type": "m.space"}}),
        )
        .await;
    let room = c
        .create_room(json!({"preset": "private_chat", "name": "Dept only",
                            "room_version": version,
                            "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                "content": {"join_rule": "restricted",
                                            "allow": [{"type": "m.room_membership",
                                                       "room_id": space}]}}]}))
        .await;
    (space, room)
}

/// `c` joins `room` through `server` (`?via=`), raw.
async fn join_via(c: &Client, room: &str, server: &str) -> Resp {
    c.post(
        &format!("{V3}/join/{}?via={}", enc(room), enc(server)),
        &json!({}),
    )
    .await
}

async fn synapse_joins_ganglion_restricted_room(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let (space, room) = space_and_restricted_room(&alice, "12").await;
    let refused = join_via(&sam, &room, &g.server_name).await;
    assert_eq!(refused.0, 403, "{refused:?}");
    join_via(&sam, &space, &g.server_name).await.ok();
    join_via(&sam, &room, &g.server_name).await.ok();
    wait_membership(&alice, None, &room, &sam.user_id, "join").await;
    both_ways(&alice, &sam, &room).await;
}

async fn ganglion_joins_synapse_restricted_room(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let (space, room) = space_and_restricted_room(&sam, "10").await;
    let refused = join_via(&alice, &room, &syn.server_name).await;
    assert_eq!(refused.0, 403, "{refused:?}");
    join_via(&alice, &space, &syn.server_name).await.ok();
    join_via(&alice, &room, &syn.server_name).await.ok();
    wait_membership(&sam, None, &room, &alice.user_id, "join").await;
    both_ways(&sam, &alice, &room).await;
}

fn knock_room_body(version: &str) -> Value {
    json!({"preset": "private_chat", "name": "Knock here", "room_version": version,
           "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                              "content": {"join_rule": "knock"}}]})
}

async fn synapse_knocks_on_ganglion_room(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let room = alice.create_room(knock_room_body("12")).await;
    sam.post(
        &format!("{V3}/knock/{}?via={}", enc(&room), enc(&g.server_name)),
        &json!({"reason": "hello?"}),
    )
    .await
    .ok();
    wait_membership(&alice, None, &room, &sam.user_id, "knock").await;
    alice.invite(&room, &sam.user_id).await.ok();
    sam.sync_until_within(None, FED_DEADLINE, |s| {
        !s["rooms"]["invite"][room.as_str()].is_null()
    })
    .await;
    join_via(&sam, &room, &g.server_name).await.ok();
    wait_membership(&alice, None, &room, &sam.user_id, "join").await;
}

async fn ganglion_knocks_on_synapse_room(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let room = sam.create_room(knock_room_body("10")).await;
    alice
        .post(
            &format!("{V3}/knock/{}?via={}", enc(&room), enc(&syn.server_name)),
            &json!({"reason": "hello?"}),
        )
        .await
        .ok();
    let knock_state = wait_stripped_state(&alice, &room, "knock").await;
    assert_named(&knock_state, "Knock here");
    wait_membership(&sam, None, &room, &alice.user_id, "knock").await;
    sam.invite(&room, &alice.user_id).await.ok();
    let invite_state = wait_stripped_state(&alice, &room, "invite").await;
    assert_named(&invite_state, "Knock here");
    alice.join(&room).await;
    wait_membership(&sam, None, &room, &alice.user_id, "join").await;
}

async fn synapse_member_follows_ganglion_upgrade(b: Backend) {
    if !synapse::enabled_or_skip() {
        return;
    }
    let (g, syn) = tokio::join!(node(b), Synapse::start());
    let alice = g.register("alice").await;
    let sam = syn.register("sam").await;
    let old = alice
        .create_room(json!({"preset": "public_chat", "room_version": "11", "name": "Before"}))
        .await;
    join_via(&sam, &old, &g.server_name).await.ok();
    wait_membership(&alice, None, &old, &sam.user_id, "join").await;
    let new = alice
        .post(
            &format!("{V3}/rooms/{}/upgrade", enc(&old)),
            &json!({"new_version": "12"}),
        )
        .await
        .ok()["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();
    // Synapse's member sees the tombstone and follows it.
    sam.sync_until_within(None, FED_DEADLINE, |s| {
        state_event_in(s, &old, "m.room.tombstone", "")
            .is_some_and(|e| e["content"]["replacement_room"] == new.as_str())
    })
    .await;
    join_via(&sam, &new, &g.server_name).await.ok();
    wait_membership(&alice, None, &new, &sam.user_id, "join").await;
    let create = sam.state(&new, "m.room.create", "").await.ok();
    assert_eq!(create["predecessor"]["room_id"], old.as_str(), "{create}");
    both_ways(&alice, &sam, &new).await;
}
