//! Room upgrades (`POST /rooms/{roomId}/upgrade`), following the spec's server behaviour: a
//! replacement room whose create event names its predecessor, the transferable state copied
//! over, local aliases and the directory entry moved, a tombstone in the old room and the old
//! room's power levels raised so that ordinary members can no longer talk or invite there.
//! Members who follow to the new room take their tags, room push rule and `m.direct` entry.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId, state_res::events::RoomCreateEvent};
use serde_json::{Map, Value, json};

use super::{
    NewEvent,
    create::{CreateRoom, Preset},
    current_state_content, current_state_event,
    directory::can_send_state,
    parse_version, room_rules, send_event,
};
use crate::{
    error::{Error, Result},
    services::Services,
};

/// The state copied into the replacement room, besides the power levels (the spec's list).
const TRANSFERRED: [&str; 8] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
];

pub struct Upgrade {
    pub room_id: OwnedRoomId,
    pub new_version: String,
    pub additional_creators: Vec<OwnedUserId>,
}

pub async fn upgrade_room(s: &Services, user: &UserId, req: Upgrade) -> Result<OwnedRoomId> {
    let old = req.room_id.as_str();
    if !crate::config::SUPPORTED_ROOM_VERSIONS.contains(&req.new_version.as_str()) {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Room version {} is not supported", req.new_version),
        ));
    }
    if s.db.room_version(old).await?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    crate::api::client::rooms::require_joined(s, old, user.as_str()).await?;
    if !can_send_state(s, &req.room_id, user, "m.room.tombstone").await? {
        return Err(Error::forbidden(
            "You do not have the power to upgrade this room",
        ));
    }
    if current_state_content(&s.db, old, "m.room.tombstone", "")
        .await?
        .is_some_and(|t| t.get("replacement_room").is_some())
    {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_BAD_STATE",
            "This room has already been upgraded",
        ));
    }
    let (_, new_rules) = parse_version(&req.new_version)?;
    let (_, old_rules) = room_rules(&s.db, &req.room_id).await?;
    let new_privileges_creators = new_rules.authorization.explicitly_privilege_room_creators;
    if !new_privileges_creators && !req.additional_creators.is_empty() {
        return Err(Error::invalid_param(
            "additional_creators needs a room version with privileged creators (12 or later)",
        ));
    }

    let old_create = current_state_event(&s.db, old, "m.room.create", "")
        .await?
        .ok_or_else(|| Error::internal("room without a create event"))?;
    let old_creators: Vec<OwnedUserId> = RoomCreateEvent::new(&old_create)
        .creators(&old_rules.authorization)
        .map_err(Error::internal)?
        .into_iter()
        .collect();

    // The create event: predecessor, the version, the old room's type, additional creators.
    let mut creation = Map::new();
    let mut predecessor = json!({"room_id": old});
    if let Some((last, _)) =
        s.db.forward_extremities(&req.room_id)
            .await?
            .into_iter()
            .max_by_key(|(_, depth)| *depth)
    {
        predecessor["event_id"] = json!(last);
    }
    creation.insert("predecessor".into(), predecessor);
    if let Some(kind) = old_create.content_value().get("type") {
        creation.insert("type".into(), kind.clone());
    }
    if !req.additional_creators.is_empty() {
        creation.insert("additional_creators".into(), json!(req.additional_creators));
    }

    // The state to copy.
    let mut state = Vec::new();
    for kind in TRANSFERRED {
        if let Some(content) = current_state_content(&s.db, old, kind, "").await? {
            state.push(NewEvent::state(kind, "", content));
        }
    }
    let public = state.iter().any(|e| {
        e.kind == "m.room.join_rules"
            && e.content.get("join_rule").and_then(Value::as_str) == Some("public")
    });

    // Power levels: the old room's, fitted to the new version's idea of creators. When the
    // upgrading user could not send all of the copied state under them, the room starts with
    // the user raised and the real levels are sent once the state is in.
    let old_pl = current_state_content(&s.db, old, "m.room.power_levels", "").await?;
    let mut final_pl = old_pl.clone().unwrap_or_else(|| json!({}));
    if !final_pl.is_object() {
        final_pl = json!({});
    }
    integer_levels(&mut final_pl);
    let mut new_creators: Vec<OwnedUserId> = vec![user.to_owned()];
    new_creators.extend(req.additional_creators.iter().cloned());
    if let Some(users) = final_pl.get_mut("users").and_then(Value::as_object_mut) {
        if new_privileges_creators {
            for c in &new_creators {
                users.remove(c.as_str());
            }
        }
    } else {
        final_pl["users"] = json!({});
    }
    if !new_privileges_creators && old_rules.authorization.explicitly_privilege_room_creators {
        // The old room's creators had unlimited power there; 100 is the most an older version
        // can give them.
        for c in &old_creators {
            final_pl["users"][c.as_str()] = json!(100);
        }
    }
    let mut pl_override = final_pl.as_object().cloned().unwrap_or_default();
    let temporary = if new_privileges_creators {
        false
    } else {
        let mine = level_of(&final_pl, user.as_str());
        let needed = state
            .iter()
            .map(|e| required_level(&final_pl, &e.kind))
            .chain([required_level(&final_pl, "m.room.power_levels")])
            .max()
            .unwrap_or(0);
        if mine < needed {
            let mut raised = final_pl.clone();
            raised["users"][user.as_str()] = json!(needed);
            pl_override = raised.as_object().cloned().unwrap_or_default();
            true
        } else {
            false
        }
    };

    let new_room = super::create::create_room(
        s,
        user,
        CreateRoom {
            version: Some(req.new_version.clone()),
            preset: Some(if public {
                Preset::PublicChat
            } else {
                Preset::PrivateChat
            }),
            public: false,
            name: None,
            topic: None,
            alias_localpart: None,
            invite: Vec::new(),
            is_direct: false,
            creation_content: Some(creation),
            initial_state: state,
            power_level_override: Some(pl_override),
        },
    )
    .await?;

    // Bans carry over, where the user may ban.
    for m in s.db.room_members(old).await? {
        if m.membership != "ban" {
            continue;
        }
        let Ok(target) = UserId::parse(m.user_id.as_str()) else {
            continue;
        };
        let mut content = json!({"membership": "ban"});
        if let Some(reason) =
            s.db.get_pdu(&m.event_id)
                .await?
                .and_then(|p| p.content_value().get("reason").cloned())
        {
            content["reason"] = reason;
        }
        let ev = NewEvent::state("m.room.member", target.as_str(), content);
        if let Err(e) = send_event(s, &new_room, user, ev, None).await {
            tracing::info!(user = %target, error = %e, "room upgrade: ban not carried over");
        }
    }
    if temporary {
        send_event(
            s,
            &new_room,
            user,
            NewEvent::state("m.room.power_levels", "", final_pl),
            None,
        )
        .await?;
    }

    move_aliases(s, user, &req.room_id, &new_room).await?;

    send_event(
        s,
        &req.room_id,
        user,
        NewEvent::state(
            "m.room.tombstone",
            "",
            json!({"body": "This room has been replaced", "replacement_room": new_room}),
        ),
        None,
    )
    .await?;

    restrict_old_room(s, user, &req.room_id, old_pl).await;
    carry_over_settings(s, user, &new_room).await;
    Ok(new_room)
}

