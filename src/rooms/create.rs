//! Creating a room: the create event, the creator's join, power levels, aliases, presets,
//! initial state, name, topic and invites, in the order the spec gives.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedUserId, RoomVersionId, UserId,
};
use serde_json::{Map, Value, json};

use super::{NewEvent, Pdu, parse_version, send_event, to_canonical};
use crate::{
    error::{Error, Result},
    services::Services,
    storage::{Db, now_ms},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    PublicChat,
    TrustedPrivateChat,
}

#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub version: Option<String>,
    pub preset: Option<Preset>,
    pub public: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub creation_content: Option<Map<String, Value>>,
    pub initial_state: Vec<NewEvent>,
    pub power_level_override: Option<Map<String, Value>>,
}

pub async fn create_room(s: &Services, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
    let version_str = req
        .version
        .clone()
        .unwrap_or_else(|| s.config.rooms.default_version.to_string());
    if !crate::config::SUPPORTED_ROOM_VERSIONS.contains(&version_str.as_str()) {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Room version {version_str} is not supported"),
        ));
    }
    let (version, rules) = parse_version(&version_str)?;
    let alias = match &req.alias_localpart {
        Some(local) => {
            let alias = format!("#{local}:{}", s.config.server_name);
            ruma::OwnedRoomAliasId::try_from(alias.clone()).map_err(|_| {
                Error::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    "Invalid room alias",
                )
            })?;
            if s.db.resolve_alias(&alias).await?.is_some() {
                return Err(Error::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "M_ROOM_IN_USE",
                    "Room alias already taken",
                ));
            }
            Some(alias)
        }
        None => None,
    };
    let preset = req.preset.unwrap_or(if req.public {
        Preset::PublicChat
    } else {
        Preset::PrivateChat
    });

    // 1. m.room.create
    let mut create_content = req.creation_content.clone().unwrap_or_default();
    create_content.insert("room_version".into(), json!(version_str));
    if rules.authorization.use_room_create_sender {
        create_content.remove("creator");
    } else {
        create_content.insert("creator".into(), json!(creator));
    }
    let v12 = rules.authorization.room_create_event_id_as_room_id;
    let mut obj = CanonicalJsonObject::new();
    let provisional_room_id = if v12 {
        None
    } else {
        let rid = OwnedRoomId::try_from(format!(
            "!{}:{}",
            random_localpart(18),
            s.config.server_name
        ))
        .map_err(Error::internal)?;
        obj.insert(
            "room_id".into(),
            CanonicalJsonValue::String(rid.to_string()),
        );
        Some(rid)
    };
    obj.insert(
        "sender".into(),
        CanonicalJsonValue::String(creator.to_string()),
    );
    obj.insert(
        "type".into(),
        CanonicalJsonValue::String("m.room.create".into()),
    );
    obj.insert(
        "state_key".into(),
        CanonicalJsonValue::String(String::new()),
    );
    obj.insert(
        "content".into(),
        to_canonical(&Value::Object(create_content.clone()))?,
    );
    obj.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::new_saturating(unique_create_ts())),
    );
    obj.insert("depth".into(), CanonicalJsonValue::Integer(1u32.into()));
    obj.insert("prev_events".into(), CanonicalJsonValue::Array(vec![]));
    obj.insert("auth_events".into(), CanonicalJsonValue::Array(vec![]));
    if matches!(
        version,
        RoomVersionId::V6
            | RoomVersionId::V7
            | RoomVersionId::V8
            | RoomVersionId::V9
            | RoomVersionId::V10
    ) {
        obj.insert(
            "origin".into(),
            CanonicalJsonValue::String(s.config.server_name.to_string()),
        );
    }
    let event_id = ganglion_federation::pdu::hash_sign_and_id(
        &s.key,
        s.config.server_name.as_str(),
        &mut obj,
        &rules,
    )
    .map_err(Error::internal)?;
    let room_id = match provisional_room_id {
        Some(r) => r,
        None => ganglion_federation::pdu::room_id_from_create_event_id(&event_id)
            .map_err(Error::internal)?,
    };
    let create_pdu = Pdu::from_canonical(event_id, Some(&room_id), obj)?;
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &create_pdu, |_| {
        None::<&Pdu>
    })
    .map_err(|e| Error::bad_json(format!("invalid creation_content: {e}")))?;
    {
        let mut tx = s.db.begin().await?;
        Db::insert_room(&mut tx, room_id.as_str(), &version_str, creator.as_str()).await?;
        tx.commit().await?;
    }
    super::persist_create(s, create_pdu).await?;

    // 2. the creator joins
    let profile = s.db.account(creator.as_str()).await?;
    let mut member = Map::new();
    member.insert("membership".into(), json!("join"));
    if let Some(p) = &profile {
        if let Some(d) = &p.displayname {
            member.insert("displayname".into(), json!(d));
        }
        if let Some(a) = &p.avatar_url {
            member.insert("avatar_url".into(), json!(a));
        }
    }
    if req.is_direct {
        member.insert("is_direct".into(), json!(true));
    }
    send_event(
        s,
        &room_id,
        creator,
        NewEvent::state("m.room.member", creator.as_str(), Value::Object(member)),
        None,
    )
    .await?;

    // 3. power levels
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
    }
    if preset == Preset::TrustedPrivateChat {
        for u in &req.invite {
            users.insert(u.to_string(), json!(100));
        }
    }
    let mut pl = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if preset == Preset::PublicChat { 50 } else { 0 },
        "historical": 100,
    });
    if let (Some(over), Some(obj)) = (&req.power_level_override, pl.as_object_mut()) {
        for (k, v) in over {
            obj.insert(k.clone(), v.clone());
        }
    }
    send_event(
        s,
        &room_id,
        creator,
        NewEvent::state("m.room.power_levels", "", pl),
        None,
    )
    .await?;

    // 4. canonical alias
    if let Some(alias) = &alias {
        if !s
            .db
            .create_alias(alias, room_id.as_str(), creator.as_str())
            .await?
        {
            return Err(Error::new(
                axum::http::StatusCode::BAD_REQUEST,
                "M_ROOM_IN_USE",
                "Room alias already taken",
            ));
        }
        send_event(
            s,
            &room_id,
            creator,
            NewEvent::state("m.room.canonical_alias", "", json!({"alias": alias})),
            None,
        )
        .await?;
    }

    // 5. preset
    let (join_rule, history, guest) = match preset {
        Preset::PublicChat => ("public", "shared", "forbidden"),
        Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "shared", "can_join"),
    };
    let preset_events = [
        ("m.room.join_rules", json!({"join_rule": join_rule})),
        (
            "m.room.history_visibility",
            json!({"history_visibility": history}),
        ),
        ("m.room.guest_access", json!({"guest_access": guest})),
    ];
    let overridden = |kind: &str| {
        req.initial_state
            .iter()
            .any(|e| e.kind == kind && e.state_key.as_deref() == Some(""))
    };
    for (kind, content) in preset_events {
        if !overridden(kind) {
            send_event(
                s,
                &room_id,
                creator,
                NewEvent::state(kind, "", content),
                None,
            )
            .await?;
        }
    }

    // 6. initial_state
    for ev in req.initial_state {
        send_event(s, &room_id, creator, ev, None).await?;
    }

    // 7. name and topic
    if let Some(name) = &req.name {
        send_event(
            s,
            &room_id,
            creator,
            NewEvent::state("m.room.name", "", json!({"name": name})),
            None,
        )
        .await?;
    }
    if let Some(topic) = &req.topic {
        let content =
            json!({"topic": topic, "m.topic": [{"mimetype": "text/plain", "body": topic}]});
        send_event(
            s,
            &room_id,
            creator,
            NewEvent::state("m.room.topic", "", content),
            None,
        )
        .await?;
    }

    // 8. invites
    for invitee in &req.invite {
        super::membership::invite(s, &room_id, creator, invitee, None, req.is_direct).await?;
    }
    if req.public {
        s.db.set_published(room_id.as_str(), true).await?;
    }
    Ok(room_id)
}

/// A timestamp for a create event, strictly later than the last one this process used: in room
/// version 12 the room id is the create event's hash, so two rooms created by one user in the
/// same millisecond with the same content would otherwise be the same room.
fn unique_create_ts() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut prev = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

pub fn random_localpart(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
