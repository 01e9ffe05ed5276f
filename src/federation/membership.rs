//! Membership across servers: joining and leaving rooms that live elsewhere (`make_join` /
//! `send_join`, `make_leave` / `send_leave` as the joining side), answering other servers' joins
//! and leaves of our rooms, and invites in both directions.

use std::{collections::HashSet, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId,
    RoomVersionId, ServerName, UserId,
    api::federation::membership::{
        RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event,
        prepare_join_event, prepare_knock_event, prepare_leave_event,
    },
};
use serde_json::{Value, json, value::RawValue};

use super::{incoming, remote};
use crate::{
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, Result},
    rooms::{
        NewEvent, Pdu, RoomHead,
        writer::{PersistJob, RemoteWrite},
    },
    services::Services,
    storage::state::{StateMap, compute_snapshot},
};

fn supported_versions() -> Vec<RoomVersionId> {
    SUPPORTED_ROOM_VERSIONS
        .iter()
        .filter_map(|v| RoomVersionId::try_from(*v).ok())
        .collect()
}

fn raw(obj: &CanonicalJsonObject) -> Result<Box<RawValue>> {
    Ok(serde_json::value::to_raw_value(obj)?)
}

fn parse_obj(raw: &RawValue) -> Result<CanonicalJsonObject> {
    ganglion_federation::pdu_checks::parse_pdu(raw.get())
        .map_err(|e| Error::bad_json(format!("invalid event: {e}")))
}

fn remote_err(server: &ServerName, e: impl std::fmt::Display) -> Error {
    Error::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "M_UNKNOWN",
        format!("{server}: {e}"),
    )
}

/// The error a client gets when a resident server would not give a membership template.
fn template_refused(server: &ServerName, e: &ganglion_federation::FederationError) -> Error {
    match e.errcode() {
        Some("M_FORBIDDEN") => Error::forbidden(format!("{server}: {e}")),
        Some("M_INCOMPATIBLE_ROOM_VERSION") | Some("M_UNSUPPORTED_ROOM_VERSION") => Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            format!("{server}: {e}"),
        ),
        _ => remote_err(server, e),
    }
}

fn check_version_supported(version: &RoomVersionId) -> Result<()> {
    if SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
        Ok(())
    } else {
        Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            format!("room version {version} is not supported here"),
        ))
    }
}

/// Turns a template from `make_join`/`make_leave` into our signed event: fresh timestamp, our
/// origin where the version has one, content fields we add, hashes, signature and event id.
fn sign_template(
    s: &Services,
    version: &RoomVersionId,
    mut template: CanonicalJsonObject,
    sender: &UserId,
    extra_content: &serde_json::Map<String, Value>,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    let rules = version
        .rules()
        .ok_or_else(|| Error::bad_json(format!("unsupported room version {version}")))?;
    if template.get("sender").and_then(CanonicalJsonValue::as_str) != Some(sender.as_str()) {
        return Err(Error::bad_json("the template is for another sender"));
    }
    for k in ["hashes", "signatures", "event_id", "unsigned"] {
        template.remove(k);
    }
    template.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::new_saturating(crate::storage::now_ms())),
    );
    if template.contains_key("origin") {
        template.insert(
            "origin".into(),
            CanonicalJsonValue::String(s.server_name().to_owned()),
        );
    }
    if !extra_content.is_empty()
        && let Some(CanonicalJsonValue::Object(content)) = template.get_mut("content")
    {
        for (k, v) in extra_content {
            if let Ok(cv) = CanonicalJsonValue::try_from(v.clone()) {
                content.insert(k.clone(), cv);
            }
        }
    }
    let event_id =
        ganglion_federation::pdu::hash_sign_and_id(&s.key, s.server_name(), &mut template, &rules)
            .map_err(Error::internal)?;
    Ok((event_id, template))
}

/// Joins a local user to a room on another server, trying `servers` in order. On success the
/// room's state from the resident server is stored and the join is in the timeline here.
pub async fn remote_join(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    servers: &[OwnedServerName],
    content: serde_json::Map<String, Value>,
) -> Result<Pdu> {
    let fed = s.federation()?;
    let mut last_err = Error::not_found("No server could be asked to join this room");
    for server in servers {
        if *server == s.config.server_name {
            continue;
        }
        let mut req = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        req.ver = supported_versions();
        let made = match fed.client.send(server, req).await {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(%room_id, %server, "make_join failed: {e}");
                last_err = template_refused(server, &e);
                continue;
            }
        };
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        check_version_supported(&version)?;
        let template = parse_obj(&made.event)?;
        match finish_remote_join(s, server, room_id, user, &version, template, &content).await {
            Ok(pdu) => return Ok(pdu),
            Err(e) => {
                tracing::info!(%room_id, %server, "send_join failed: {e}");
                last_err = e;
            }
        }
    }
    Err(last_err)
}

