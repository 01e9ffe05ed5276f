//! Space hierarchies: a room's summary and the rooms its `m.space.child` state points to, as
//! `/_matrix/federation/v1/hierarchy/{roomId}` serves them to other servers.
//!
//! A room is accessible to a requesting server when anyone could see or join it (world-readable
//! history, a `public` or `knock` join rule), when its join rule is `restricted` or
//! `knock_restricted` (the summary carries `allowed_room_ids`, and the requester decides for
//! its users), or when the server has joined members in it. Child rooms not known here are left
//! out (the requester may ask the servers in `via`); known but inaccessible ones are listed in
//! `inaccessible_children`.

use std::collections::HashMap;

use ruma::{RoomId, ServerName};
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, Result},
    services::Services,
};

const SUMMARY_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.join_rules",
    "m.room.encryption",
];

/// A room's summary fields and whether a server may see it.
struct Summary {
    json: Map<String, Value>,
    /// Visible to anyone (world-readable, public or knock, or restricted with the allow list).
    open: bool,
}

fn str_field(content: &HashMap<String, Value>, kind: &str, key: &str) -> Option<String> {
    content
        .get(kind)
        .and_then(|c| c.get(key))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The summary of a room from its state contents (`type` → content) and member count.
fn build_summary(
    room_id: &str,
    room_version: Option<&str>,
    members: i64,
    content: &HashMap<String, Value>,
) -> Summary {
    let join_rule =
        str_field(content, "m.room.join_rules", "join_rule").unwrap_or_else(|| "invite".into());
    let world_readable = str_field(content, "m.room.history_visibility", "history_visibility")
        .as_deref()
        == Some("world_readable");
    let mut m = Map::new();
    m.insert("room_id".into(), json!(room_id));
    m.insert("num_joined_members".into(), json!(members));
    m.insert("world_readable".into(), json!(world_readable));
    m.insert(
        "guest_can_join".into(),
        json!(
            str_field(content, "m.room.guest_access", "guest_access").as_deref()
                == Some("can_join")
        ),
    );
    m.insert("join_rule".into(), json!(join_rule));
    for (key, kind, field) in [
        ("name", "m.room.name", "name"),
        ("topic", "m.room.topic", "topic"),
        ("avatar_url", "m.room.avatar", "url"),
        ("canonical_alias", "m.room.canonical_alias", "alias"),
        ("room_type", "m.room.create", "type"),
        ("encryption", "m.room.encryption", "algorithm"),
    ] {
        if let Some(v) = str_field(content, kind, field) {
            m.insert(key.into(), json!(v));
        }
    }
    if let Some(v) = room_version {
        m.insert("room_version".into(), json!(v));
    }
    let restricted = matches!(join_rule.as_str(), "restricted" | "knock_restricted");
    if restricted {
        let allowed: Vec<Value> = content
            .get("m.room.join_rules")
            .and_then(|c| c.get("allow"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|r| r["type"] == "m.room_membership")
                    .filter_map(|r| r["room_id"].as_str().map(|id| json!(id)))
                    .collect()
            })
            .unwrap_or_default();
        m.insert("allowed_room_ids".into(), Value::Array(allowed));
    }
    let open = world_readable || restricted || matches!(join_rule.as_str(), "public" | "knock");
    Summary { json: m, open }
}

/// The summary of a room known here, or `None`.
async fn summary(s: &Services, room_id: &str) -> Result<Option<Summary>> {
    let Some(version) = s.db.room_version(room_id).await? else {
        return Ok(None);
    };
    let ids =
        s.db.current_state_ids_of_types(room_id, SUMMARY_TYPES)
            .await?;
    let kinds: HashMap<String, String> =
        ids.iter().map(|(k, id)| (id.clone(), k.clone())).collect();
    let event_ids: Vec<String> = ids.into_iter().map(|(_, id)| id).collect();
    let mut content = HashMap::new();
    for pdu in s.db.get_pdus(&event_ids).await? {
        if let Some(kind) = kinds.get(pdu.event_id.as_str()) {
            content.insert(kind.clone(), pdu.content_value());
        }
    }
    let members = s.db.joined_member_count(room_id, "join").await?;
    Ok(Some(build_summary(
        room_id,
        Some(&version),
        members,
        &content,
    )))
}

async fn accessible(
    s: &Services,
    sum: &Summary,
    room_id: &str,
    origin: &ServerName,
) -> Result<bool> {
    if sum.open {
        return Ok(true);
    }
    Ok(s.db
        .joined_servers(room_id)
        .await?
        .iter()
        .any(|x| x == origin.as_str()))
}

