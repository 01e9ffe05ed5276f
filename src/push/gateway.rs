//! Sending notifications to push gateways (the push gateway API's `/_matrix/push/v1/notify`).
//!
//! One background task follows the event stream. For each new event it finds the room's local
//! members that have an HTTP pusher, evaluates their push rules, and for every "notify" posts
//! the notification to each of their pushers' gateways (retrying with backoff in its own task,
//! so a slow gateway holds up nobody else). Pushkeys a gateway rejects are removed.

use std::{collections::HashMap, time::Duration};

use ruma::{UserId, push::Action};
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, Result},
    push::Evaluator,
    rooms::{Pdu, current_state_content},
    services::{AppState, Services},
    storage::pushers::PusherRow,
};

/// Events read from the stream per step.
const BATCH: i64 = 100;
/// Attempts per notification before it is given up.
const ATTEMPTS: u32 = 6;

/// The HTTP client for push gateways (TLS with the webpki roots plus the configured CA).
pub fn client(s: &crate::config::Config) -> Result<reqwest::Client> {
    let tls = ganglion_federation::tls::client_config(s.federation.ca_file.as_deref())
        .map_err(Error::internal)?;
    reqwest::Client::builder()
        .user_agent(concat!("Ganglion/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(Error::internal)
}

/// Where the sender's position is kept across restarts.
const POSITION: &str = "push_sender_position";
/// After a restart, at most this many events are caught up on.
const MAX_CATCH_UP: i64 = 10_000;
/// Events older than this are not pushed (catching up after a long stop).
const MAX_AGE_MS: i64 = 24 * 3600 * 1000;

/// Starts the task that follows the event stream, from where it got to before a restart.
pub fn spawn(s: AppState) {
    tokio::spawn(async move {
        let mut tick = s.notifier.subscribe();
        let now = s.db.stream_position();
        let mut pos = match s.db.server_value(POSITION).await {
            Ok(Some(p)) => p.clamp(now - MAX_CATCH_UP, now),
            Ok(None) => now,
            Err(e) => {
                tracing::warn!("push: reading the sender position failed: {e}");
                now
            }
        };
        let mut saved = Saved {
            pos,
            at: std::time::Instant::now(),
        };
        // Catch up first (the loop below runs on the first pass without waiting).
        let mut first = true;
        while first || tick.changed().await.is_ok() {
            first = false;
            if s.pushers.is_empty() {
                pos = s.db.stream_position();
                save(&s, &mut saved, pos).await;
                continue;
            }
            loop {
                let events = match s.db.timeline_events_after(pos, BATCH).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!("push: reading new events failed: {e}");
                        break;
                    }
                };
                let n = events.len() as i64;
                let oldest = crate::storage::now_ms() - MAX_AGE_MS;
                for pdu in events {
                    pos = pos.max(pdu.stream_ordering);
                    if i64::from(pdu.origin_server_ts.get()) < oldest {
                        continue;
                    }
                    if let Err(e) = event_written(&s, &pdu).await {
                        tracing::warn!(event_id = %pdu.event_id, "push: {e}");
                    }
                }
                save(&s, &mut saved, pos).await;
                if n < BATCH {
                    break;
                }
            }
        }
    });
}

/// The position last stored, and when.
struct Saved {
    pos: i64,
    at: std::time::Instant,
}

/// How often the position is stored at most: a stop loses (and a restart pushes again) at
/// most this much.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Stores the sender's position when it moved, at most every [`SAVE_EVERY`].
async fn save(s: &Services, saved: &mut Saved, pos: i64) {
    if pos == saved.pos || saved.at.elapsed() < SAVE_EVERY {
        return;
    }
    match s.db.set_server_value(POSITION, pos).await {
        Ok(()) => {
            *saved = Saved {
                pos,
                at: std::time::Instant::now(),
            }
        }
        Err(e) => tracing::warn!("push: saving the sender position failed: {e}"),
    }
}

