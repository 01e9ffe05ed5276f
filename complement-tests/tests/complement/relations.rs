//! Relations (m.annotation, m.replace, m.thread) and thread listing.

use crate::prelude::*;

backend_tests!(
    annotations,
    replacements,
    threads,
    relations_pagination,
    bundled_aggregations,
    recursive_relations,
    threads_pagination,
    relations_need_room_access,
);

fn rel_path(room: &str, event: &str, rest: &str) -> String {
    format!("{V1}/rooms/{}/relations/{}{rest}", enc(room), enc(event))
}

fn chunk_ids(body: &Value) -> Vec<String> {
    arr(&body["chunk"])
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect()
}

async fn annotations(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let root = alice.send_text(&room, "react to me").await;
    let reaction = bob
        .send_event(
            &room,
            "m.reaction",
            &json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
        )
        .await;
    let unrelated = bob.send_text(&room, "not a relation").await;

    let all = alice.get(&rel_path(&room, &root, "")).await.ok();
    assert!(chunk_ids(&all).contains(&reaction), "{all}");
    assert!(
        all["recursion_depth"].is_null(),
        "recursion_depth must be absent without `recurse`: {all}"
    );
    assert!(!chunk_ids(&all).contains(&unrelated), "{all}");
    let by_type = alice
        .get(&rel_path(&room, &root, "/m.annotation"))
        .await
        .ok();
    assert_eq!(chunk_ids(&by_type), vec![reaction.clone()], "{by_type}");
    let by_event_type = alice
        .get(&rel_path(&room, &root, "/m.annotation/m.reaction"))
        .await
        .ok();
    assert_eq!(chunk_ids(&by_event_type), vec![reaction.clone()]);
    let wrong_event_type = alice
        .get(&rel_path(&room, &root, "/m.annotation/m.room.message"))
        .await
        .ok();
    assert!(
        chunk_ids(&wrong_event_type).is_empty(),
        "{wrong_event_type}"
    );
    let threads = alice.get(&rel_path(&room, &root, "/m.thread")).await.ok();
    assert!(chunk_ids(&threads).is_empty(), "{threads}");
    let ev = arr(&by_type["chunk"])[0].clone();
    assert_eq!(ev["content"]["m.relates_to"]["key"], "👍");

    alice
        .get(&rel_path(&room, "$no_such_parent_event", ""))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn replacements(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let root = alice.send_text(&room, "helo").await;
    let edit = alice
        .send_event(
            &room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": "* hello",
                "m.new_content": {"msgtype": "m.text", "body": "hello"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": root},
            }),
        )
        .await;
    let body = alice.get(&rel_path(&room, &root, "/m.replace")).await.ok();
    assert_eq!(chunk_ids(&body), vec![edit.clone()], "{body}");
    // The original is still retrievable with its original content.
    let original = alice.event(&room, &root).await.ok();
    assert_eq!(original["content"]["body"], "helo");
}

async fn threads(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let root = alice.send_text(&room, "thread root").await;
    let not_a_thread = alice.send_text(&room, "plain message").await;
    let mut replies = Vec::new();
    for (c, text) in [(&bob, "reply 1"), (&alice, "reply 2")] {
        replies.push(
            c.send_event(
                &room,
                "m.room.message",
                &json!({
                    "msgtype": "m.text",
                    "body": text,
                    "m.relates_to": {"rel_type": "m.thread", "event_id": root},
                }),
            )
            .await,
        );
    }
    let body = alice.get(&rel_path(&room, &root, "/m.thread")).await.ok();
    // Default direction is backwards: newest first.
    assert_eq!(
        chunk_ids(&body),
        vec![replies[1].clone(), replies[0].clone()],
        "{body}"
    );
    let fwd = alice
        .get(&format!("{}?dir=f", rel_path(&room, &root, "/m.thread")))
        .await
        .ok();
    assert_eq!(chunk_ids(&fwd), replies, "{fwd}");

    let list = alice
        .get(&format!("{V1}/rooms/{}/threads", enc(&room)))
        .await
        .ok();
    let roots = chunk_ids(&list);
    assert_eq!(roots, vec![root.clone()], "{list}");
    assert!(!roots.contains(&not_a_thread));
    let participated = alice
        .get(&format!(
            "{V1}/rooms/{}/threads?include=participated",
            enc(&room)
        ))
        .await
        .ok();
    assert_eq!(
        chunk_ids(&participated),
        vec![root.clone()],
        "{participated}"
    );
}