async fn finish_remote_join(
    s: &Services,
    server: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    version: &RoomVersionId,
    template: CanonicalJsonObject,
    content: &serde_json::Map<String, Value>,
) -> Result<Pdu> {
    let fed = s.federation()?;
    let rules = version
        .rules()
        .ok_or_else(|| Error::bad_json("unsupported room version"))?;
    let (event_id, signed) = sign_template(s, version, template, user, content)?;
    // The room is known from now on (its version is needed to check what the server sends).
    {
        let mut tx = s.db.begin().await?;
        crate::storage::Db::insert_room(&mut tx, room_id.as_str(), version.as_str(), "").await?;
        tx.commit().await?;
    }
    let req =
        create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw(&signed)?);
    let resp = fed
        .client
        .send(server, req)
        .await
        .map_err(|e| remote_err(server, e))?;
    let room_state = resp.room_state;
    // A restricted join comes back signed by the resident server too.
    let join_obj = match &room_state.event {
        Some(ev) => parse_obj(ev).unwrap_or(signed),
        None => signed,
    };

    // Auth chain and state: verified, authorised against their own auth events, stored aside.
    let mut all: Vec<CanonicalJsonObject> = Vec::new();
    for r in room_state.auth_chain.iter().chain(room_state.state.iter()) {
        if let Ok(o) = parse_obj(r) {
            all.push(o);
        }
    }
    let state_ids: Vec<String> = room_state
        .state
        .iter()
        .filter_map(|r| parse_obj(r).ok())
        .filter_map(|o| {
            let version_rules = version.rules()?;
            ganglion_federation::pdu::event_id_of(&o, &version_rules)
                .ok()
                .map(|id| id.to_string())
        })
        .collect();
    incoming::store_auth_chain(s, &rules, room_id, all).await?;
    // State events that could not be stored (a check that failed for a passing reason, or an
    // auth event missing from the chain) are asked for one by one, once.
    let stored = s.db.known_event_ids(&state_ids).await?;
    let missing: Vec<&String> = state_ids
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    if !missing.is_empty() {
        tracing::info!(count = missing.len(), %server, "state from send_join incomplete; fetching the rest");
        let mut fetched = Vec::new();
        for id in missing {
            match remote::fetch_event(s, server, id).await {
                Ok(o) => fetched.push(o),
                Err(e) => tracing::info!(event_id = %id, "fetching a state event failed: {e}"),
            }
        }
        incoming::store_auth_chain(s, &rules, room_id, fetched).await?;
    }

    let mut state = StateMap::new();
    for p in s.db.get_pdus(&state_ids).await? {
        if let Some(sk) = &p.state_key
            && !p.rejected
            && p.room_id == room_id
        {
            state.insert((p.kind.to_string(), sk.clone()), p.event_id.to_string());
        }
    }
    if !state.contains_key(&("m.room.create".to_owned(), String::new())) {
        return Err(Error::bad_json(format!(
            "{server} sent a room state without a create event"
        )));
    }

    let (checked_id, checked) = remote::verify_pdu(s, room_id, join_obj).await?;
    let pdu = Pdu::from_canonical(checked_id, Some(room_id), checked)?;
    if let Err(why) = incoming::check_against_state(s, &rules, &pdu, &state).await? {
        return Err(Error::forbidden(format!("the join is not allowed: {why}")));
    }
    persist_join_with_state(s, pdu, state).await
}

