//! Push rules: the default ruleset, custom rules, enabling/disabling, actions.

use crate::prelude::*;

backend_tests!(
    default_ruleset,
    get_single_default_rule,
    custom_room_rule_lifecycle,
    custom_override_rule_with_conditions,
    content_rule,
    rule_ordering_with_before,
    enable_and_disable_rules,
    set_rule_actions,
    unknown_rule_is_404,
    push_rules_in_sync,
    default_rules_in_initial_sync,
    default_rules_cannot_be_deleted_or_replaced,
    mention_counts_as_highlight,
    room_rule_mutes_unread_counts,
    thread_notifications_counted_per_thread,
);

const PR: &str = "/_matrix/client/v3/pushrules";

fn ids(rules: &Value) -> Vec<String> {
    arr(rules)
        .iter()
        .filter_map(|r| r["rule_id"].as_str().map(str::to_owned))
        .collect()
}

async fn default_ruleset(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let body = alice.get(&format!("{PR}/")).await.ok();
    let global = &body["global"];
    for kind in ["override", "content", "room", "sender", "underride"] {
        assert!(
            global[kind].is_array() || global[kind].is_null(),
            "{kind} must be an array: {body}"
        );
    }
    let overrides = ids(&global["override"]);
    assert_eq!(
        overrides.first().map(String::as_str),
        Some(".m.rule.master"),
        "master must be the first override rule: {overrides:?}"
    );
    // The spec's predefined rules, in the spec's priority order (servers may add their own
    // rules in between, so only the relative order is checked).
    let in_order = |list: &[String], expected: &[&str], kind: &str| {
        let mut last = None;
        for id in expected {
            let pos = list
                .iter()
                .position(|x| x == id)
                .unwrap_or_else(|| panic!("{kind} rule {id} missing: {list:?}"));
            if let Some(prev) = last {
                assert!(
                    pos > prev,
                    "{kind} rule {id} out of priority order: {list:?}"
                );
            }
            last = Some(pos);
        }
    };
    in_order(
        &overrides,
        &[
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.is_room_mention",
            ".m.rule.tombstone",
            ".m.rule.reaction",
            ".m.rule.room.server_acl",
            ".m.rule.suppress_edits",
        ],
        "override",
    );
    let underrides = ids(&global["underride"]);
    in_order(
        &underrides,
        &[
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ],
        "underride",
    );

    let master = arr(&global["override"])[0].clone();
    assert_eq!(master["default"], true, "{master}");
    assert_eq!(master["enabled"], false, "{master}");
    assert_eq!(master["actions"], json!([]), "{master}");
    for kind in ["override", "underride"] {
        for rule in arr(&global[kind]) {
            assert_eq!(
                rule["default"], true,
                "server-default rule not marked default: {rule}"
            );
            assert!(rule["enabled"].is_boolean(), "{rule}");
            assert!(rule["actions"].is_array(), "{rule}");
        }
    }
    let suppress = arr(&global["override"])
        .into_iter()
        .find(|r| r["rule_id"] == ".m.rule.suppress_notices")
        .expect("suppress_notices");
    assert_eq!(
        suppress["conditions"],
        json!([{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}])
    );
}

async fn get_single_default_rule(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let rule = alice
        .get(&format!("{PR}/global/override/.m.rule.master"))
        .await
        .ok();
    assert_eq!(rule["rule_id"], ".m.rule.master");
    assert_eq!(rule["default"], true);
    assert_eq!(rule["enabled"], false);
    let rule = alice
        .get(&format!("{PR}/global/underride/.m.rule.message"))
        .await
        .ok();
    assert_eq!(rule["rule_id"], ".m.rule.message");
    assert!(arr(&rule["actions"]).contains(&json!("notify")), "{rule}");
}

async fn custom_room_rule_lifecycle(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = format!("{PR}/global/room/{}", enc(&room));
    alice.put(&path, &json!({"actions": ["notify"]})).await.ok();
    let rule = alice.get(&path).await.ok();
    assert_eq!(rule["rule_id"], room.as_str());
    assert_eq!(rule["actions"], json!(["notify"]));
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["default"], false);
    let all = alice.get(&format!("{PR}/")).await.ok();
    assert!(ids(&all["global"]["room"]).contains(&room), "{all}");

    alice.delete(&path).await.ok();
    alice.get(&path).await.expect_err(404, "M_NOT_FOUND");
    let all = alice.get(&format!("{PR}/")).await.ok();
    assert!(!ids(&all["global"]["room"]).contains(&room), "{all}");
}

