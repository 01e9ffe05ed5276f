//! Durability: acknowledged writes survive a graceful restart and a SIGKILL.

use std::sync::{Arc, Mutex};

use crate::prelude::*;

backend_tests!(
    data_survives_restart,
    acknowledged_events_survive_sigkill,
    second_server_on_the_same_data_refuses_to_start,
);

async fn data_survives_restart(b: Backend) {
    let mut server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let eid = alice.send_text(&room, "persist me").await;
    alice
        .send_state(&room, "com.example.durable", "k", &json!({"v": 1}))
        .await;
    server.restart().await;

    // Existing tokens and data are still valid.
    alice.whoami().await.ok();
    let ev = bob.event(&room, &eid).await.ok();
    assert_eq!(ev["content"]["body"], "persist me");
    let state = bob
        .get(&format!("{V3}/rooms/{}/state", enc(&room)))
        .await
        .ok();
    assert!(
        arr(&state)
            .iter()
            .any(|e| e["type"] == "com.example.durable" && e["content"]["v"] == 1),
        "state lost across restart: {state}"
    );
    let members = bob
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    assert_eq!(members["joined"].as_object().map(|m| m.len()), Some(2));
    // And the server keeps working: new events, logins, sync.
    let after = bob.send_text(&room, "after restart").await;
    alice
        .sync_until(None, |s| has_event(&timeline(s, &room), &after))
        .await;
    server.client().login("alice", &alice.password).await;
}

const WRITERS: usize = 4;
const TARGET_ACKS: usize = 60;

async fn acknowledged_events_survive_sigkill(b: Backend) {
    let mut server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Crash test"}))
        .await;
    let mut writers = vec![alice.clone()];
    for i in 1..WRITERS {
        let c = server.register(&format!("writer{i}")).await;
        c.join(&room).await;
        writers.push(c);
    }

    // Every acknowledged (200 with event_id) send is recorded.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (w, client) in writers.into_iter().enumerate() {
        let acked = acked.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let body = format!("w{w}-{i}");
                let resp = client
                    .try_send_event(
                        &room,
                        "m.room.message",
                        &json!({"msgtype": "m.text", "body": body}),
                    )
                    .await;
                match resp {
                    Ok((200, v)) => {
                        let id = v["event_id"].as_str().expect("event_id").to_owned();
                        acked.lock().expect("lock").push((id, body));
                    }
                    // The server died under us (connection refused/reset) or answered with an
                    // error while going down: stop writing.
                    _ => return,
                }
            }
        }));
    }

    // Wait (bounded) until enough sends were acknowledged, then SIGKILL mid-flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = acked.lock().expect("lock").len();
        if n >= TARGET_ACKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} sends acknowledged within 60 s"
        );
        assert!(
            !tasks.iter().all(|t| t.is_finished()),
            "all writers stopped early after {n} acknowledged sends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(90), t)
            .await
            .expect("writer did not stop after the kill")
            .expect("writer task panicked");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= TARGET_ACKS);
    eprintln!(
        "SIGKILL after {} acknowledged sends from {WRITERS} concurrent writers",
        acked.len()
    );

    server.start_again().await;

    // Every acknowledged event is retrievable by id with its content ...
    for (id, body) in &acked {
        let ev = alice.event(&room, id).await;
        let ev = ev.ok();
        assert_eq!(ev["content"]["body"], body.as_str(), "{id}");
    }
    // ... and present in the room's history.
    let history = alice.all_messages_backwards(&room).await;
    let ids: std::collections::HashSet<&str> = history
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events missing from /messages after SIGKILL: {missing:?}",
        missing.len(),
        acked.len()
    );
    // Per writer, history preserves send order.
    for w in 0..WRITERS {
        let prefix = format!("w{w}-");
        let mut seq: Vec<u64> = bodies(&history)
            .iter()
            .filter_map(|b| b.strip_prefix(&prefix).and_then(|n| n.parse().ok()))
            .collect();
        seq.reverse();
        assert!(
            seq.windows(2).all(|p| p[0] < p[1]),
            "writer {w}'s messages out of order after recovery: {seq:?}"
        );
    }
    // The room is writable again.
    alice.send_text(&room, "alive").await;
}

/// A second process started on a running server's configuration (same port), or on its data
/// directory with another port, stops before touching the database; the first keeps serving.
async fn second_server_on_the_same_data_refuses_to_start(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let run = |config: &std::path::Path| {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run a second ganglion");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = tokio::task::block_in_place(|| run(&server.config_path()));
    assert!(!ok && err.contains("cannot listen"), "{err}");
    // Same data directory, another port.
    let text = std::fs::read_to_string(server.config_path()).expect("read config");
    let port = complement_tests::free_port_on(server.ip());
    let other = text.replace(
        &format!("{}:{}", server.ip(), server.port()),
        &format!("{}:{port}", server.ip()),
    );
    assert_ne!(other, text, "the listen line was not found");
    let other_path = server.dir().join("second.toml");
    std::fs::write(&other_path, other).expect("write config");
    let (ok, err) = tokio::task::block_in_place(|| run(&other_path));
    assert!(!ok && err.contains("another ganglion process"), "{err}");
    alice.whoami().await.ok();
    alice.create_room(json!({})).await;
}