/// Stores our join as the first timeline event of a room whose state came from elsewhere.
async fn persist_join_with_state(s: &Services, mut pdu: Pdu, before: StateMap) -> Result<Pdu> {
    let room_id = pdu.room_id.clone();
    let lock = s.room_locks.get(&room_id);
    let mut guard = lock.lock().await;
    let entries: Vec<((String, String), String)> =
        before.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (before_snap, before_blocks) = compute_snapshot(None, &entries);
    let before_id = s.db.next_snapshot_id();
    let before_snap = Arc::new(before_snap);
    let sk = pdu.state_key.clone().unwrap_or_default();
    let (after, after_blocks) = compute_snapshot(
        Some(&before_snap),
        &[((pdu.kind.to_string(), sk), pdu.event_id.to_string())],
    );
    let after_id = s.db.next_snapshot_id();
    let after = Arc::new(after);
    let current: Vec<((String, String), Option<String>)> = after
        .map
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    pdu.state_after = Some(after_id);
    let job_pdu = pdu.clone();
    let rx = s
        .writer
        .persist(|reply| PersistJob {
            pdu: job_pdu,
            remote: Some(RemoteWrite {
                extremity: true,
                current_state: current,
                current_snapshot: Some(after_id),
                extra_snapshots: vec![(before_id, before_snap, before_blocks)],
                ..Default::default()
            }),
            state_after: Some(after_id),
            new_snapshot: Some((after, after_blocks)),
            txn: None,
            generation: u64::MAX,
            reply,
        })
        .await?;
    let res = rx
        .await
        .map_err(|_| Error::internal("event writer stopped"))?;
    *guard = None;
    pdu.stream_ordering = res?;
    Ok(pdu)
}

/// Leaves a room this server does not take part in (rejecting an invite from another server):
/// `make_leave`/`send_leave` through `servers`, then the leave is recorded here.
pub async fn remote_leave(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    servers: &[OwnedServerName],
) -> Result<()> {
    let fed = s.federation()?;
    let mut last_err = Error::not_found("No server could be asked to leave this room");
    for server in servers {
        if *server == s.config.server_name {
            continue;
        }
        let made = match fed
            .client
            .send(
                server,
                prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned()),
            )
            .await
        {
            Ok(m) => m,
            Err(e) => {
                last_err = remote_err(server, e);
                continue;
            }
        };
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        let template = parse_obj(&made.event)?;
        let (event_id, signed) =
            sign_template(s, &version, template, user, &serde_json::Map::new())?;
        let req = create_leave_event::v2::Request::new(
            room_id.to_owned(),
            event_id.clone(),
            raw(&signed)?,
        );
        if let Err(e) = fed.client.send(server, req).await {
            last_err = remote_err(server, e);
            continue;
        }
        let pdu = Pdu::from_canonical(event_id, Some(room_id), signed)?;
        record_out_of_room_membership(s, &pdu, "leave").await?;
        return Ok(());
    }
    Err(last_err)
}

/// Knocks on a room on another server (`make_knock`/`send_knock` through `servers`). The room's
/// public state that comes back is kept, so that the user's client can show what they knocked
/// on, and the knock is recorded as the user's membership here.
pub async fn remote_knock(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    servers: &[OwnedServerName],
    content: serde_json::Map<String, Value>,
) -> Result<Pdu> {
    let fed = s.federation()?;
    let mut last_err = Error::not_found("No server could be asked to knock on this room");
    for server in servers {
        if *server == s.config.server_name {
            continue;
        }
        let mut req = prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        req.ver = supported_versions();
        let made = match fed.client.send(server, req).await {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(%room_id, %server, "make_knock failed: {e}");
                last_err = template_refused(server, &e);
                continue;
            }
        };
        let version = made.room_version;
        check_version_supported(&version)?;
        let template = parse_obj(&made.event)?;
        let (event_id, signed) = sign_template(s, &version, template, user, &content)?;
        {
            let mut tx = s.db.begin().await?;
            crate::storage::Db::insert_room(&mut tx, room_id.as_str(), version.as_str(), "")
                .await?;
            tx.commit().await?;
        }
        let req = create_knock_event::v1::Request::new(
            room_id.to_owned(),
            event_id.clone(),
            raw(&signed)?,
        );
        let resp = match fed.client.send(server, req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%room_id, %server, "send_knock failed: {e}");
                last_err = match e.errcode() {
                    Some("M_FORBIDDEN") => Error::forbidden(format!("{server}: {e}")),
                    _ => remote_err(server, e),
                };
                continue;
            }
        };
        let pdu = Pdu::from_canonical(event_id, Some(room_id), signed)?;
        let mut stripped: Vec<Value> = resp
            .knock_room_state
            .iter()
            .filter_map(stripped_of)
            .collect();
        stripped.push(pdu.to_stripped());
        let text = serde_json::to_string(&stripped)?;
        {
            let mut tx = s.db.begin().await?;
            crate::storage::Db::store_invite_state(
                &mut tx,
                room_id.as_str(),
                user.as_str(),
                pdu.event_id.as_str(),
                &text,
            )
            .await?;
            tx.commit().await?;
        }
        record_out_of_room_membership(s, &pdu, "knock").await?;
        return Ok(pdu);
    }
    Err(last_err)
}