/// Whether an `m.space.child` content names a child (a non-empty `via`), and is suggested.
fn child_link(content: &Value) -> Option<bool> {
    let via = content.get("via")?.as_array()?;
    if via.is_empty() || !via.iter().all(Value::is_string) {
        return None;
    }
    Some(content.get("suggested").and_then(Value::as_bool) == Some(true))
}

/// The room's `m.space.child` events (stripped, with `origin_server_ts`), optionally only the
/// suggested ones.
async fn children_state(s: &Services, room_id: &str, suggested_only: bool) -> Result<Vec<Value>> {
    let ids: Vec<String> =
        s.db.current_state_map(room_id)
            .await?
            .into_iter()
            .filter(|((kind, _), _)| kind == "m.space.child")
            .map(|(_, id)| id)
            .collect();
    let mut out = Vec::new();
    for pdu in s.db.get_pdus(&ids).await? {
        let content = pdu.content_value();
        let Some(suggested) = child_link(&content) else {
            continue;
        };
        if suggested_only && !suggested {
            continue;
        }
        let mut ev = pdu.to_stripped();
        ev["origin_server_ts"] = json!(pdu.origin_server_ts);
        out.push(ev);
    }
    out.sort_by(|a, b| a["state_key"].as_str().cmp(&b["state_key"].as_str()));
    Ok(out)
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}` for `origin`: `{room, children,
/// inaccessible_children}`. 404 when the room is unknown here or hidden from `origin`.
pub async fn for_server(
    s: &Services,
    room_id: &RoomId,
    origin: &ServerName,
    suggested_only: bool,
) -> Result<Value> {
    let rid = room_id.as_str();
    let not_found = || Error::not_found("Room not found or not accessible");
    let root = summary(s, rid).await?.ok_or_else(not_found)?;
    if !accessible(s, &root, rid, origin).await? {
        return Err(not_found());
    }
    let state = children_state(s, rid, suggested_only).await?;
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for ev in &state {
        let Some(child) = ev["state_key"].as_str() else {
            continue;
        };
        if child == rid || RoomId::parse(child).is_err() {
            continue;
        }
        let Some(sum) = summary(s, child).await? else {
            continue;
        };
        if !accessible(s, &sum, child, origin).await? {
            inaccessible.push(json!(child));
            continue;
        }
        let mut c = sum.json;
        if c.get("room_type").and_then(Value::as_str) == Some("m.space") {
            c.insert(
                "children_state".into(),
                Value::Array(children_state(s, child, suggested_only).await?),
            );
        }
        children.push(Value::Object(c));
    }
    let mut room = root.json;
    room.insert("children_state".into(), Value::Array(state));
    Ok(json!({
        "room": room,
        "children": children,
        "inaccessible_children": inaccessible,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn summary_fields_and_openness() {
        let c = content(&[
            ("m.room.create", json!({"type": "m.space"})),
            ("m.room.name", json!({"name": "Space"})),
            ("m.room.join_rules", json!({"join_rule": "public"})),
        ]);
        let s = build_summary("!a:h", Some("11"), 3, &c);
        assert!(s.open);
        assert_eq!(s.json["room_type"], "m.space");
        assert_eq!(s.json["name"], "Space");
        assert_eq!(s.json["num_joined_members"], 3);
        assert_eq!(s.json["join_rule"], "public");
        assert_eq!(s.json["room_version"], "11");
        assert!(s.json.get("allowed_room_ids").is_none());

        let private = build_summary("!b:h", None, 1, &content(&[]));
        assert!(!private.open);
        assert_eq!(private.json["join_rule"], "invite");

        let readable = content(&[(
            "m.room.history_visibility",
            json!({"history_visibility": "world_readable"}),
        )]);
        assert!(build_summary("!c:h", None, 1, &readable).open);

        let restricted = content(&[(
            "m.room.join_rules",
            json!({"join_rule": "restricted", "allow": [
                {"type": "m.room_membership", "room_id": "!space:h"},
                {"type": "other"}
            ]}),
        )]);
        let r = build_summary("!d:h", None, 1, &restricted);
        assert!(r.open);
        assert_eq!(r.json["allowed_room_ids"], json!(["!space:h"]));
    }

    #[test]
    fn child_links_need_via() {
        assert_eq!(child_link(&json!({"via": ["h"]})), Some(false));
        assert_eq!(
            child_link(&json!({"via": ["h"], "suggested": true})),
            Some(true)
        );
        assert_eq!(child_link(&json!({"via": []})), None);
        assert_eq!(child_link(&json!({})), None);
        assert_eq!(child_link(&json!({"via": [1]})), None);
    }
}
