//! Relations (m.annotation, m.replace, m.thread) and thread listing.

use crate::prelude::*;

backend_tests!(annotations, replacements, threads, relations_pagination,);

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
