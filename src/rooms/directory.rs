//! Room aliases, the public room directory and the user directory.
//!
//! Aliases live in `room_aliases` (local aliases only; remote ones would need a federation
//! query). A room is listed in the public directory when it is published (`rooms.published`)
//! and can be joined or read by anyone (join rule public/knock or world-readable history), the
//! way Synapse filters its list.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ruma::{
    RoomAliasId, RoomId, UserId,
    events::TimelineEventType,
    state_res::events::{RoomCreateEvent, RoomPowerLevelsEvent},
};
use serde_json::{Map, Value, json};

use super::{NewEvent, Pdu, current_state_event, room_rules};
use crate::{
    error::{Error, Result},
    services::Services,
    storage::directory::DirectoryUser,
};

// Aliases

fn alias_in_use() -> Error {
    Error::new(
        axum::http::StatusCode::CONFLICT,
        "M_UNKNOWN",
        "Room alias already exists",
    )
}

fn require_local_alias(s: &Services, alias: &RoomAliasId) -> Result<()> {
    if alias.server_name() != s.config.server_name {
        return Err(Error::invalid_param("Room alias must be on this server"));
    }
    Ok(())
}

async fn require_room(s: &Services, room_id: &RoomId) -> Result<()> {
    if s.db.room_version(room_id.as_str()).await?.is_none() {
        return Err(Error::not_found("Room not found"));
    }
    Ok(())
}

async fn is_joined(s: &Services, room_id: &RoomId, user: &UserId) -> Result<bool> {
    Ok(s.db
        .membership(room_id.as_str(), user.as_str())
        .await?
        .is_some_and(|m| m.membership == "join"))
}

async fn is_admin(s: &Services, user: &UserId) -> Result<bool> {
    Ok(s.db.account(user.as_str()).await?.is_some_and(|a| a.admin))
}

/// Whether `user` has the power to send a state event of `kind` (state key "") in the room,
/// following the room version's rules (privileged creators in v12, power level defaults).
pub async fn can_send_state(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    kind: &str,
) -> Result<bool> {
    let (_, rules) = room_rules(&s.db, room_id).await?;
    let auth = &rules.authorization;
    let Some(create) = current_state_event(&s.db, room_id.as_str(), "m.room.create", "").await?
    else {
        return Ok(false);
    };
    let creators = RoomCreateEvent::new(&create)
        .creators(auth)
        .map_err(Error::internal)?;
    if auth.explicitly_privilege_room_creators && creators.contains(user) {
        return Ok(true);
    }
    let Some(pl) = current_state_event(&s.db, room_id.as_str(), "m.room.power_levels", "").await?
    else {
        // Without power levels the creator has 100 and state needs 0.
        return Ok(true);
    };
    let pl = RoomPowerLevelsEvent::new(&pl);
    let mine = pl.user_power_level(user, auth).map_err(Error::internal)?;
    let needed = pl
        .event_power_level(&TimelineEventType::from(kind), Some(""), auth)
        .map_err(Error::internal)?;
    Ok(mine >= needed)
}

/// Who may publish the room or delete its aliases: server admins, and joined members with the
/// power to send `m.room.canonical_alias` (Synapse's rule).
async fn can_change_room_list(s: &Services, room_id: &RoomId, user: &UserId) -> Result<bool> {
    if is_admin(s, user).await? {
        return Ok(true);
    }
    Ok(is_joined(s, room_id, user).await?
        && can_send_state(s, room_id, user, "m.room.canonical_alias").await?)
}

/// Creates a local alias for a room the caller is joined to.
pub async fn create_alias(
    s: &Services,
    user: &UserId,
    alias: &RoomAliasId,
    room_id: &RoomId,
) -> Result<()> {
    require_local_alias(s, alias)?;
    require_room(s, room_id).await?;
    if s.db.resolve_alias(alias.as_str()).await?.is_some() {
        return Err(alias_in_use());
    }
    if !is_joined(s, room_id, user).await? && !is_admin(s, user).await? {
        return Err(Error::forbidden(
            "You must be joined to the room to create an alias for it",
        ));
    }
    if !s
        .db
        .create_alias(alias.as_str(), room_id.as_str(), user.as_str())
        .await?
    {
        return Err(alias_in_use());
    }
    Ok(())
}

