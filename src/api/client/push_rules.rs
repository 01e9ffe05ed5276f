//! Push rules: the whole ruleset, single rules, their `enabled` flag and actions.

use axum::{Json, Router, extract::State};
use ruma::api::client::push::{
    delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
    get_pushrules_global_scope, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
};
use serde_json::json;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    push,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_pushrules_all::v3::Request, _, _>(r, get_all);
    let r = route::<get_pushrules_global_scope::v3::Request, _, _>(r, get_global);
    let r = route::<get_pushrule::v3::Request, _, _>(r, get_rule);
    let r = route::<set_pushrule::v3::Request, _, _>(r, put_rule);
    let r = route::<delete_pushrule::v3::Request, _, _>(r, delete_rule);
    let r = route::<get_pushrule_enabled::v3::Request, _, _>(r, get_enabled);
    let r = route::<set_pushrule_enabled::v3::Request, _, _>(r, set_enabled);
    let r = route::<get_pushrule_actions::v3::Request, _, _>(r, get_actions);
    route::<set_pushrule_actions::v3::Request, _, _>(r, set_actions)
}

async fn get_all(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> JsonResult {
    let user = req.user()?;
    let rules = push::ruleset(&s.db, &user.user_id).await?;
    Ok(Json(json!({ "global": push::ruleset_json(&rules)? })))
}

async fn get_global(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> JsonResult {
    let user = req.user()?;
    let rules = push::ruleset(&s.db, &user.user_id).await?;
    Ok(Json(push::ruleset_json(&rules)?))
}

async fn get_rule(State(s): State<AppState>, req: Ruma<get_pushrule::v3::Request>) -> JsonResult {
    let user = req.user()?;
    let rule = push::get_rule(&s.db, &user.user_id, &req.body.kind, &req.body.rule_id).await?;
    Ok(Json(rule))
}

async fn put_rule(State(s): State<AppState>, req: Ruma<set_pushrule::v3::Request>) -> JsonResult {
    let user = req.user()?;
    let body = req.body.clone();
    push::put_rule(
        &s,
        &user.user_id,
        body.rule,
        body.before.as_deref(),
        body.after.as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn delete_rule(
    State(s): State<AppState>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> JsonResult {
    let user = req.user()?;
    push::delete_rule(&s, &user.user_id, &req.body.kind, &req.body.rule_id).await?;
    Ok(Json(json!({})))
}

async fn get_enabled(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> JsonResult {
    let user = req.user()?;
    let (enabled, _) =
        push::rule_state(&s.db, &user.user_id, &req.body.kind, &req.body.rule_id).await?;
    Ok(Json(json!({ "enabled": enabled })))
}

async fn set_enabled(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> JsonResult {
    let user = req.user()?;
    push::set_enabled(
        &s,
        &user.user_id,
        &req.body.kind,
        &req.body.rule_id,
        req.body.enabled,
    )
    .await?;
    Ok(Json(json!({})))
}

async fn get_actions(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> JsonResult {
    let user = req.user()?;
    let (_, actions) =
        push::rule_state(&s.db, &user.user_id, &req.body.kind, &req.body.rule_id).await?;
    Ok(Json(json!({ "actions": actions })))
}

async fn set_actions(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> JsonResult {
    let user = req.user()?;
    push::set_actions(
        &s,
        &user.user_id,
        &req.body.kind,
        &req.body.rule_id,
        req.body.actions.clone(),
    )
    .await?;
    Ok(Json(json!({})))
}
