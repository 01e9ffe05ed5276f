//! Server-side key backups (client-server API, "Server-side key backups"): backup versions with
//! their opaque `auth_data`, and the encrypted session keys stored in them.
//!
//! The rules live here as plain functions: how versions are named, which version a client may
//! write to, which of two keys for one session is kept, and what a well-formed upload is. SQL
//! lives in `storage::room_keys`.

use ruma::UserId;
use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::room_keys::{BackupVersion, KeyCounts, KeyMeta, KeyScope, RoomKey, VersionState},
};

/// The largest integer JSON numbers carry exactly (and canonical JSON allows).
const MAX_SAFE_INT: u64 = (1 << 53) - 1;

/// A backup version as sent by a client: `"1"`, `"2"`, … Anything else names no version.
pub fn parse_version(version: &str) -> Option<i64> {
    if version.is_empty()
        || version.len() > 18
        || version.starts_with('0')
        || !version.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    version.parse().ok()
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// Whether keys may be uploaded to `requested`: it must exist (else 404) and be the current
/// version (else 403 `M_WRONG_ROOM_KEYS_VERSION` naming the current one).
pub fn check_upload_version(requested: i64, state: VersionState) -> Result<()> {
    if !state.exists {
        return Err(unknown_version());
    }
    match state.current {
        Some(current) if current == requested => Ok(()),
        Some(current) => Err(Error::wrong_room_keys_version(&current.to_string())),
        None => Err(unknown_version()),
    }
}

/// Whether an uploaded key replaces the stored key for the same session. The spec's order:
/// keys with different `is_verified` keep the verified one; otherwise the lower
/// `first_message_index` wins; with that equal too, the lower `forwarded_count`. A key that is
/// no better leaves the stored one in place.
pub fn should_replace(stored: &KeyMeta, new: &KeyMeta) -> bool {
    if stored.is_verified != new.is_verified {
        return new.is_verified;
    }
    if stored.first_message_index != new.first_message_index {
        return new.first_message_index < stored.first_message_index;
    }
    new.forwarded_count < stored.forwarded_count
}

/// The `algorithm` and `auth_data` of a create or update body.
pub fn parse_algorithm(body: &Value) -> Result<(String, Value)> {
    let obj = body
        .as_object()
        .ok_or_else(|| Error::not_json("Request body must be a JSON object"))?;
    let algorithm = match obj.get("algorithm") {
        None => return Err(Error::missing_param("Missing algorithm")),
        Some(Value::String(a)) if !a.is_empty() => a.clone(),
        Some(_) => return Err(Error::bad_json("algorithm must be a non-empty string")),
    };
    let auth_data = match obj.get("auth_data") {
        None => return Err(Error::missing_param("Missing auth_data")),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(Error::bad_json("auth_data must be an object")),
    };
    Ok((algorithm, auth_data))
}

fn uint_field(obj: &Map<String, Value>, name: &str) -> Result<i64> {
    match obj.get(name) {
        None => Err(Error::missing_param(format!("Missing {name}"))),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= MAX_SAFE_INT)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| Error::bad_json(format!("{name} must be a non-negative integer"))),
    }
}

/// One uploaded `KeyBackupData` object for `room_id` / `session_id`.
pub fn parse_key(room_id: &str, session_id: &str, data: &Value) -> Result<RoomKey> {
    let obj = data
        .as_object()
        .ok_or_else(|| Error::bad_json("Key backup data must be an object"))?;
    let first_message_index = uint_field(obj, "first_message_index")?;
    let forwarded_count = uint_field(obj, "forwarded_count")?;
    let is_verified = match obj.get("is_verified") {
        None => return Err(Error::missing_param("Missing is_verified")),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| Error::bad_json("is_verified must be a boolean"))?,
    };
    let session_data = match obj.get("session_data") {
        None => return Err(Error::missing_param("Missing session_data")),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(Error::bad_json("session_data must be an object")),
    };
    Ok(RoomKey {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        meta: KeyMeta {
            first_message_index,
            forwarded_count,
            is_verified,
        },
        session_data,
    })
}

/// Creates a new backup version, which becomes the current one. Returns its name.
pub async fn create_version(s: &Services, user_id: &UserId, body: &Value) -> Result<String> {
    let (algorithm, auth_data) = parse_algorithm(body)?;
    let version =
        s.db.create_backup_version(user_id.as_str(), &algorithm, &auth_data)
            .await?;
    Ok(version.to_string())
}

/// The named version, or the current one for `None`.
pub async fn version_info(
    s: &Services,
    user_id: &UserId,
    version: Option<&str>,
) -> Result<BackupVersion> {
    let found = match version {
        None => s.db.backup_version(user_id.as_str(), None).await?,
        Some(v) => match parse_version(v) {
            Some(n) => s.db.backup_version(user_id.as_str(), Some(n)).await?,
            None => None,
        },
    };
    found.ok_or_else(|| match version {
        None => Error::not_found("No current backup version"),
        Some(_) => unknown_version(),
    })
}