/// Resolves a local alias to its room and servers likely to be in the room (ours first).
pub async fn resolve_alias(s: &Services, alias: &RoomAliasId) -> Result<(String, Vec<String>)> {
    if alias.server_name() != s.config.server_name {
        if s.federation.is_some() {
            let (room_id, servers) = crate::federation::remote::query_alias(s, alias).await?;
            let mut servers: Vec<String> = servers.iter().map(ToString::to_string).collect();
            if !servers.iter().any(|x| x == alias.server_name().as_str()) {
                servers.push(alias.server_name().to_string());
            }
            return Ok((room_id.to_string(), servers));
        }
        return Err(Error::not_found(
            "Room alias is on another server and federation is disabled",
        ));
    }
    let (room_id, _) =
        s.db.resolve_alias(alias.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found"))?;
    let mut servers = vec![s.server_name().to_owned()];
    for member in s.db.joined_member_ids(&room_id).await? {
        if let Some((_, server)) = member.split_once(':')
            && !servers.iter().any(|x| x == server)
        {
            servers.push(server.to_owned());
        }
    }
    Ok((room_id, servers))
}

/// Deletes a local alias: allowed for its creator, server admins, and members with the power
/// to change the canonical alias. The alias is also dropped from `m.room.canonical_alias`.
pub async fn delete_alias(s: &Services, user: &UserId, alias: &RoomAliasId) -> Result<()> {
    require_local_alias(s, alias)?;
    let (room_id, creator) =
        s.db.resolve_alias(alias.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found"))?;
    let room_id = ruma::OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
    let allowed = creator == user.as_str()
        || s.db.room_version(room_id.as_str()).await?.is_some()
            && can_change_room_list(s, &room_id, user).await?;
    if !allowed {
        return Err(Error::forbidden("You are not allowed to delete this alias"));
    }
    if !s.db.delete_alias(alias.as_str()).await? {
        return Err(Error::not_found("Room alias not found"));
    }
    if let Err(e) = drop_from_canonical_alias(s, &room_id, user, alias).await {
        tracing::info!(%room_id, %alias, "alias deleted but canonical alias not updated: {e}");
    }
    Ok(())
}

/// Removes a deleted alias from the room's `m.room.canonical_alias` event, if it is there.
async fn drop_from_canonical_alias(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    alias: &RoomAliasId,
) -> Result<()> {
    let Some(ev) =
        current_state_event(&s.db, room_id.as_str(), "m.room.canonical_alias", "").await?
    else {
        return Ok(());
    };
    let mut content = match ev.content_value() {
        Value::Object(m) => m,
        _ => return Ok(()),
    };
    let mut changed = false;
    if content.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
        content.remove("alias");
        changed = true;
    }
    if let Some(Value::Array(alts)) = content.get_mut("alt_aliases") {
        let before = alts.len();
        alts.retain(|a| a.as_str() != Some(alias.as_str()));
        changed |= alts.len() != before;
    }
    if !changed {
        return Ok(());
    }
    super::send_event(
        s,
        room_id,
        user,
        NewEvent::state("m.room.canonical_alias", "", Value::Object(content)),
        None,
    )
    .await?;
    Ok(())
}

/// The local aliases of a room, for joined members or anyone when the room is world-readable.
pub async fn room_aliases(s: &Services, user: &UserId, room_id: &RoomId) -> Result<Vec<String>> {
    let allowed = is_joined(s, room_id, user).await?
        || super::current_state_content(&s.db, room_id.as_str(), "m.room.history_visibility", "")
            .await?
            .and_then(|c| {
                c.get("history_visibility")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .is_some_and(|v| v == "world_readable");
    if !allowed {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    s.db.room_aliases(room_id.as_str()).await
}

// Public room directory

/// Whether the room is published in the public directory (404 for unknown rooms).
pub async fn is_published(s: &Services, room_id: &RoomId) -> Result<bool> {
    require_room(s, room_id).await?;
    s.db.is_published(room_id.as_str()).await
}

/// Publishes the room in the directory or withdraws it.
pub async fn set_published(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    public: bool,
) -> Result<()> {
    require_room(s, room_id).await?;
    if !can_change_room_list(s, room_id, user).await? {
        return Err(Error::forbidden(
            "You do not have the power to change the room's directory visibility",
        ));
    }
    s.db.set_published(room_id.as_str(), public).await
}

/// A directory query.
#[derive(Debug, Default)]
pub struct PublicRoomsQuery {
    pub limit: Option<usize>,
    pub since: Option<String>,
    pub search_term: Option<String>,
    /// Room types to include (`None` inside: rooms without a type); empty = all.
    pub room_types: Vec<Option<String>>,
}

/// One listed room.
#[derive(Debug, Clone)]
struct Entry {
    room_id: String,
    members: i64,
    name: Option<String>,
    topic: Option<String>,
    avatar_url: Option<String>,
    canonical_alias: Option<String>,
    alt_aliases: Vec<String>,
    world_readable: bool,
    guest_can_join: bool,
    join_rule: Option<String>,
    room_type: Option<String>,
}

impl Entry {
    fn listable(&self) -> bool {
        self.world_readable
            || matches!(
                self.join_rule.as_deref(),
                Some("public" | "knock" | "knock_restricted")
            )
    }

    fn matches(&self, q: &PublicRoomsQuery) -> bool {
        if !q.room_types.is_empty() && !q.room_types.contains(&self.room_type) {
            return false;
        }
        let Some(term) = q
            .search_term
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return true;
        };
        let term = term.to_lowercase();
        let hit = |v: &Option<String>| {
            v.as_deref()
                .is_some_and(|v| v.to_lowercase().contains(&term))
        };
        hit(&self.name)
            || hit(&self.topic)
            || hit(&self.canonical_alias)
            || self
                .alt_aliases
                .iter()
                .any(|a| a.to_lowercase().contains(&term))
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("room_id".into(), json!(self.room_id));
        m.insert("num_joined_members".into(), json!(self.members));
        m.insert("world_readable".into(), json!(self.world_readable));
        m.insert("guest_can_join".into(), json!(self.guest_can_join));
        let opt = |m: &mut Map<String, Value>, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        opt(&mut m, "name", &self.name);
        opt(&mut m, "topic", &self.topic);
        opt(&mut m, "avatar_url", &self.avatar_url);
        opt(&mut m, "canonical_alias", &self.canonical_alias);
        opt(&mut m, "join_rule", &self.join_rule);
        opt(&mut m, "room_type", &self.room_type);
        Value::Object(m)
    }

    /// Directory order: most members first, then room id.
    fn key(&self) -> (std::cmp::Reverse<i64>, &str) {
        (std::cmp::Reverse(self.members), self.room_id.as_str())
    }
}

const SUMMARY_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.join_rules",
];

async fn load_entry(s: &Services, room_id: String, members: i64) -> Result<Entry> {
    let ids =
        s.db.current_state_ids_of_types(&room_id, SUMMARY_TYPES)
            .await?;
    let kinds: HashMap<String, String> =
        ids.iter().map(|(k, id)| (id.clone(), k.clone())).collect();
    let event_ids: Vec<String> = ids.into_iter().map(|(_, id)| id).collect();
    let mut content: HashMap<String, Value> = HashMap::new();
    for pdu in s.db.get_pdus(&event_ids).await? {
        if let Some(kind) = kinds.get(pdu.event_id.as_str()) {
            content.insert(kind.clone(), Pdu::content_value(&pdu));
        }
    }
    let field = |kind: &str, key: &str| -> Option<String> {
        content
            .get(kind)
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let alt_aliases = crate::json::string_list(
        content
            .get("m.room.canonical_alias")
            .and_then(|c| c.get("alt_aliases")),
    );
    Ok(Entry {
        members,
        name: field("m.room.name", "name"),
        topic: field("m.room.topic", "topic"),
        avatar_url: field("m.room.avatar", "url"),
        canonical_alias: field("m.room.canonical_alias", "alias"),
        alt_aliases,
        world_readable: field("m.room.history_visibility", "history_visibility").as_deref()
            == Some("world_readable"),
        guest_can_join: field("m.room.guest_access", "guest_access").as_deref() == Some("can_join"),
        join_rule: field("m.room.join_rules", "join_rule"),
        room_type: field("m.room.create", "type"),
        room_id,
    })
}

/// A pagination token: the directory position of the first (backwards) or last (forwards)
/// entry of a page.
enum Token {
    After(i64, String),
    Before(i64, String),
}

impl Token {
    fn encode(&self) -> String {
        let raw = match self {
            Token::After(n, r) => format!("f{n}|{r}"),
            Token::Before(n, r) => format!("b{n}|{r}"),
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(token: &str) -> Result<Self> {
        let bad = || Error::invalid_param("Invalid pagination token");
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (head, room) = raw.split_once('|').ok_or_else(bad)?;
        let (dir, n) = head.split_at_checked(1).ok_or_else(bad)?;
        let n: i64 = n.parse().map_err(|_| bad())?;
        match dir {
            "f" => Ok(Token::After(n, room.to_owned())),
            "b" => Ok(Token::Before(n, room.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// The local public room directory, filtered and paginated, as the `/publicRooms` body.
pub async fn public_rooms(s: &Services, q: PublicRoomsQuery) -> Result<Value> {
    let token = q.since.as_deref().map(Token::decode).transpose()?;
    let mut entries = Vec::new();
    for (room_id, members) in s.db.published_rooms().await? {
        let entry = load_entry(s, room_id, members).await?;
        if entry.listable() && entry.matches(&q) {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.key().cmp(&b.key()));
    let total = entries.len();
    let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);

    // The slice [start, end) of the sorted entries that makes up this page.
    let (start, end) = match &token {
        None => (0, limit.min(total)),
        Some(Token::After(n, r)) => {
            let key = (std::cmp::Reverse(*n), r.as_str());
            let start = entries.partition_point(|e| e.key() <= key);
            (start, start.saturating_add(limit).min(total))
        }
        Some(Token::Before(n, r)) => {
            let key = (std::cmp::Reverse(*n), r.as_str());
            let end = entries.partition_point(|e| e.key() < key);
            (end.saturating_sub(limit), end)
        }
    };
    let page = &entries[start..end];
    let mut body = Map::new();
    body.insert(
        "chunk".into(),
        Value::Array(page.iter().map(Entry::to_json).collect()),
    );
    body.insert("total_room_count_estimate".into(), json!(total));
    if end < total
        && let Some(last) = page.last()
    {
        body.insert(
            "next_batch".into(),
            json!(Token::After(last.members, last.room_id.clone()).encode()),
        );
    }
    if start > 0
        && let Some(first) = page.first()
    {
        body.insert(
            "prev_batch".into(),
            json!(Token::Before(first.members, first.room_id.clone()).encode()),
        );
    }
    Ok(Value::Object(body))
}

// User directory

/// Searches the user directory for `searcher`; returns the hits (at most `limit`) and whether
/// more were left out.
pub async fn search_users(
    s: &Services,
    searcher: &UserId,
    term: &str,
    limit: usize,
) -> Result<(Vec<DirectoryUser>, bool)> {
    let limit = limit.clamp(1, 1000);
    let term = term.trim();
    if term.is_empty() {
        return Ok((Vec::new(), false));
    }
    let mut hits =
        s.db.search_user_directory(searcher.as_str(), term, limit as i64 + 1)
            .await?;
    let limited = hits.len() > limit;
    hits.truncate(limit);
    Ok((hits, limited))
}
