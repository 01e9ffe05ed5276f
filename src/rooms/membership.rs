//! Membership changes of local users: join, invite, leave, kick, ban, unban.
//! The spec's auth rules (through ruma) decide what is allowed.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{NewEvent, Pdu, current_state_content, send_event};
use crate::{
    error::{Error, Result},
    services::Services,
};

fn member_content(membership: &str, reason: Option<&str>) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("membership".into(), json!(membership));
    if let Some(r) = reason {
        c.insert("reason".into(), json!(r));
    }
    c
}

/// Sends `sender`'s member event for `target` with this content.
async fn send_member(
    s: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    content: Map<String, Value>,
) -> Result<Pdu> {
    let ev = NewEvent::state("m.room.member", target.as_str(), Value::Object(content));
    send_event(s, room_id, sender, ev, None).await
}

async fn with_profile(
    s: &Services,
    user: &UserId,
    mut c: Map<String, Value>,
) -> Result<Map<String, Value>> {
    if let Some(acc) = s.db.account(user.as_str()).await? {
        if let Some(d) = acc.displayname {
            c.insert("displayname".into(), json!(d));
        }
        if let Some(a) = acc.avatar_url {
            c.insert("avatar_url".into(), json!(a));
        }
    }
    Ok(c)
}

/// Joins a local user to a room this server knows.
pub async fn join(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
) -> Result<Pdu> {
    join_via(s, room_id, user, reason, &[]).await
}

/// Joins a local user to a room; when no local user is in it, over federation through `via`
/// (and the servers the room id and an invite name).
pub async fn join_via(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
    via: &[ruma::OwnedServerName],
) -> Result<Pdu> {
    let pdu = join_event(s, room_id, user, reason, via).await?;
    super::upgrade::carry_over_settings(s, user, room_id).await;
    Ok(pdu)
}

async fn join_event(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
    via: &[ruma::OwnedServerName],
) -> Result<Pdu> {
    let room = room_id.to_owned();
    if crate::federation::membership::needs_remote_join(s, &room).await? {
        let servers =
            crate::federation::membership::candidate_servers(s, room_id, user, via).await?;
        let known_here = s.db.current_snapshot(room_id.as_str()).await?.is_some()
            || s.db.latest_snapshot_id(room_id.as_str()).await?.is_some();
        if !servers.is_empty() || !known_here {
            let content = with_profile(s, user, member_content("join", reason)).await?;
            return crate::federation::membership::remote_join(s, room_id, user, &servers, content)
                .await;
        }
    }
    if s.db.room_version(room_id.as_str()).await?.is_none() {
        return Err(Error::not_found("This server does not know the room"));
    }
    if let Some(m) = s.db.membership(room_id.as_str(), user.as_str()).await?
        && m.membership == "join"
        && let Some(p) = s.db.get_pdu(&m.event_id).await?
    {
        return Ok(p);
    }
    let mut content = with_profile(s, user, member_content("join", reason)).await?;
    // Restricted rooms: authorise through ourselves when the user is in an allowed room.
    if let Some(jr) =
        current_state_content(&s.db, room_id.as_str(), "m.room.join_rules", "").await?
        && matches!(
            jr.get("join_rule").and_then(Value::as_str),
            Some("restricted" | "knock_restricted")
        )
    {
        let invited =
            s.db.membership(room_id.as_str(), user.as_str())
                .await?
                .is_some_and(|m| m.membership == "invite");
        if !invited && let Some(authoriser) = restricted_authoriser(s, room_id, user, &jr).await? {
            content.insert("join_authorised_via_users_server".into(), json!(authoriser));
        }
    }
    send_member(s, room_id, user, user, content).await
}

/// Knocks on a room: asks to be let in (join rule `knock` or `knock_restricted`). A room this
/// server is not in is knocked on over federation through `via` (and the servers the room id
/// names).
pub async fn knock(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
    via: &[ruma::OwnedServerName],
) -> Result<Pdu> {
    if let Some(m) = s.db.membership(room_id.as_str(), user.as_str()).await? {
        match m.membership.as_str() {
            "join" => return Err(Error::forbidden("You are already in the room")),
            "invite" => {
                return Err(Error::forbidden(
                    "You are invited to the room already: join it",
                ));
            }
            "ban" => return Err(Error::forbidden("You are banned from the room")),
            "knock" => {
                if let Some(p) = s.db.get_pdu(&m.event_id).await? {
                    return Ok(p);
                }
            }
            _ => {}
        }
    }
    let content = with_profile(s, user, member_content("knock", reason)).await?;
    let room = room_id.to_owned();
    if crate::federation::membership::needs_remote_join(s, &room).await? {
        let servers =
            crate::federation::membership::candidate_servers(s, room_id, user, via).await?;
        if servers.is_empty() {
            return Err(Error::not_found(
                "No server could be asked to knock on this room",
            ));
        }
        return crate::federation::membership::remote_knock(s, room_id, user, &servers, content)
            .await;
    }
    if s.db.room_version(room_id.as_str()).await?.is_none() {
        return Err(Error::not_found("This server does not know the room"));
    }
    send_member(s, room_id, user, user, content).await
}