/// Records a membership of a local user in a room this server is not in (an invite received,
/// a rejected invite): the event is stored aside and the user's membership row set.
async fn record_out_of_room_membership(s: &Services, pdu: &Pdu, membership: &str) -> Result<()> {
    incoming::store_outlier(s, pdu.clone()).await?;
    let Some(user) = pdu.state_key.as_deref() else {
        return Ok(());
    };
    let mut w =
        s.db.begin_stream(1, crate::storage::StreamKind::Memberships)
            .await?;
    crate::storage::Db::set_membership(
        &mut w.tx,
        pdu.room_id.as_str(),
        user,
        membership,
        pdu.event_id.as_str(),
        pdu.sender.as_str(),
        w.first,
    )
    .await?;
    let pos = w.commit().await?;
    s.notifier.notify_users(&[user.to_owned()], pos);
    Ok(())
}

// The resident side: other servers joining, leaving and inviting.

/// `make_join`: a join template for a user of `origin`, if the room would let them in now.
/// A remote user's join of a room with a `restricted` or `knock_restricted` rule, who is not
/// invited or joined: the local user who vouches for them (see
/// `rooms::membership::restricted_authoriser`). Errors as the spec has it: the user is in none
/// of the allowed rooms this server knows (`M_UNABLE_TO_AUTHORISE_JOIN` when it knows none of
/// them, else `M_FORBIDDEN`), or no local member may invite (`M_UNABLE_TO_GRANT_JOIN`).
async fn restricted_join_authoriser(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Option<String>> {
    let Some(jr) =
        crate::rooms::current_state_content(&s.db, room_id.as_str(), "m.room.join_rules", "")
            .await?
    else {
        return Ok(None);
    };
    if !matches!(
        jr.get("join_rule").and_then(Value::as_str),
        Some("restricted" | "knock_restricted")
    ) {
        return Ok(None);
    }
    if s.db
        .membership(room_id.as_str(), user.as_str())
        .await?
        .is_some_and(|m| m.membership == "invite" || m.membership == "join")
    {
        return Ok(None);
    }
    if let Some(authoriser) =
        crate::rooms::membership::restricted_authoriser(s, room_id, user, &jr).await?
    {
        return Ok(Some(authoriser));
    }
    let allowed: Vec<String> = jr
        .get("allow")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|r| r.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                .filter_map(|r| r.get("room_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut knows_one = false;
    let mut member_of_one = false;
    for r in &allowed {
        if let Ok(rid) = RoomId::parse(r.as_str())
            && participating(s, &rid).await?
        {
            knows_one = true;
            member_of_one |=
                s.db.membership(r, user.as_str())
                    .await?
                    .is_some_and(|m| m.membership == "join");
        }
    }
    if !knows_one {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNABLE_TO_AUTHORISE_JOIN",
            "This server cannot tell whether the user is in one of the allowed rooms",
        ));
    }
    if member_of_one {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNABLE_TO_GRANT_JOIN",
            "No member on this server may invite the user; try another server",
        ));
    }
    Err(Error::forbidden(
        "The user is not in any of the rooms the join rule allows",
    ))
}

pub async fn make_membership_template(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    membership: &str,
    versions: Option<&[RoomVersionId]>,
) -> Result<(RoomVersionId, CanonicalJsonObject)> {
    if user.server_name() != origin {
        return Err(Error::forbidden(
            "The user does not belong to the requesting server",
        ));
    }
    let (version, rules) = crate::rooms::room_rules(&s.db, room_id).await?;
    if let Some(vs) = versions
        && !vs.contains(&version)
    {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            format!("The room is version {version}"),
        )
        .with_extra("room_version", json!(version)));
    }
    if !participating(s, room_id).await? {
        return Err(Error::not_found("This server is not in the room"));
    }
    let mut content = json!({"membership": membership});
    if membership == "join"
        && let Some(authoriser) = restricted_join_authoriser(s, room_id, user).await?
    {
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    let lock = s.room_locks.get(room_id);
    let mut guard = lock.lock().await;
    let head: &RoomHead = crate::rooms::head_of(s, room_id, &mut guard).await?;
    let ev = NewEvent::state("m.room.member", user.as_str(), content);
    let (obj, auth_pdus, _) =
        crate::rooms::skeleton(s, head, room_id, user, &ev, origin.as_str()).await?;
    // Would it pass? Refuse now rather than after the remote server signed it.
    let probe = Pdu::from_canonical(
        OwnedEventId::try_from("$probe").map_err(Error::internal)?,
        Some(room_id),
        obj.clone(),
    )?;
    let by_key: std::collections::HashMap<(String, String), &Pdu> =
        auth_pdus.iter().map(|(k, p)| (k.clone(), p)).collect();
    if let Err(e) =
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &probe, |t, k| {
            by_key.get(&(t.to_string(), k.to_owned())).copied()
        })
    {
        return Err(Error::forbidden(format!(
            "You are not allowed to {membership}: {e}"
        )));
    }
    Ok((version, obj))
}

