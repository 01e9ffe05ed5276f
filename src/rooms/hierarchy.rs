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

// ---------------------------------------------------------------------------------------------
// Client side: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
// ---------------------------------------------------------------------------------------------

/// Rooms a page holds unless the client asks for fewer; and the most it may ask for.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// Rooms looked at in one walk, whatever the depth (bounds the work of a request).
const MAX_VISITED: usize = 1000;
/// Servers from a child's `via` asked, and how long each may take.
const MAX_VIA: usize = 3;
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest federation hierarchy answer read.
const MAX_REMOTE_BYTES: usize = 4 * 1024 * 1024;

/// The summary fields a client gets (`allowed_room_ids` is for servers only).
const CLIENT_FIELDS: &[&str] = &[
    "room_id",
    "num_joined_members",
    "world_readable",
    "guest_can_join",
    "join_rule",
    "name",
    "topic",
    "avatar_url",
    "canonical_alias",
    "room_type",
    "encryption",
    "room_version",
];

/// The query of a client's hierarchy request.
#[derive(Debug, Clone, Default)]
pub struct ClientQuery {
    pub from: Option<String>,
    pub limit: Option<u64>,
    pub max_depth: Option<u64>,
    pub suggested_only: bool,
}

/// A room of the walk: its summary (as a server would see it) and its `m.space.child` events.
struct Node {
    summary: Map<String, Value>,
    children_state: Vec<Value>,
}

/// What the walk learnt from other servers: summaries of rooms named as children in their
/// answers, and rooms they said we may not see.
#[derive(Default)]
struct RemoteCache {
    summaries: HashMap<String, Map<String, Value>>,
    inaccessible: std::collections::HashSet<String>,
}

fn is_space(summary: &Map<String, Value>) -> bool {
    summary.get("room_type").and_then(Value::as_str) == Some("m.space")
}

/// The pagination token: the offset into the walk, tied to the walk's parameters.
fn token_check(room_id: &str, suggested_only: bool, max_depth: Option<u64>) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{room_id}|{suggested_only}|{max_depth:?}"));
    hex::encode(&digest[..6])
}

fn parse_token(token: &str, check: &str) -> Option<usize> {
    let (offset, c) = token.split_once('_')?;
    (c == check).then_some(())?;
    offset.parse().ok()
}