/// Works out who a new event notifies and hands each notification to a delivery task.
async fn event_written(s: &AppState, pdu: &Pdu) -> Result<()> {
    let members = s.db.joined_member_ids(pdu.room_id.as_str()).await?;
    let local_suffix = format!(":{}", s.config.server_name);
    let local: Vec<String> = members
        .into_iter()
        .filter(|m| m.ends_with(&local_suffix) && m.as_str() != pdu.sender.as_str())
        .collect();
    let candidates = s.pushers.among(&local);
    if candidates.is_empty() {
        return Ok(());
    }
    let client_event = pdu.to_client(None);
    let mut details: Option<Details> = None;
    for user in candidates {
        let Ok(user_id) = UserId::parse(user.as_str()) else {
            continue;
        };
        let evaluator = Evaluator::for_room(&s.db, &pdu.room_id, &user_id).await?;
        let actions = evaluator.actions(pdu).await?;
        if !actions.iter().any(Action::should_notify) {
            continue;
        }
        let pushers: Vec<PusherRow> =
            s.db.pushers_of(&user)
                .await?
                .into_iter()
                .filter(|p| p.kind == "http")
                .collect();
        if pushers.is_empty() {
            s.pushers.remove(&user);
            continue;
        }
        let unread = badge_count(s, &user).await.unwrap_or(0);
        let details = match &mut details {
            Some(d) => d,
            None => details.insert(event_details(s, pdu).await?),
        };
        for pusher in pushers {
            let body = notification(pdu, &client_event, details, &actions, unread, &pusher);
            let Some(url) = pusher_url(&pusher) else {
                continue;
            };
            tokio::spawn(deliver(s.clone(), url, body, pusher));
        }
    }
    Ok(())
}

/// Display names that go with a notification.
struct Details {
    sender_display_name: Option<String>,
    room_name: Option<String>,
    room_alias: Option<String>,
}

/// The room's current name and alias and the sender's display name (the same for everyone
/// the event notifies).
async fn event_details(s: &Services, pdu: &Pdu) -> Result<Details> {
    let room = pdu.room_id.as_str();
    let field = |v: Option<Value>, key: &str| {
        v.and_then(|c| c.get(key).and_then(Value::as_str).map(str::to_owned))
            .filter(|n| !n.is_empty())
    };
    let member = current_state_content(&s.db, room, "m.room.member", pdu.sender.as_str()).await?;
    let name = current_state_content(&s.db, room, "m.room.name", "").await?;
    let alias = current_state_content(&s.db, room, "m.room.canonical_alias", "").await?;
    Ok(Details {
        sender_display_name: field(member, "displayname"),
        room_name: field(name, "name"),
        room_alias: field(alias, "alias"),
    })
}

/// The badge number: how many of the user's rooms have unread notifications.
async fn badge_count(s: &Services, user: &str) -> Result<u64> {
    let memberships = s.db.memberships_of_user(user).await?;
    let reads = s.db.read_positions_of_user(user).await?;
    let none = HashMap::new();
    let mut rooms = 0;
    for (room_id, membership, joined_at, _) in &memberships {
        if membership != "join" {
            continue;
        }
        let receipts = reads.get(room_id).unwrap_or(&none);
        let of = crate::push::UnreadOf {
            room_id,
            user_id: user,
            joined_at: *joined_at,
            receipts,
            per_thread: false,
        };
        let counts = crate::push::unread_counts(s, &of, None).await?;
        if counts.notifications > 0 {
            rooms += 1;
        }
    }
    Ok(rooms)
}

/// The tweaks the rules set (`sound`, `highlight`, …) as the gateway API carries them.
fn tweaks(actions: &[Action]) -> Map<String, Value> {
    let mut out = Map::new();
    for a in actions {
        if let Action::SetTweak(t) = a
            && let Ok(Value::Object(m)) = serde_json::to_value(t)
            && let (Some(Value::String(name)), value) = (m.get("set_tweak"), m.get("value"))
        {
            let value = value.cloned().unwrap_or(Value::Bool(true));
            out.insert(name.clone(), value);
        }
    }
    out
}