/// Local aliases point at the new room, the canonical alias moves with them, and a room that
/// was in the public directory is listed in its place.
async fn move_aliases(s: &Services, user: &UserId, old: &RoomId, new: &RoomId) -> Result<()> {
    let local_suffix = format!(":{}", s.config.server_name);
    for alias in s.db.room_aliases(old.as_str()).await? {
        if !alias.ends_with(&local_suffix) {
            continue;
        }
        s.db.delete_alias(&alias).await?;
        s.db.create_alias(&alias, new.as_str(), user.as_str())
            .await?;
    }
    if let Some(canonical) =
        current_state_content(&s.db, old.as_str(), "m.room.canonical_alias", "").await?
        && canonical.as_object().is_some_and(|o| !o.is_empty())
    {
        let moved = canonical_alias_for(&canonical, new, s).await?;
        if moved.as_object().is_some_and(|o| !o.is_empty()) {
            send_event(
                s,
                new,
                user,
                NewEvent::state("m.room.canonical_alias", "", moved),
                None,
            )
            .await?;
        }
        let cleared = NewEvent::state("m.room.canonical_alias", "", json!({}));
        if let Err(e) = send_event(s, old, user, cleared, None).await {
            tracing::info!(room = %old, error = %e, "room upgrade: old canonical alias kept");
        }
    }
    if s.db.is_published(old.as_str()).await? {
        s.db.set_published(old.as_str(), false).await?;
        s.db.set_published(new.as_str(), true).await?;
    }
    Ok(())
}

/// The old canonical alias content, keeping only aliases that now resolve to the new room.
async fn canonical_alias_for(canonical: &Value, new: &RoomId, s: &Services) -> Result<Value> {
    let points_here = async |a: &str| -> Result<bool> {
        Ok(s.db
            .resolve_alias(a)
            .await?
            .is_some_and(|(room, _)| room == new.as_str()))
    };
    let mut out = Map::new();
    if let Some(a) = canonical.get("alias").and_then(Value::as_str)
        && points_here(a).await?
    {
        out.insert("alias".into(), json!(a));
    }
    let mut alt = Vec::new();
    for a in crate::json::string_list(canonical.get("alt_aliases")) {
        if points_here(&a).await? {
            alt.push(a);
        }
    }
    if !alt.is_empty() {
        out.insert("alt_aliases".into(), json!(alt));
    }
    Ok(Value::Object(out))
}