/// Replaces the `auth_data` of an existing version. The body's `algorithm` must be the stored
/// one and its `version`, when present, the one in the path.
pub async fn update_version(
    s: &Services,
    user_id: &UserId,
    version: &str,
    body: &Value,
) -> Result<()> {
    let (algorithm, auth_data) = parse_algorithm(body)?;
    match body.get("version") {
        None => {}
        Some(Value::String(v)) if v == version => {}
        Some(_) => {
            return Err(Error::invalid_param(
                "The version in the body does not match the version in the path",
            ));
        }
    }
    let n = parse_version(version).ok_or_else(unknown_version)?;
    let updated =
        s.db.update_backup_version(user_id.as_str(), n, &auth_data, |stored| {
            if stored == algorithm {
                Ok(())
            } else {
                Err(Error::invalid_param(
                    "The algorithm does not match the backup's algorithm",
                ))
            }
        })
        .await?;
    if updated {
        Ok(())
    } else {
        Err(unknown_version())
    }
}

/// Deletes a version and every key stored in it.
pub async fn delete_version(s: &Services, user_id: &UserId, version: &str) -> Result<()> {
    let n = parse_version(version).ok_or_else(unknown_version)?;
    if s.db.delete_backup_version(user_id.as_str(), n).await? {
        Ok(())
    } else {
        Err(unknown_version())
    }
}

/// Stores keys in the current version, each replacing a stored key only when it is better.
pub async fn upload_keys(
    s: &Services,
    user_id: &UserId,
    version: &str,
    keys: &[RoomKey],
) -> Result<KeyCounts> {
    let n = parse_version(version).ok_or_else(unknown_version)?;
    s.db.put_room_keys(
        user_id.as_str(),
        n,
        keys,
        |state| check_upload_version(n, state),
        should_replace,
    )
    .await
}

/// The keys of a version in `scope`.
pub async fn keys(
    s: &Services,
    user_id: &UserId,
    version: &str,
    scope: KeyScope<'_>,
) -> Result<Vec<RoomKey>> {
    let n = parse_version(version).ok_or_else(unknown_version)?;
    s.db.room_keys(user_id.as_str(), n, scope)
        .await?
        .ok_or_else(unknown_version)
}

/// Deletes the keys of a version in `scope`.
pub async fn delete_keys(
    s: &Services,
    user_id: &UserId,
    version: &str,
    scope: KeyScope<'_>,
) -> Result<KeyCounts> {
    let n = parse_version(version).ok_or_else(unknown_version)?;
    s.db.delete_room_keys(user_id.as_str(), n, scope)
        .await?
        .ok_or_else(unknown_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> KeyMeta {
        KeyMeta {
            first_message_index,
            forwarded_count,
            is_verified,
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("12"), Some(12));
        for bad in [
            "",
            "0",
            "01",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replacement_rules() {
        let stored = meta(false, 10, 5);
        // A verified key wins over an unverified one, whatever its indexes.
        assert!(should_replace(&stored, &meta(true, 20, 9)));
        assert!(!should_replace(&meta(true, 20, 9), &meta(false, 0, 0)));
        // Same verification: the lower first_message_index wins.
        assert!(should_replace(&stored, &meta(false, 9, 50)));
        assert!(!should_replace(&stored, &meta(false, 11, 0)));
        // Same index too: the lower forwarded_count wins.
        assert!(should_replace(&stored, &meta(false, 10, 4)));
        assert!(!should_replace(&stored, &meta(false, 10, 6)));
        // An equal key does not replace.
        assert!(!should_replace(&stored, &stored));
    }

    #[test]
    fn upload_version_check() {
        let state = |exists, current| VersionState { exists, current };
        assert!(check_upload_version(2, state(true, Some(2))).is_ok());
        let e = check_upload_version(1, state(true, Some(2))).unwrap_err();
        assert_eq!(e.errcode(), "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(
            check_upload_version(3, state(false, Some(2)))
                .unwrap_err()
                .errcode(),
            "M_NOT_FOUND"
        );
        assert_eq!(
            check_upload_version(1, state(false, None))
                .unwrap_err()
                .errcode(),
            "M_NOT_FOUND"
        );
    }

    #[test]
    fn key_parsing() {
        let good = serde_json::json!({
            "first_message_index": 1, "forwarded_count": 0, "is_verified": true,
            "session_data": {"ciphertext": "x"}
        });
        let key = parse_key("!r:x", "s", &good).unwrap();
        assert_eq!(key.meta, meta(true, 1, 0));
        for bad in [
            serde_json::json!({"forwarded_count": 0, "is_verified": true, "session_data": {}}),
            serde_json::json!({"first_message_index": -1, "forwarded_count": 0, "is_verified": true, "session_data": {}}),
            serde_json::json!({"first_message_index": 1.5, "forwarded_count": 0, "is_verified": true, "session_data": {}}),
            serde_json::json!({"first_message_index": 1, "forwarded_count": 0, "is_verified": "yes", "session_data": {}}),
            serde_json::json!({"first_message_index": 1, "forwarded_count": 0, "is_verified": true, "session_data": "x"}),
            serde_json::json!("nope"),
        ] {
            assert!(parse_key("!r:x", "s", &bad).is_err(), "{bad}");
        }
    }
}
