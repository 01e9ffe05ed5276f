//! Versions, well-known discovery, capabilities, and features this server answers as absent
//! (TURN, third-party protocols).

use axum::{Json, Router, extract::State};
use ruma::api::client::{
    discovery::{discover_homeserver, get_capabilities, get_supported_versions},
    thirdparty::get_protocols,
    voip::get_turn_server_info,
};
use serde_json::json;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    config::SUPPORTED_ROOM_VERSIONS,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_supported_versions::Request, _, _>(r, versions);
    let r = route::<discover_homeserver::Request, _, _>(r, well_known_client);
    let r = r.route(
        "/.well-known/matrix/server",
        axum::routing::get(well_known_server),
    );
    let r = route::<get_capabilities::v3::Request, _, _>(r, capabilities);
    let r = route::<get_turn_server_info::v3::Request, _, _>(r, turn_server);
    route::<get_protocols::v3::Request, _, _>(r, protocols)
}

async fn versions() -> Json<serde_json::Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
                     "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19"],
        "unstable_features": {
            "org.matrix.msc3440.stable": true,
            "org.matrix.msc2285.stable": true,
            "org.matrix.msc3827.stable": true,
            "org.matrix.msc3026.busy_presence": false,
            "org.matrix.e2e_cross_signing": true,
            "org.matrix.msc3916.stable": true,
        }
    }))
}

async fn well_known_client(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"m.homeserver": {"base_url": s.config.public_baseurl()}}))
}

/// Where other servers reach this one: the federation listener's port on the server name's
/// host. Without federation there is nothing to delegate to (404).
async fn well_known_server(State(s): State<AppState>) -> JsonResult {
    match s.config.federation.listen {
        Some(addr) if s.config.federation.enabled => {
            let host = s.config.server_name.host();
            Ok(Json(json!({"m.server": format!("{host}:{}", addr.port())})))
        }
        _ => Err(crate::error::Error::not_found(
            "Federation is not enabled on this server",
        )),
    }
}

async fn capabilities(
    State(s): State<AppState>,
    req: Ruma<get_capabilities::v3::Request>,
) -> JsonResult {
    req.user()?;
    let available: serde_json::Map<String, serde_json::Value> = SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| (v.to_string(), json!("stable")))
        .collect();
    Ok(Json(json!({
        "capabilities": {
            "m.room_versions": {"default": s.config.rooms.default_version.as_str(), "available": available},
            "m.change_password": {"enabled": true},
            "m.set_displayname": {"enabled": true},
            "m.set_avatar_url": {"enabled": true},
            "m.3pid_changes": {"enabled": false},
            "m.get_login_token": {"enabled": false},
            "m.profile_fields": {"enabled": true},
        }
    })))
}

async fn turn_server(req: Ruma<get_turn_server_info::v3::Request>) -> JsonResult {
    req.user()?;
    // No TURN server is configured: the spec's answer is an empty server list.
    Ok(Json(
        json!({"uris": [], "username": "", "password": "", "ttl": 0}),
    ))
}

async fn protocols(req: Ruma<get_protocols::v3::Request>) -> JsonResult {
    req.user()?;
    // No bridges advertise third-party protocols yet.
    Ok(Json(json!({})))
}
