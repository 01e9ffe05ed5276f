//! Pushers: validating `POST /pushers/set`, listing them, and the in-memory set of users that
//! have an HTTP pusher (so that the gateway sender looks at nobody else).

use std::collections::HashSet;

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::{Db, pushers::PusherRow},
};

/// The path every push gateway's notify endpoint has.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;

/// What a `POST /pushers/set` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum PusherChange {
    Set { pusher: PusherRow, append: bool },
    Delete { app_id: String, pushkey: String },
}

fn required_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Error::missing_param(format!("'{key}' is required"))),
        Some(_) => Err(Error::bad_json(format!("'{key}' must be a string"))),
    }
}

/// Reads and checks a `POST /pushers/set` body for a user's device.
pub fn parse_change(body: &Value, user_id: &str, device_id: &str) -> Result<PusherChange> {
    let body = body
        .as_object()
        .ok_or_else(|| Error::bad_json("The body must be a JSON object"))?;
    let app_id = required_str(body, "app_id")?;
    let pushkey = required_str(body, "pushkey")?;
    if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::invalid_param(format!(
            "'app_id' must be 1 to {MAX_APP_ID_CHARS} characters"
        )));
    }
    if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(Error::invalid_param(format!(
            "'pushkey' must be 1 to {MAX_PUSHKEY_BYTES} bytes"
        )));
    }
    let kind = match body.get("kind") {
        None => return Err(Error::missing_param("'kind' is required")),
        Some(Value::Null) => {
            return Ok(PusherChange::Delete {
                app_id: app_id.to_owned(),
                pushkey: pushkey.to_owned(),
            });
        }
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err(Error::bad_json("'kind' must be a string or null")),
    };
    let data = match body.get("data") {
        Some(Value::Object(d)) => d,
        None | Some(Value::Null) => return Err(Error::missing_param("'data' is required")),
        Some(_) => return Err(Error::bad_json("'data' must be an object")),
    };
    match kind {
        "http" => check_http_data(data)?,
        "email" => {
            return Err(Error::invalid_param(
                "Email pushers need an email address bound to the account, and this server \
                 keeps no email addresses",
            ));
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown pusher kind '{other}' (expected 'http', 'email' or null)"
            )));
        }
    }
    let profile_tag = match body.get("profile_tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Error::bad_json("'profile_tag' must be a string")),
    };
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::bad_json("'append' must be a boolean")),
    };
    Ok(PusherChange::Set {
        pusher: PusherRow {
            user_id: user_id.to_owned(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
            kind: kind.to_owned(),
            app_display_name: required_str(body, "app_display_name")?.to_owned(),
            device_display_name: required_str(body, "device_display_name")?.to_owned(),
            profile_tag,
            lang: required_str(body, "lang")?.to_owned(),
            data: Value::Object(data.clone()).to_string(),
            device_id: device_id.to_owned(),
        },
        append,
    })
}

/// An HTTP pusher's data: a `url` on the notify path, and `format` `event_id_only` if any.
fn check_http_data(data: &Map<String, Value>) -> Result<()> {
    let url = match data.get("url") {
        Some(Value::String(u)) => u,
        None | Some(Value::Null) => {
            return Err(Error::missing_param(
                "'data.url' is required for http pushers",
            ));
        }
        Some(_) => return Err(Error::bad_json("'data.url' must be a string")),
    };
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::invalid_param(format!("'data.url' is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid_param("'data.url' must be an http(s) URL"));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!(
            "'data.url' must have the path {NOTIFY_PATH}"
        )));
    }
    match data.get("format") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(f)) if f == "event_id_only" => Ok(()),
        Some(_) => Err(Error::invalid_param(
            "'data.format' must be 'event_id_only' when given",
        )),
    }
}