/// Raises `events_default` and `invite` in the old room to the greater of 50 and
/// `users_default + 1`, when the user may change the power levels there.
async fn restrict_old_room(s: &Services, user: &UserId, old: &RoomId, pl: Option<Value>) {
    let mut pl = match pl {
        Some(v) if v.is_object() => v,
        _ => json!({}),
    };
    let users_default = pl.get("users_default").and_then(as_level).unwrap_or(0);
    let restricted = 50.max(users_default + 1);
    let mut changed = false;
    for key in ["events_default", "invite"] {
        let current = pl.get(key).and_then(as_level).unwrap_or(0);
        if current < restricted {
            pl[key] = json!(restricted);
            changed = true;
        }
    }
    if !changed {
        return;
    }
    let ev = NewEvent::state("m.room.power_levels", "", pl);
    if let Err(e) = send_event(s, old, user, ev, None).await {
        tracing::info!(room = %old, error = %e, "room upgrade: old room's power levels kept");
    }
}

fn level_of(pl: &Value, user: &str) -> i64 {
    pl.get("users")
        .and_then(|u| u.get(user))
        .and_then(as_level)
        .unwrap_or_else(|| pl.get("users_default").and_then(as_level).unwrap_or(0))
}

/// The level a state event of `kind` needs under power-level content `pl`.
fn required_level(pl: &Value, kind: &str) -> i64 {
    pl.get("events")
        .and_then(|e| e.get(kind))
        .and_then(as_level)
        .unwrap_or_else(|| pl.get("state_default").and_then(as_level).unwrap_or(50))
}

/// A power level as old room versions may write it: a number, or a string holding one.
fn as_level(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Power-level content with every level as an integer (room versions from 10 refuse strings).
fn integer_levels(pl: &mut Value) {
    let Some(obj) = pl.as_object_mut() else {
        return;
    };
    for (key, v) in obj.iter_mut() {
        match key.as_str() {
            "events" | "users" | "notifications" => {
                if let Some(map) = v.as_object_mut() {
                    map.retain(|_, level| as_level(level).is_some());
                    for level in map.values_mut() {
                        if let Some(n) = as_level(level) {
                            *level = json!(n);
                        }
                    }
                }
            }
            _ => {
                if let Some(n) = as_level(v) {
                    *v = json!(n);
                }
            }
        }
    }
}

/// When a local user joins a room that replaced one they were in, their settings for the old
/// room come along (the spec's "personalized settings"): its tags, a room-specific push rule,
/// and its place in `m.direct`. Settings already made for the new room are kept. Failures are
/// logged, never the join's.
pub async fn carry_over_settings(s: &Services, user: &UserId, room: &RoomId) {
    if let Err(e) = carry_over(s, user, room).await {
        tracing::info!(%user, %room, error = %e, "settings of the old room not carried over");
    }
}

async fn carry_over(s: &Services, user: &UserId, room: &RoomId) -> Result<()> {
    let Some(create) = current_state_content(&s.db, room.as_str(), "m.room.create", "").await?
    else {
        return Ok(());
    };
    let Some(old) = create
        .get("predecessor")
        .and_then(|p| p.get("room_id"))
        .and_then(Value::as_str)
        .and_then(|r| RoomId::parse(r).ok())
    else {
        return Ok(());
    };
    if s.db
        .membership(old.as_str(), user.as_str())
        .await?
        .is_none()
    {
        return Ok(());
    }
    // Tags.
    if let Some(tags) =
        s.db.account_data(user.as_str(), Some(old.as_str()), "m.tag")
            .await?
        && s.db
            .account_data(user.as_str(), Some(room.as_str()), "m.tag")
            .await?
            .is_none()
    {
        s.db.set_account_data(user.as_str(), Some(room.as_str()), "m.tag", &tags)
            .await?;
    }
    // A room-specific push rule (e.g. "mute this room").
    let rules = crate::push::ruleset(&s.db, user).await?;
    let old_rule = rules
        .room
        .iter()
        .find(|r| r.rule_id == old)
        .map(|r| r.actions.clone());
    if let Some(actions) = old_rule
        && rules.room.iter().all(|r| r.rule_id != room)
    {
        let rule = ruma::push::NewPushRule::Room(ruma::push::NewSimplePushRule::new(
            room.to_owned(),
            actions,
        ));
        crate::push::put_rule(s, user, rule, None, None).await?;
    }
    // Direct chats.
    let old_id = old.as_str();
    let new_id = room.as_str();
    s.db.update_account_data(user.as_str(), None, "m.direct", |current| {
        let Some(Value::Object(mut direct)) = current else {
            return Ok((None, ()));
        };
        let mut changed = false;
        for rooms in direct.values_mut() {
            if let Value::Array(list) = rooms
                && list.iter().any(|r| r == old_id)
                && !list.iter().any(|r| r == new_id)
            {
                list.push(json!(new_id));
                changed = true;
            }
        }
        Ok((changed.then_some(Value::Object(direct)), ()))
    })
    .await?;
    Ok(())
}