/// Whether `user_id` may see a room with this (server-side) summary: a member or invitee,
/// world-readable history, a `public`, `knock` or `knock_restricted` join rule, or a
/// `restricted` one with the user joined to one of the allowed rooms.
async fn user_may_see(
    s: &Services,
    summary: &Map<String, Value>,
    room_id: &str,
    user_id: &str,
) -> Result<bool> {
    if let Some(m) = s.db.membership(room_id, user_id).await?
        && matches!(m.membership.as_str(), "join" | "invite")
    {
        return Ok(true);
    }
    if summary.get("world_readable").and_then(Value::as_bool) == Some(true) {
        return Ok(true);
    }
    let rule = summary
        .get("join_rule")
        .and_then(Value::as_str)
        .unwrap_or("invite");
    match rule {
        "public" | "knock" | "knock_restricted" => Ok(true),
        "restricted" => {
            let allowed = summary
                .get("allowed_room_ids")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for id in allowed.iter().filter_map(Value::as_str) {
                if s.db
                    .membership(id, user_id)
                    .await?
                    .is_some_and(|m| m.membership == "join")
                {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// A stripped `m.space.child` event from another server, if well-formed.
fn valid_child_event(ev: &Value) -> bool {
    ev.get("type").and_then(Value::as_str) == Some("m.space.child")
        && ev
            .get("state_key")
            .and_then(Value::as_str)
            .is_some_and(|k| RoomId::parse(k).is_ok())
        && ev.get("sender").and_then(Value::as_str).is_some()
        && ev.get("content").is_some_and(|c| child_link(c).is_some())
}

/// Asks the servers in `via` for a room's hierarchy; keeps what it says of the children.
async fn fetch_remote(
    s: &Services,
    room_id: &str,
    via: &[String],
    suggested_only: bool,
    cache: &mut RemoteCache,
) -> Option<Node> {
    use ruma::api::federation::space::get_hierarchy;
    let fed = s.federation().ok()?;
    let rid = ruma::OwnedRoomId::try_from(room_id).ok()?;
    for server in via
        .iter()
        .filter(|v| v.as_str() != s.server_name())
        .take(MAX_VIA)
    {
        let Ok(server) = ruma::OwnedServerName::try_from(server.as_str()) else {
            continue;
        };
        let mut request = get_hierarchy::v1::Request::new(rid.clone());
        request.suggested_only = suggested_only;
        let answer = tokio::time::timeout(
            REMOTE_TIMEOUT,
            fed.client.send_raw(&server, request, MAX_REMOTE_BYTES),
        )
        .await;
        let body = match answer {
            Ok(Ok((_, _, body))) => body,
            Ok(Err(e)) => {
                tracing::info!("hierarchy of {room_id} from {server}: {e}");
                continue;
            }
            Err(_) => {
                tracing::info!("hierarchy of {room_id} from {server}: timed out");
                continue;
            }
        };
        let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        let Some(Value::Object(mut room)) = answer.remove("room") else {
            continue;
        };
        if room.get("room_id").and_then(Value::as_str) != Some(room_id) {
            continue;
        }
        let children_state: Vec<Value> = match room.remove("children_state") {
            Some(Value::Array(a)) => a.into_iter().filter(valid_child_event).collect(),
            _ => Vec::new(),
        };
        if let Some(Value::Array(children)) = answer.remove("children") {
            for child in children {
                if let Value::Object(c) = child
                    && let Some(id) = c.get("room_id").and_then(Value::as_str)
                    && RoomId::parse(id).is_ok()
                {
                    cache.summaries.entry(id.to_owned()).or_insert(c);
                }
            }
        }
        if let Some(Value::Array(ids)) = answer.remove("inaccessible_children") {
            cache
                .inaccessible
                .extend(ids.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        return Some(Node {
            summary: room,
            children_state,
        });
    }
    None
}

/// A room of the walk that `user_id` may see: known here, or learnt from other servers.
async fn load_node(
    s: &Services,
    room_id: &str,
    via: &[String],
    user_id: &str,
    suggested_only: bool,
    cache: &mut RemoteCache,
) -> Result<Option<Node>> {
    if let Some(sum) = summary(s, room_id).await? {
        if !user_may_see(s, &sum.json, room_id, user_id).await? {
            return Ok(None);
        }
        let children_state = if is_space(&sum.json) {
            children_state(s, room_id, suggested_only).await?
        } else {
            Vec::new()
        };
        return Ok(Some(Node {
            summary: sum.json,
            children_state,
        }));
    }
    if cache.inaccessible.contains(room_id) {
        return Ok(None);
    }
    let node = match cache.summaries.get(room_id) {
        // A child summary from its parent's answer is enough, unless it is a space whose
        // children we need.
        Some(c) if !is_space(c) => Some(Node {
            summary: c.clone(),
            children_state: Vec::new(),
        }),
        _ => fetch_remote(s, room_id, via, suggested_only, cache).await,
    };
    let Some(node) = node else {
        return Ok(None);
    };
    if !user_may_see(s, &node.summary, room_id, user_id).await? {
        return Ok(None);
    }
    Ok(Some(node))
}

/// The order of a space's children (spec "Ordering of children within a space"): by `order`
/// (valid ones first, lexicographically), then by the event's `origin_server_ts`, then room id.
fn ordered_children(state: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut kids: Vec<(Option<String>, i64, String, Vec<String>)> = state
        .iter()
        .filter_map(|ev| {
            let id = ev.get("state_key")?.as_str()?.to_owned();
            let content = ev.get("content")?;
            child_link(content)?;
            let order = content
                .get("order")
                .and_then(Value::as_str)
                .filter(|o| o.len() <= 50 && o.bytes().all(|b| (0x20..=0x7e).contains(&b)))
                .map(str::to_owned);
            let ts = ev
                .get("origin_server_ts")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX);
            let via = crate::json::string_list(content.get("via"));
            Some((order, ts, id, via))
        })
        .collect();
    kids.sort_by(|a, b| match (&a.0, &b.0) {
        (Some(x), Some(y)) => x.cmp(y).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1).then(a.2.cmp(&b.2)),
    });
    kids.into_iter().map(|(_, _, id, via)| (id, via)).collect()
}

fn client_chunk(node: Node) -> Value {
    let mut out = Map::new();
    for key in CLIENT_FIELDS {
        if let Some(v) = node.summary.get(*key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    out.insert("children_state".into(), Value::Array(node.children_state));
    Value::Object(out)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` for `user_id`: the rooms of the space
/// the user may see, breadth first from the root, `{rooms, next_batch?}`. 403 when the user
/// may not see the root.
pub async fn for_user(
    s: &Services,
    room_id: &RoomId,
    user_id: &ruma::UserId,
    q: &ClientQuery,
) -> Result<Value> {
    let rid = room_id.as_str();
    let check = token_check(rid, q.suggested_only, q.max_depth);
    let offset = match q.from.as_deref() {
        None => 0,
        Some(t) => parse_token(t, &check).ok_or_else(|| {
            Error::invalid_param("Unknown pagination token, or one of another query")
        })?,
    };
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(0) => return Err(Error::invalid_param("limit must be positive")),
        Some(l) => usize::try_from(l).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
    };
    let max_depth = q.max_depth.unwrap_or(u64::MAX);
    let user = user_id.as_str();
    let mut cache = RemoteCache::default();
    let Some(root) = load_node(s, rid, &[], user, q.suggested_only, &mut cache).await? else {
        return Err(Error::forbidden(
            "You may not see this room, or it is unknown here",
        ));
    };
    let want = offset.saturating_add(limit);
    let mut rooms = Vec::new();
    let mut seen = std::collections::HashSet::from([rid.to_owned()]);
    let mut queue = std::collections::VecDeque::new();
    let push_children = |node: &Node, depth: u64, queue: &mut std::collections::VecDeque<_>| {
        if depth < max_depth {
            for (child, via) in ordered_children(&node.children_state) {
                queue.push_back((child, via, depth + 1));
            }
        }
    };
    push_children(&root, 0, &mut queue);
    rooms.push(root);
    while rooms.len() <= want {
        let Some((child, via, depth)) = queue.pop_front() else {
            break;
        };
        if seen.len() >= MAX_VISITED {
            break;
        }
        if !seen.insert(child.clone()) {
            continue;
        }
        let Some(node) = load_node(s, &child, &via, user, q.suggested_only, &mut cache).await?
        else {
            continue;
        };
        push_children(&node, depth, &mut queue);
        rooms.push(node);
    }
    let more = rooms.len() > want;
    let page: Vec<Value> = rooms
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(client_chunk)
        .collect();
    let mut out = json!({ "rooms": page });
    if more {
        out["next_batch"] = json!(format!("{want}_{check}"));
    }
    Ok(out)
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`: what a client shows of a room before
/// joining it. Known rooms are summarised here; others are asked of the servers in `via`
/// (their `/hierarchy`). Anonymous callers see only rooms open to anyone; the answer carries
/// the caller's membership. 404 when the room is unknown or not visible to the caller.
pub async fn room_summary(
    s: &Services,
    room_id: &RoomId,
    via: &[String],
    user_id: Option<&str>,
) -> Result<Value> {
    let rid = room_id.as_str();
    let mut cache = RemoteCache::default();
    // An anonymous caller has no memberships: `user_may_see` then passes open rooms only.
    let who = user_id.unwrap_or("");
    let Some(node) = load_node(s, rid, via, who, false, &mut cache).await? else {
        return Err(Error::not_found(
            "The room is unknown, or you may not see it",
        ));
    };
    let mut out = Map::new();
    for key in CLIENT_FIELDS.iter().chain(&["allowed_room_ids"]) {
        if let Some(v) = node.summary.get(*key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    if let Some(user) = user_id {
        let membership =
            s.db.membership(rid, user)
                .await?
                .map(|m| m.membership)
                .unwrap_or_else(|| "leave".into());
        out.insert("membership".into(), json!(membership));
    }
    Ok(Value::Object(out))
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