/// The `notify` request body for one pusher.
fn notification(
    pdu: &Pdu,
    client_event: &Value,
    d: &Details,
    actions: &[Action],
    unread: u64,
    pusher: &PusherRow,
) -> Value {
    let data: Value = serde_json::from_str(&pusher.data).unwrap_or_else(|_| json!({}));
    let mut device_data = data.as_object().cloned().unwrap_or_default();
    device_data.remove("url");
    let tweaks = tweaks(actions);
    let high = pdu.kind.to_string() == "m.room.encrypted"
        || tweaks.contains_key("sound")
        || tweaks
            .get("highlight")
            .is_some_and(|h| h != &Value::Bool(false));
    let mut n = json!({
        "event_id": pdu.event_id,
        "room_id": pdu.room_id,
        "counts": {"unread": unread},
        "prio": if high { "high" } else { "low" },
        "devices": [{
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "data": device_data,
            "tweaks": tweaks,
        }],
    });
    let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    if !event_id_only {
        n["type"] = json!(pdu.kind.to_string());
        n["sender"] = json!(pdu.sender);
        if let Some(name) = &d.sender_display_name {
            n["sender_display_name"] = json!(name);
        }
        if let Some(name) = &d.room_name {
            n["room_name"] = json!(name);
        }
        if let Some(alias) = &d.room_alias {
            n["room_alias"] = json!(alias);
        }
        if let Some(content) = client_event.get("content") {
            n["content"] = content.clone();
        }
        if pdu.kind.to_string() == "m.room.member" {
            n["user_is_target"] = json!(pdu.state_key.as_deref() == Some(pusher.user_id.as_str()));
        }
    }
    json!({ "notification": n })
}

fn pusher_url(p: &PusherRow) -> Option<String> {
    let data: Value = serde_json::from_str(&p.data).ok()?;
    data.get("url").and_then(Value::as_str).map(str::to_owned)
}

/// Posts one notification, retrying failures with backoff; removes the pusher when the gateway
/// rejects its pushkey.
async fn deliver(s: AppState, url: String, body: Value, pusher: PusherRow) {
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match post(&s, &url, &body).await {
            Ok(rejected) => {
                if rejected.iter().any(|k| k == &pusher.pushkey) {
                    tracing::info!(app_id = %pusher.app_id, "push gateway rejected a pushkey; removing the pusher");
                    if let Err(e) =
                        s.db.delete_pusher_everywhere(&pusher.app_id, &pusher.pushkey)
                            .await
                    {
                        tracing::warn!("removing a rejected pusher failed: {e}");
                    }
                }
                return;
            }
            Err(Failure::Permanent(e)) => {
                tracing::warn!(%url, "push gateway refused a notification: {e}");
                return;
            }
            Err(Failure::Retry(e)) => {
                tracing::debug!(%url, attempt, "push gateway unreachable: {e}");
                if attempt < ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 4).min(Duration::from_secs(300));
                }
            }
        }
    }
    tracing::warn!(%url, "push notification given up after {ATTEMPTS} attempts");
}

enum Failure {
    Retry(String),
    Permanent(String),
}

async fn post(s: &Services, url: &str, body: &Value) -> std::result::Result<Vec<String>, Failure> {
    let client = match s.push_client.get() {
        Some(c) => c,
        None => {
            let made = client(&s.config).map_err(|e| Failure::Permanent(e.to_string()))?;
            s.push_client.get_or_init(|| made)
        }
    };
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?;
    let status = resp.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(Failure::Retry(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(Failure::Permanent(format!("HTTP {status}")));
    }
    let answer: Value = resp.json().await.unwrap_or_else(|_| json!({}));
    Ok(crate::json::string_list(answer.get("rejected")))
}