/// For a join under a `restricted` or `knock_restricted` rule: a local member with the power
/// to invite, who may vouch for `user` because the user is joined to one of the rooms the rule
/// allows (as far as this server knows). `None` when the user is in none of them here.
pub async fn restricted_authoriser(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    jr: &Value,
) -> Result<Option<String>> {
    let allow = jr
        .get("allow")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut allowed = false;
    for a in allow {
        if a.get("type").and_then(Value::as_str) == Some("m.room_membership")
            && let Some(r) = a.get("room_id").and_then(Value::as_str)
            && s.db
                .membership(r, user.as_str())
                .await?
                .is_some_and(|m| m.membership == "join")
        {
            allowed = true;
        }
    }
    if !allowed {
        return Ok(None);
    }
    // Any local joined member with invite power will do.
    let pl = current_state_content(&s.db, room_id.as_str(), "m.room.power_levels", "")
        .await?
        .unwrap_or(json!({}));
    let invite_level = pl.get("invite").and_then(Value::as_i64).unwrap_or(0);
    for m in s.db.room_members(room_id.as_str()).await? {
        if m.membership != "join" || !m.user_id.ends_with(&format!(":{}", s.config.server_name)) {
            continue;
        }
        let level = pl
            .get("users")
            .and_then(|u| u.get(&m.user_id))
            .and_then(Value::as_i64)
            .unwrap_or_else(|| pl.get("users_default").and_then(Value::as_i64).unwrap_or(0));
        if level >= invite_level {
            return Ok(Some(m.user_id));
        }
    }
    Ok(None)
}

pub async fn invite(
    s: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    reason: Option<&str>,
    is_direct: bool,
) -> Result<Pdu> {
    if target.server_name() == s.config.server_name && !s.db.user_exists(target.as_str()).await? {
        return Err(Error::not_found("Unknown user"));
    }
    if let Some(m) = s.db.membership(room_id.as_str(), target.as_str()).await? {
        match m.membership.as_str() {
            "join" => return Err(Error::forbidden(format!("{target} is already in the room"))),
            "ban" => {
                return Err(Error::forbidden(format!(
                    "{target} is banned from the room"
                )));
            }
            _ => {}
        }
    }
    let mut content = with_profile(s, target, member_content("invite", reason)).await?;
    if is_direct {
        content.insert("is_direct".into(), json!(true));
    }
    send_member(s, room_id, sender, target, content).await
}

/// leave (sender == target), kick (leave of another), ban, unban (leave of a banned user).
pub async fn set_membership(
    s: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
) -> Result<Pdu> {
    if s.db.room_version(room_id.as_str()).await?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    let current = s.db.membership(room_id.as_str(), target.as_str()).await?;
    if membership == "leave" && sender == target && current.is_none() {
        return Err(Error::forbidden("You are not in the room"));
    }
    // Rejecting an invite to (or retracting a knock on) a room that lives elsewhere.
    if membership == "leave"
        && sender == target
        && current
            .as_ref()
            .is_some_and(|m| m.membership == "invite" || m.membership == "knock")
        && crate::federation::membership::needs_remote_join(s, &room_id.to_owned()).await?
    {
        let servers =
            crate::federation::membership::candidate_servers(s, room_id, target, &[]).await?;
        crate::federation::membership::remote_leave(s, room_id, target, &servers).await?;
        let event_id =
            s.db.membership(room_id.as_str(), target.as_str())
                .await?
                .map(|m| m.event_id)
                .unwrap_or_default();
        return s
            .db
            .get_pdu(&event_id)
            .await?
            .ok_or_else(|| Error::internal("leave event not stored"));
    }
    let content = member_content(membership, reason);
    send_member(s, room_id, sender, target, content).await
}

/// What `GET /members` asks for.
pub struct MembersQuery {
    /// A stream position (from a pagination or sync token): the members just before it.
    pub at: Option<i64>,
    pub membership: Option<String>,
    pub not_membership: Option<String>,
}

/// The member events of a room that `user_id` (allowed to read it) gets: at `at` if given,
/// and for a former member as they were when they left; filtered by membership.
pub async fn members(
    s: &Services,
    room_id: &str,
    user_id: &str,
    q: &MembersQuery,
) -> Result<Vec<Pdu>> {
    let wanted = |membership: &str| {
        q.membership.as_deref().is_none_or(|f| membership == f)
            && q.not_membership.as_deref().is_none_or(|f| membership != f)
    };
    let mut at = q.at.map(|pos| pos - 1);
    if let Some(own) = s.db.membership(room_id, user_id).await?
        && own.membership != "join"
    {
        at = Some(at.map_or(own.stream_ordering, |p| p.min(own.stream_ordering)));
    }
    let current = s.db.room_members(room_id).await?;
    match at {
        Some(pos) if current.iter().any(|m| m.stream_ordering > pos) => {
            let Some(snapshot) = s.db.snapshot_at_stream(room_id, pos).await? else {
                return Ok(Vec::new());
            };
            let snapshot = s.db.load_snapshot(snapshot).await?;
            let ids: Vec<String> = snapshot
                .map
                .iter()
                .filter(|((kind, _), _)| kind == "m.room.member")
                .map(|(_, id)| id.clone())
                .collect();
            let pdus = s.db.get_pdus(&ids).await?;
            Ok(pdus
                .into_iter()
                .filter(|p| {
                    p.content_value()
                        .get("membership")
                        .and_then(Value::as_str)
                        .is_some_and(wanted)
                })
                .collect())
        }
        _ => {
            let ids: Vec<String> = current
                .iter()
                .filter(|m| wanted(&m.membership))
                .map(|m| m.event_id.clone())
                .collect();
            s.db.get_pdus(&ids).await
        }
    }
}
