//! Account data (global and per room) and room tags (the room's `m.tag` account data).

use axum::{Json, Router, extract::State, http::StatusCode};
use ruma::{
    UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        tag::{create_tag, delete_tag, get_tags},
    },
};
use serde_json::{Map, Value, json};

use super::JsonResult;
use crate::{
    api::{Auth, Ruma, route},
    error::{Error, Result},
    push,
    services::{AppState, Services},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_global_account_data::v3::Request, _, _>(r, get_global);
    let r = route::<set_global_account_data::v3::Request, _, _>(r, set_global);
    let r = route::<get_room_account_data::v3::Request, _, _>(r, get_room);
    let r = route::<set_room_account_data::v3::Request, _, _>(r, set_room);
    let r = route::<get_tags::v3::Request, _, _>(r, get_tags);
    let r = route::<create_tag::v3::Request, _, _>(r, put_tag);
    route::<delete_tag::v3::Request, _, _>(r, delete_tag)
}

/// Account data types the server manages itself; clients set them through their own APIs.
const SERVER_MANAGED: &[&str] = &["m.fully_read", push::PUSH_RULES_TYPE];

const TAG_TYPE: &str = "m.tag";

/// Only the owner may read or write their account data.
fn own<'a, T>(req: &'a Ruma<T>, user_id: &UserId) -> Result<&'a Auth> {
    let auth = req.user()?;
    if auth.user_id != user_id {
        return Err(Error::forbidden(
            "You cannot access another user's account data",
        ));
    }
    Ok(auth)
}

fn check_settable(kind: &str) -> Result<()> {
    if SERVER_MANAGED.contains(&kind) {
        return Err(Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("Cannot set {kind} through this API"),
        ));
    }
    Ok(())
}

fn content_of(json: &Option<Value>) -> Result<Value> {
    match json {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        _ => Err(Error::not_json(
            "Account data content must be a JSON object",
        )),
    }
}

async fn store(
    s: &Services,
    user: &Auth,
    room_id: Option<&str>,
    kind: &str,
    content: &Value,
) -> Result<()> {
    let pos =
        s.db.set_account_data(user.user_id.as_str(), room_id, kind, content)
            .await?;
    s.notifier.notify_users(&[user.user_id.to_string()], pos);
    Ok(())
}

async fn get_global(
    State(s): State<AppState>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> JsonResult {
    let user = own(&req, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    match s
        .db
        .account_data(user.user_id.as_str(), None, &kind)
        .await?
    {
        Some(v) => Ok(Json(v)),
        None if kind == push::PUSH_RULES_TYPE => {
            Ok(Json(push::default_rules_content(&user.user_id)?))
        }
        None => Err(Error::not_found("Account data not found")),
    }
}

async fn set_global(
    State(s): State<AppState>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> JsonResult {
    let user = own(&req, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    check_settable(&kind)?;
    let content = content_of(&req.json)?;
    store(&s, user, None, &kind, &content).await?;
    Ok(Json(json!({})))
}

async fn get_room(
    State(s): State<AppState>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> JsonResult {
    let user = own(&req, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    s.db.account_data(
        user.user_id.as_str(),
        Some(req.body.room_id.as_str()),
        &kind,
    )
    .await?
    .map(Json)
    .ok_or_else(|| Error::not_found("Account data not found"))
}

async fn set_room(
    State(s): State<AppState>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> JsonResult {
    let user = own(&req, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    check_settable(&kind)?;
    let content = content_of(&req.json)?;
    store(&s, user, Some(req.body.room_id.as_str()), &kind, &content).await?;
    Ok(Json(json!({})))
}

/// The `tags` object of an `m.tag` content (empty when unset or malformed).
fn tags_of(content: Option<Value>) -> Map<String, Value> {
    match content.and_then(|mut c| c.get_mut("tags").map(Value::take)) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

async fn get_tags(State(s): State<AppState>, req: Ruma<get_tags::v3::Request>) -> JsonResult {
    let user = own(&req, &req.body.user_id)?;
    let content =
        s.db.account_data(
            user.user_id.as_str(),
            Some(req.body.room_id.as_str()),
            TAG_TYPE,
        )
        .await?;
    Ok(Json(json!({ "tags": tags_of(content) })))
}

/// Changes the room's tags with `f` (atomically) and wakes the user's long polls.
async fn update_tags(
    s: &Services,
    user: &Auth,
    room_id: &str,
    f: impl FnOnce(&mut Map<String, Value>) -> bool,
) -> Result<()> {
    let (pos, ()) =
        s.db.update_account_data(user.user_id.as_str(), Some(room_id), TAG_TYPE, |current| {
            let mut tags = tags_of(current);
            if !f(&mut tags) {
                return Ok((None, ()));
            }
            Ok((Some(json!({ "tags": tags })), ()))
        })
        .await?;
    if let Some(pos) = pos {
        s.notifier.notify_users(&[user.user_id.to_string()], pos);
    }
    Ok(())
}

async fn put_tag(State(s): State<AppState>, req: Ruma<create_tag::v3::Request>) -> JsonResult {
    let user = own(&req, &req.body.user_id)?;
    let info = content_of(&req.json)?;
    if let Some(order) = info.get("order")
        && !order.is_number()
    {
        return Err(Error::bad_json("Tag order must be a number"));
    }
    let tag = req.body.tag.clone();
    update_tags(&s, user, req.body.room_id.as_str(), |tags| {
        tags.insert(tag, info);
        true
    })
    .await?;
    Ok(Json(json!({})))
}

async fn delete_tag(State(s): State<AppState>, req: Ruma<delete_tag::v3::Request>) -> JsonResult {
    let user = own(&req, &req.body.user_id)?;
    let tag = req.body.tag.as_str();
    update_tags(&s, user, req.body.room_id.as_str(), |tags| {
        tags.remove(tag).is_some()
    })
    .await?;
    Ok(Json(json!({})))
}