async fn custom_override_rule_with_conditions(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{PR}/global/override/com.example.cake");
    let conditions = json!([{"kind": "event_match", "key": "content.body", "pattern": "cake*"}]);
    let actions = json!(["notify", {"set_tweak": "sound", "value": "default"}]);
    alice
        .put(
            &path,
            &json!({"conditions": conditions, "actions": actions}),
        )
        .await
        .ok();
    let rule = alice.get(&path).await.ok();
    assert_eq!(rule["conditions"], conditions, "{rule}");
    assert_eq!(rule["actions"], actions, "{rule}");
    assert_eq!(rule["default"], false);
    // Rules starting with '.' are reserved for server defaults.
    let (status, body) = alice
        .put(
            &format!("{PR}/global/override/.m.rule.mine"),
            &json!({"actions": ["notify"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn content_rule(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{PR}/global/content/cakes");
    alice
        .put(&path, &json!({"pattern": "cake", "actions": ["notify"]}))
        .await
        .ok();
    let rule = alice.get(&path).await.ok();
    assert_eq!(rule["pattern"], "cake");
    assert_eq!(rule["rule_id"], "cakes");
    // A content rule needs a pattern.
    let (status, body) = alice
        .put(
            &format!("{PR}/global/content/nopattern"),
            &json!({"actions": ["notify"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn rule_ordering_with_before(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let rule = |n: &str| {
        json!({
            "conditions": [{"kind": "event_match", "key": "content.body", "pattern": n}],
            "actions": ["notify"],
        })
    };
    alice
        .put(&format!("{PR}/global/override/com.example.a"), &rule("a"))
        .await
        .ok();
    alice
        .put(
            &format!("{PR}/global/override/com.example.b?before=com.example.a"),
            &rule("b"),
        )
        .await
        .ok();
    alice
        .put(
            &format!("{PR}/global/override/com.example.c?after=com.example.a"),
            &rule("c"),
        )
        .await
        .ok();
    let all = alice.get(&format!("{PR}/")).await.ok();
    let order = ids(&all["global"]["override"]);
    let pos = |id: &str| {
        order
            .iter()
            .position(|x| x == id)
            .unwrap_or_else(|| panic!("{id} missing: {order:?}"))
    };
    assert!(pos("com.example.b") < pos("com.example.a"), "{order:?}");
    assert!(pos("com.example.a") < pos("com.example.c"), "{order:?}");
    assert_eq!(pos(".m.rule.master"), 0, "{order:?}");
    // An unknown anchor is an error.
    let (status, body) = alice
        .put(
            &format!("{PR}/global/override/com.example.d?before=com.example.nope"),
            &rule("d"),
        )
        .await;
    assert!(status == 400 || status == 404, "{status} {body}");
}

async fn enable_and_disable_rules(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{PR}/global/override/.m.rule.master/enabled");
    assert_eq!(alice.get(&path).await.ok()["enabled"], false);
    alice.put(&path, &json!({"enabled": true})).await.ok();
    assert_eq!(alice.get(&path).await.ok()["enabled"], true);
    let rule = alice
        .get(&format!("{PR}/global/override/.m.rule.master"))
        .await
        .ok();
    assert_eq!(rule["enabled"], true);
    alice.put(&path, &json!({"enabled": false})).await.ok();
    assert_eq!(alice.get(&path).await.ok()["enabled"], false);

    // Custom rules too.
    alice
        .put(
            &format!("{PR}/global/sender/{}", enc("@spammer:example.org")),
            &json!({"actions": []}),
        )
        .await
        .ok();
    let p = format!("{PR}/global/sender/{}/enabled", enc("@spammer:example.org"));
    alice.put(&p, &json!({"enabled": false})).await.ok();
    assert_eq!(alice.get(&p).await.ok()["enabled"], false);
}

async fn set_rule_actions(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = format!("{PR}/global/underride/.m.rule.message/actions");
    alice.put(&path, &json!({"actions": []})).await.ok();
    assert_eq!(alice.get(&path).await.ok()["actions"], json!([]));
    let rule = alice
        .get(&format!("{PR}/global/underride/.m.rule.message"))
        .await
        .ok();
    assert_eq!(rule["actions"], json!([]));
    // Other users are unaffected.
    let bob = server.register("bob").await;
    let rule = bob
        .get(&format!("{PR}/global/underride/.m.rule.message"))
        .await
        .ok();
    assert!(arr(&rule["actions"]).contains(&json!("notify")), "{rule}");
}

async fn unknown_rule_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&format!("{PR}/global/override/com.example.none"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&format!("{PR}/global/override/com.example.none/enabled"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let (status, body) = alice
        .delete(&format!("{PR}/global/override/com.example.none"))
        .await;
    assert_eq!(status, 404, "{body}");
}

async fn push_rules_in_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let since = alice.sync_token().await;
    alice
        .put(
            &format!("{PR}/global/override/com.example.sync"),
            &json!({"conditions": [], "actions": ["notify"]}),
        )
        .await
        .ok();
    alice
        .sync_until(Some(&since), |s| {
            arr(&s["account_data"]["events"]).iter().any(|e| {
                e["type"] == "m.push_rules"
                    && ids(&e["content"]["global"]["override"])
                        .contains(&"com.example.sync".to_owned())
            })
        })
        .await;
}

async fn default_rules_in_initial_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let sync = alice.sync(None, 0).await;
    let rules = arr(&sync["account_data"]["events"])
        .into_iter()
        .find(|e| e["type"] == "m.push_rules")
        .unwrap_or_else(|| panic!("no m.push_rules in initial sync: {sync}"));
    assert_eq!(
        ids(&rules["content"]["global"]["override"])
            .first()
            .map(String::as_str),
        Some(".m.rule.master"),
        "{rules}"
    );
}

async fn default_rules_cannot_be_deleted_or_replaced(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let (status, body) = alice
        .delete(&format!("{PR}/global/override/.m.rule.master"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = alice
        .put(
            &format!("{PR}/global/underride/.m.rule.message"),
            &json!({"conditions": [], "actions": []}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // An unknown kind is a client error too.
    let (status, body) = alice.get(&format!("{PR}/global/nonsense/x")).await;
    assert!(status == 400 || status == 404, "{status} {body}");
    // Still there, unchanged.
    let rule = alice
        .get(&format!("{PR}/global/underride/.m.rule.message"))
        .await
        .ok();
    assert!(arr(&rule["actions"]).contains(&json!("notify")), "{rule}");
}

fn counts(s: &Value, room: &str) -> Option<(u64, u64)> {
    let n = &s["rooms"]["join"][room]["unread_notifications"];
    Some((
        n["notification_count"].as_u64()?,
        n["highlight_count"].as_u64()?,
    ))
}

async fn mention_counts_as_highlight(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = bob.sync_token().await;
    alice.send_text(&room, "hello").await;
    alice
        .send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "hey bob",
                    "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    let sync = bob
        .sync_until(Some(&since), |s| {
            counts(s, &room).is_some_and(|(n, _)| n >= 2)
        })
        .await;
    assert_eq!(counts(&sync, &room), Some((2, 1)), "{sync}");
}

async fn room_rule_mutes_unread_counts(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    bob.put(
        &format!("{PR}/global/room/{}", enc(&room)),
        &json!({"actions": []}),
    )
    .await
    .ok();
    let since = bob.sync_token().await;
    alice.send_text(&room, "muted 1").await;
    alice.send_text(&room, "muted 2").await;
    let sync = bob
        .sync_until(Some(&since), |s| {
            timeline(s, &room)
                .iter()
                .any(|e| e["content"]["body"] == "muted 2")
        })
        .await;
    assert_eq!(counts(&sync, &room), Some((0, 0)), "{sync}");
}

async fn thread_notifications_counted_per_thread(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = bob.sync_token().await;
    let root = alice.send_text(&room, "root").await;
    alice
        .send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "in thread",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    let filter = json!({"room": {"timeline": {"unread_thread_notifications": true}}}).to_string();
    let thread = |s: &Value| {
        s["rooms"]["join"][room.as_str()]["unread_thread_notifications"][root.as_str()]
            ["notification_count"]
            .as_u64()
    };
    let sync = bob
        .sync_until_filtered(Some(&since), Some(&filter), |s| thread(s) == Some(1))
        .await;
    assert_eq!(counts(&sync, &room), Some((1, 0)), "{sync}");
    // Without the filter flag, thread events count in the room.
    let sync = bob
        .sync_until(Some(&since), |s| {
            counts(s, &room).is_some_and(|(n, _)| n >= 2)
        })
        .await;
    assert_eq!(counts(&sync, &room), Some((2, 0)), "{sync}");
    // A threaded receipt in the thread clears only the thread.
    let reply = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["content"]["body"] == "in thread")
        .and_then(|e| e["event_id"].as_str().map(str::to_owned))
        .expect("thread reply in timeline");
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&reply)),
        &json!({"thread_id": root}),
    )
    .await
    .ok();
    bob.sync_until(Some(&next_batch(&sync)), |s| {
        counts(s, &room) == Some((1, 0))
    })
    .await;
}