async fn relations_pagination(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let root = alice.send_text(&room, "popular").await;
    let mut reactions = Vec::new();
    for key in ["a", "b", "c"] {
        reactions.push(
            alice
                .send_event(
                    &room,
                    "m.reaction",
                    &json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": key}}),
                )
                .await,
        );
    }
    let page1 = alice
        .get(&format!("{}?limit=2", rel_path(&room, &root, "")))
        .await
        .ok();
    assert_eq!(
        chunk_ids(&page1),
        vec![reactions[2].clone(), reactions[1].clone()]
    );
    let next = page1["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("more relations but no next_batch: {page1}"));
    let page2 = alice
        .get(&format!(
            "{}?limit=2&from={}",
            rel_path(&room, &root, ""),
            enc(next)
        ))
        .await
        .ok();
    assert_eq!(chunk_ids(&page2), vec![reactions[0].clone()], "{page2}");
    assert!(page2["next_batch"].is_null(), "{page2}");
}

async fn thread_reply(c: &Client, room: &str, root: &str, text: &str) -> String {
    c.send_event(
        room,
        "m.room.message",
        &json!({
            "msgtype": "m.text",
            "body": text,
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        }),
    )
    .await
}

async fn edit(c: &Client, room: &str, target: &str, text: &str) -> String {
    c.send_event(
        room,
        "m.room.message",
        &json!({
            "msgtype": "m.text",
            "body": format!("* {text}"),
            "m.new_content": {"msgtype": "m.text", "body": text},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        }),
    )
    .await
}

async fn bundled_aggregations(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let root = alice.send_text(&room, "root").await;
    thread_reply(&bob, &room, &root, "first").await;
    let latest = thread_reply(&bob, &room, &root, "second").await;
    let msg = alice.send_text(&room, "helo").await;
    edit(&alice, &room, &msg, "hallo").await;
    let edit2 = edit(&alice, &room, &msg, "hello").await;
    // An edit by someone else is not an edit.
    edit(&bob, &room, &msg, "hijacked").await;

    let check = |ev: &Value, viewer_participated: bool| {
        let rels = &ev["unsigned"]["m.relations"];
        if ev["event_id"] == root.as_str() {
            assert_eq!(rels["m.thread"]["count"], 2, "{ev}");
            assert_eq!(
                rels["m.thread"]["latest_event"]["event_id"],
                latest.as_str(),
                "{ev}"
            );
            assert_eq!(
                rels["m.thread"]["current_user_participated"], viewer_participated,
                "{ev}"
            );
        } else if ev["event_id"] == msg.as_str() {
            assert_eq!(rels["m.replace"]["event_id"], edit2.as_str(), "{ev}");
            // The original content is served unchanged.
            assert_eq!(ev["content"]["body"], "helo", "{ev}");
        }
    };
    // /event
    check(&alice.event(&room, &root).await.ok(), true);
    check(&bob.event(&room, &root).await.ok(), true);
    check(&alice.event(&room, &msg).await.ok(), true);
    // /messages
    let msgs = alice.messages(&room, "dir=b&limit=20").await.ok();
    let chunk = arr(&msgs["chunk"]);
    for id in [&root, &msg] {
        let ev = chunk
            .iter()
            .find(|e| e["event_id"] == id.as_str())
            .expect("in chunk");
        assert!(ev["unsigned"]["m.relations"].is_object(), "{ev}");
        check(ev, true);
    }
    // /context
    let ctx = alice
        .get(&format!(
            "{V3}/rooms/{}/context/{}?limit=10",
            enc(&room),
            enc(&msg)
        ))
        .await
        .ok();
    check(&ctx["event"], true);
    assert!(
        ctx["event"]["unsigned"]["m.relations"]["m.replace"].is_object(),
        "{ctx}"
    );
    // /sync timeline
    let filter = json!({"room": {"timeline": {"limit": 20}}}).to_string();
    let sync = alice.sync_filtered(None, Some(&filter), 0).await;
    let tl = timeline(&sync, &room);
    let ev = tl
        .iter()
        .find(|e| e["event_id"] == msg.as_str())
        .expect("in timeline");
    check(ev, true);
    // /threads
    let list = alice
        .get(&format!("{V1}/rooms/{}/threads", enc(&room)))
        .await
        .ok();
    check(&arr(&list["chunk"])[0], true);
    // A user who neither started nor replied did not participate.
    let carol = server.register("carol").await;
    carol.join(&room).await;
    check(&carol.event(&room, &root).await.ok(), false);
}

async fn recursive_relations(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let root = alice.send_text(&room, "root").await;
    let reply = thread_reply(&alice, &room, &root, "reply").await;
    let reaction = alice
        .send_event(
            &room,
            "m.reaction",
            &json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "x"}}),
        )
        .await;
    let flat = alice.get(&rel_path(&room, &root, "")).await.ok();
    assert_eq!(chunk_ids(&flat), vec![reply.clone()], "{flat}");
    let deep = alice
        .get(&format!("{}?recurse=true", rel_path(&room, &root, "")))
        .await
        .ok();
    assert_eq!(
        chunk_ids(&deep),
        vec![reaction.clone(), reply.clone()],
        "{deep}"
    );
    assert!(deep["recursion_depth"].is_u64(), "{deep}");
    let deep_typed = alice
        .get(&format!(
            "{}?recurse=true",
            rel_path(&room, &root, "/m.annotation")
        ))
        .await
        .ok();
    assert_eq!(chunk_ids(&deep_typed), vec![reaction], "{deep_typed}");
}

async fn threads_pagination(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut roots = Vec::new();
    for i in 0..3 {
        let root = alice.send_text(&room, &format!("root {i}")).await;
        thread_reply(&alice, &room, &root, "reply").await;
        roots.push(root);
    }
    // Activity in the first thread makes it the most recent.
    thread_reply(&alice, &room, &roots[0], "bump").await;
    let page1 = alice
        .get(&format!("{V1}/rooms/{}/threads?limit=2", enc(&room)))
        .await
        .ok();
    assert_eq!(
        chunk_ids(&page1),
        vec![roots[0].clone(), roots[2].clone()],
        "{page1}"
    );
    let next = page1["next_batch"].as_str().expect("next_batch");
    let page2 = alice
        .get(&format!(
            "{V1}/rooms/{}/threads?limit=2&from={}",
            enc(&room),
            enc(next)
        ))
        .await
        .ok();
    assert_eq!(chunk_ids(&page2), vec![roots[1].clone()], "{page2}");
    assert!(page2["next_batch"].is_null(), "{page2}");
}

async fn relations_need_room_access(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let root = alice.send_text(&room, "secret").await;
    let (status, body) = eve.get(&rel_path(&room, &root, "")).await;
    assert!(status == 403 || status == 404, "{status} {body}");
    let (status, body) = eve.get(&format!("{V1}/rooms/{}/threads", enc(&room))).await;
    assert!(status == 403 || status == 404, "{status} {body}");
}