/// Whether this server has a joined member in the room (it can answer for it).
pub async fn participating(s: &Services, room_id: &RoomId) -> Result<bool> {
    Ok(s.db
        .joined_servers(room_id.as_str())
        .await?
        .iter()
        .any(|srv| srv == s.server_name()))
}

/// What `send_join` answers: the state before the join and its auth chain.
pub struct JoinedState {
    pub state: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
    pub event: Option<Box<RawValue>>,
    pub servers_in_room: Vec<String>,
    pub members_omitted: bool,
}

/// `send_join` / `send_leave` / `send_knock`: a membership event of a user of `origin`.
pub async fn accept_membership(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    raw_event: &RawValue,
    membership: &str,
) -> Result<OwnedEventId> {
    let obj = parse_obj(raw_event)?;
    let sender = obj
        .get("sender")
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|u| ruma::OwnedUserId::try_from(u).ok())
        .ok_or_else(|| Error::bad_json("event without a valid sender"))?;
    if sender.server_name() != origin {
        return Err(Error::forbidden(
            "The sender does not belong to the requesting server",
        ));
    }
    let state_key = obj.get("state_key").and_then(CanonicalJsonValue::as_str);
    if state_key != Some(sender.as_str()) {
        return Err(Error::bad_json("state_key must be the sender"));
    }
    let m = obj
        .get("content")
        .and_then(|c| match c {
            CanonicalJsonValue::Object(o) => o.get("membership"),
            _ => None,
        })
        .and_then(CanonicalJsonValue::as_str);
    if m != Some(membership) {
        return Err(Error::bad_json(format!("expected a {membership} event")));
    }
    // A restricted join vouched for by one of our users carries our signature too.
    let mut obj = obj;
    if membership == "join"
        && let Some(CanonicalJsonValue::Object(content)) = obj.get("content")
        && let Some(authoriser) = content
            .get("join_authorised_via_users_server")
            .and_then(CanonicalJsonValue::as_str)
        && ruma::UserId::parse(authoriser).is_ok_and(|u| u.server_name() == s.config.server_name)
    {
        let (_, rules) = crate::rooms::room_rules(&s.db, room_id).await?;
        ganglion_federation::pdu::hash_sign_and_id(&s.key, s.server_name(), &mut obj, &rules)
            .map_err(Error::internal)?;
    }
    let (id, outcome) = incoming::handle_pdu(s, origin, room_id, obj).await?;
    if &id != event_id {
        return Err(Error::bad_json("event id does not match the event"));
    }
    match outcome {
        incoming::Outcome::Accepted => {
            // The joining server talks only to us: the room's other servers hear it from us.
            if let Some(pdu) = s.db.get_pdu(id.as_str()).await? {
                super::outbound::forward_pdu(s, &pdu, origin).await?;
            }
            Ok(id)
        }
        incoming::Outcome::Duplicate => Ok(id),
        incoming::Outcome::SoftFailed => Err(Error::forbidden("The event is not allowed now")),
        incoming::Outcome::Rejected(why) => Err(Error::forbidden(format!("Rejected: {why}"))),
    }
}