/// Applies a change and keeps the gateway sender's set of users up to date.
pub async fn apply(s: &Services, change: PusherChange, user_id: &str) -> Result<()> {
    match change {
        PusherChange::Set { pusher, append } => {
            s.db.set_pusher(&pusher, append).await?;
            if pusher.kind == "http" {
                s.pushers.add(user_id);
            }
        }
        PusherChange::Delete { app_id, pushkey } => {
            s.db.delete_pusher(user_id, &app_id, &pushkey).await?;
        }
    }
    Ok(())
}

/// A pusher as `GET /pushers` shows it.
pub fn pusher_json(p: &PusherRow) -> Value {
    let data: Value = serde_json::from_str(&p.data).unwrap_or_else(|_| json!({}));
    let mut out = json!({
        "app_id": p.app_id,
        "pushkey": p.pushkey,
        "kind": p.kind,
        "app_display_name": p.app_display_name,
        "device_display_name": p.device_display_name,
        "lang": p.lang,
        "data": data,
    });
    if let Some(tag) = &p.profile_tag {
        out["profile_tag"] = json!(tag);
    }
    out
}

pub async fn list(db: &Db, user_id: &UserId) -> Result<Value> {
    let pushers = db.pushers_of(user_id.as_str()).await?;
    Ok(json!({ "pushers": pushers.iter().map(pusher_json).collect::<Vec<_>>() }))
}

/// Users that may have an HTTP pusher: filled at start-up and whenever one is set; a user is
/// dropped when the sender finds none left in the database (devices and their pushers go away
/// in several places).
#[derive(Default)]
pub struct PusherUsers {
    inner: std::sync::RwLock<HashSet<String>>,
}

impl PusherUsers {
    pub async fn load(db: &Db) -> Result<Self> {
        let users = db
            .all_pushers()
            .await?
            .into_iter()
            .filter(|p| p.kind == "http")
            .map(|p| p.user_id)
            .collect();
        Ok(PusherUsers {
            inner: std::sync::RwLock::new(users),
        })
    }

    pub fn add(&self, user_id: &str) {
        if let Ok(mut m) = self.inner.write() {
            m.insert(user_id.to_owned());
        }
    }

    pub fn remove(&self, user_id: &str) {
        if let Ok(mut m) = self.inner.write() {
            m.remove(user_id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.read().map(|m| m.is_empty()).unwrap_or(true)
    }

    /// Those of `users` that may have a pusher.
    pub fn among(&self, users: &[String]) -> Vec<String> {
        let Ok(m) = self.inner.read() else {
            return Vec::new();
        };
        users.iter().filter(|u| m.contains(*u)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_body(url: &str) -> Value {
        json!({
            "app_id": "im.vector.app", "pushkey": "abc", "kind": "http",
            "app_display_name": "Element", "device_display_name": "Phone", "lang": "en",
            "data": {"url": url, "format": "event_id_only"}
        })
    }

    #[test]
    fn http_pusher_needs_the_notify_path() {
        let ok = parse_change(
            &http_body("https://push.example/_matrix/push/v1/notify"),
            "@a:x",
            "D",
        );
        assert!(matches!(ok, Ok(PusherChange::Set { append: false, .. })));
        let bad = parse_change(&http_body("https://push.example/notify"), "@a:x", "D");
        assert_eq!(bad.err().map(|e| e.errcode()), Some("M_INVALID_PARAM"));
    }

    #[test]
    fn null_kind_deletes_and_missing_fields_are_named() {
        let del = parse_change(
            &json!({"app_id": "a", "pushkey": "k", "kind": null}),
            "@a:x",
            "D",
        );
        assert_eq!(
            del.ok(),
            Some(PusherChange::Delete {
                app_id: "a".into(),
                pushkey: "k".into()
            })
        );
        let missing = parse_change(&json!({"app_id": "a", "kind": "http"}), "@a:x", "D");
        assert_eq!(missing.err().map(|e| e.errcode()), Some("M_MISSING_PARAM"));
        let email = parse_change(
            &json!({"app_id": "a", "pushkey": "k", "kind": "email", "data": {}}),
            "@a:x",
            "D",
        );
        assert_eq!(email.err().map(|e| e.errcode()), Some("M_INVALID_PARAM"));
    }
}