/// The state before an event and the auth chain of that state (for `send_join`, `/state`).
pub async fn state_and_auth_chain_before(
    s: &Services,
    pdu: &Pdu,
    omit_members: bool,
    keep_members: &[String],
) -> Result<(Vec<Pdu>, Vec<Pdu>)> {
    let state = state_before_event(s, pdu).await?;
    let mut ids: Vec<String> = state.values().cloned().collect();
    if omit_members {
        let keep: HashSet<&str> = keep_members.iter().map(String::as_str).collect();
        ids = state
            .iter()
            .filter(|((t, k), _)| t != "m.room.member" || keep.contains(k.as_str()))
            .map(|(_, v)| v.clone())
            .collect();
    }
    let state_pdus = s.db.get_pdus(&ids).await?;
    let mut chain_from: Vec<String> = ids.clone();
    chain_from.push(pdu.event_id.to_string());
    let chain_ids: Vec<String> =
        s.db.auth_chain_ids(&chain_from)
            .await?
            .into_iter()
            .collect();
    let chain = s.db.get_pdus(&chain_ids).await?;
    Ok((state_pdus, chain))
}

/// The state before an event: the state after its only prev event; with several, the state
/// after the event less its own entry (restored from a prev event's state).
pub async fn state_before_event(s: &Services, pdu: &Pdu) -> Result<StateMap> {
    if pdu.prev_events.len() == 1
        && let Some(snap) =
            s.db.snapshot_after_event(pdu.prev_events[0].as_str())
                .await?
    {
        return Ok(s.db.load_snapshot(snap).await?.map.clone());
    }
    let Some(after) = pdu.state_after else {
        return Err(Error::not_found("No state is known at this event"));
    };
    let mut map = s.db.load_snapshot(after).await?.map.clone();
    if let Some(sk) = &pdu.state_key {
        let key = (pdu.kind.to_string(), sk.clone());
        map.remove(&key);
        for prev in pdu.prev_events.iter() {
            if let Some(snap) = s.db.snapshot_after_event(prev.as_str()).await?
                && let Some(v) = s.db.load_snapshot(snap).await?.map.get(&key)
            {
                map.insert(key.clone(), v.clone());
                break;
            }
        }
    }
    Ok(map)
}

/// Everything `send_join` answers with, for an accepted join event.
pub async fn joined_state(
    s: &Services,
    event_id: &OwnedEventId,
    omit_members: bool,
) -> Result<JoinedState> {
    let pdu =
        s.db.get_pdu(event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Unknown event"))?;
    let servers_in_room = s.db.joined_servers(pdu.room_id.as_str()).await?;
    // With members omitted, the heroes (a few members) are still sent when the room has no name.
    let keep: Vec<String> = Vec::new();
    let (state, chain) = state_and_auth_chain_before(s, &pdu, omit_members, &keep).await?;
    let to_raw = |p: &Pdu| serde_json::value::to_raw_value(&*p.json).ok();
    Ok(JoinedState {
        state: state.iter().filter_map(to_raw).collect(),
        auth_chain: chain.iter().filter_map(to_raw).collect(),
        event: to_raw(&pdu),
        servers_in_room,
        members_omitted: omit_members,
    })
}

/// `PUT /invite/v2`: another server invites one of our users. We check the event, sign it, and
/// keep it (with the room's stripped state) so the user sees the invite.
pub async fn accept_invite(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    version: &RoomVersionId,
    raw_event: &RawValue,
    invite_room_state: &[RawStrippedState],
) -> Result<CanonicalJsonObject> {
    if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            format!("Room version {version} is not supported here"),
        )
        .with_extra("room_version", json!(version)));
    }
    let rules = version
        .rules()
        .ok_or_else(|| Error::bad_json("unsupported room version"))?;
    let mut obj = parse_obj(raw_event)?;
    let invitee = obj
        .get("state_key")
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|u| ruma::OwnedUserId::try_from(u).ok())
        .ok_or_else(|| Error::bad_json("invite without a valid state_key"))?;
    if invitee.server_name() != s.config.server_name {
        return Err(Error::bad_json("The invited user is not on this server"));
    }
    if s.db.account(invitee.as_str()).await?.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    let sender_ok = obj
        .get("sender")
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|u| ruma::OwnedUserId::try_from(u).ok())
        .is_some_and(|u| u.server_name() == origin);
    if !sender_ok {
        return Err(Error::forbidden(
            "The inviter does not belong to the requesting server",
        ));
    }
    // The room is known from now on (its version decides how its events are checked).
    {
        let mut tx = s.db.begin().await?;
        crate::storage::Db::insert_room(&mut tx, room_id.as_str(), version.as_str(), "").await?;
        tx.commit().await?;
    }
    let (checked_id, _) = remote::verify_pdu(s, room_id, obj.clone()).await?;
    if &checked_id != event_id {
        return Err(Error::bad_json("event id does not match the event"));
    }
    // Our signature joins the inviting server's.
    ganglion_federation::pdu::hash_sign_and_id(&s.key, s.server_name(), &mut obj, &rules)
        .map_err(Error::internal)?;
    let pdu = Pdu::from_canonical(checked_id, Some(room_id), obj.clone())?;
    if pdu.room_id != room_id {
        return Err(Error::bad_json("event belongs to another room"));
    }
    if participating(s, room_id).await? {
        // We are in the room already: the invite arrives as a normal event too.
        return Ok(obj);
    }
    let mut stripped: Vec<Value> = invite_room_state.iter().filter_map(stripped_of).collect();
    stripped.push(pdu.to_stripped());
    let text = serde_json::to_string(&stripped)?;
    {
        let mut tx = s.db.begin().await?;
        crate::storage::Db::store_invite_state(
            &mut tx,
            room_id.as_str(),
            invitee.as_str(),
            event_id.as_str(),
            &text,
        )
        .await?;
        tx.commit().await?;
    }
    record_out_of_room_membership(s, &pdu, "invite").await?;
    Ok(obj)
}

/// A stripped state event from an invite's room state (a full PDU since v1.16, or the old
/// stripped form).
#[allow(deprecated)]
fn stripped_of(st: &RawStrippedState) -> Option<Value> {
    let v: Value = match st {
        RawStrippedState::Pdu(p) => serde_json::from_str(p.get()).ok()?,
        RawStrippedState::Stripped(r) => serde_json::from_str(r.json().get()).ok()?,
        _ => return None,
    };
    Some(json!({
        "type": v.get("type")?,
        "state_key": v.get("state_key").cloned().unwrap_or(json!("")),
        "sender": v.get("sender")?,
        "content": v.get("content").cloned().unwrap_or(json!({})),
    }))
}

/// Sends an invite of a user on another server to that server and returns the event as it
/// came back (with the invitee's server's signature), to be stored as our invite event.
pub async fn send_remote_invite(
    s: &Services,
    room_id: &RoomId,
    version: &RoomVersionId,
    event_id: &OwnedEventId,
    obj: &CanonicalJsonObject,
    invitee_server: &ServerName,
    stripped_state: Vec<Box<RawValue>>,
) -> Result<CanonicalJsonObject> {
    let fed = s.federation()?;
    let req = create_invite::v2::Request::new(
        room_id.to_owned(),
        event_id.clone(),
        version.clone(),
        raw(obj)?,
        stripped_state
            .into_iter()
            .map(RawStrippedState::Pdu)
            .collect(),
    );
    let resp = fed
        .client
        .send(invitee_server, req)
        .await
        .map_err(|e| match e.errcode() {
            Some("M_FORBIDDEN") => Error::forbidden(format!("{invitee_server}: {e}")),
            _ => remote_err(invitee_server, e),
        })?;
    let returned = parse_obj(&resp.event)?;
    let (id, checked) = remote::verify_pdu(s, room_id, returned).await?;
    if &id != event_id {
        return Err(Error::bad_json(format!(
            "{invitee_server} changed the invite event"
        )));
    }
    Ok(checked)
}

/// The servers to try for a room: the ones given, the room id's and alias's servers, and the
/// inviter's server when the user has an invite.
pub async fn candidate_servers(
    s: &Services,
    room_id: &RoomId,
    user: &UserId,
    given: &[OwnedServerName],
) -> Result<Vec<OwnedServerName>> {
    let mut out: Vec<OwnedServerName> = given.to_vec();
    if let Some(m) = s.db.membership(room_id.as_str(), user.as_str()).await?
        && (m.membership == "invite" || m.membership == "knock")
        && let Some(ev) = s.db.get_pdu(&m.event_id).await?
    {
        out.push(ev.sender.server_name().to_owned());
    }
    if let Some(server) = room_id.server_name() {
        out.push(server.to_owned());
    }
    let mut seen = HashSet::new();
    out.retain(|s_| seen.insert(s_.clone()) && s_.as_str() != s.server_name());
    Ok(out)
}

/// Whether a room id is one this server can join only over federation right now.
pub async fn needs_remote_join(s: &Services, room_id: &OwnedRoomId) -> Result<bool> {
    if s.config.federation.enabled {
        Ok(!participating(s, room_id).await?)
    } else {
        Ok(false)
    }
}
