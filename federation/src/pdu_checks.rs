//! Checks performed on receipt of a PDU (server-server API, "Checks performed on receipt of a
//! PDU", steps 1–3): format, signatures, content hash. Authorization (steps 4–6) is the server's
//! job (ruma::state_res), run on the [`CheckedPdu`] this module returns.
//!
//! The flow is split in two so the server can fetch signing keys between the steps:
//!
//! 1. [`parse_pdu`] turns the received bytes into canonical JSON (no floats, integers within
//!    ±(2^53−1); also for room versions 1–5, which technically allowed non-canonical values).
//!    [`claimed_room_id`] then tells the server which room (hence which room version) it claims.
//! 2. [`prepare_pdu`] checks the event format for the room version (required fields and their
//!    types, size ≤ 65,536 bytes of canonical JSON, `prev_events`/`auth_events` shapes and
//!    lengths, depth) and computes the event id (reference hash for v3+, the `event_id` field for
//!    v1/v2) and the room id (for v12 create events: derived from the event id). Its
//!    [`PreparedPdu::required_keys`] lists, per server that must have signed, the key ids present
//!    in its signatures: the server fetches those keys (directly or through a notary) and builds a
//!    [`PublicKeyMap`].
//! 3. [`PreparedPdu::verify`] checks the signatures with `ruma::signatures::verify_event`, then the
//!    content hash: on a mismatch the event is redacted (room version's rules) and accepted in that
//!    form, as the spec says.
//!
//! [`check_pdu`] does all three for callers that already hold the keys.
//!
//! What `ruma::signatures::verify_event` checks (ruma-signatures 0.22), and therefore what
//! [`PreparedPdu::verify`] relies on:
//! - the servers that must have signed are those of
//!   `ruma::signatures::required_server_signatures_to_verify_event`: the `sender`'s server, except
//!   for an `m.room.member` invite carrying `content.third_party_invite` (the spec exempts those;
//!   the token signature in `third_party_invite.signed` is checked by the auth rules instead); for
//!   v1/v2 also the server of `event_id`; for v8+ also the server of
//!   `content.join_authorised_via_users_server` when present (ruma checks it on any event carrying
//!   the key, which is stricter than "restricted joins" and harmless);
//! - for each of them: a `signatures.<server>` object must exist, the key map must have an entry
//!   for the server, every signature made with a key id found in the map must verify (one bad
//!   signature fails the event even if another is good), and at least one must have been checked
//!   (key ids absent from the map and unknown algorithms are skipped);
//! - signatures are over the redacted event without `signatures` and `unsigned`, so they hold for
//!   a redacted copy too;
//! - it does NOT check key validity periods: for room versions with `enforce_key_validity` (v5+)
//!   the caller must put into the map only keys whose `valid_until_ts` ≥ the PDU's
//!   `origin_server_ts` ([`PreparedPdu::enforce_key_validity`], [`PreparedPdu::origin_server_ts`]);
//!   for older versions expired (`old_verify_keys`) keys are acceptable;
//! - it does not check the `origin` server's signature (the spec no longer requires it).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedServerName, OwnedUserId, RoomVersionId, UInt,
    room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules},
    signatures::{PublicKeyMap, VerificationError, Verified},
};

use crate::pdu;

/// The largest PDU accepted, in bytes of canonical JSON including signatures.
pub const MAX_PDU_BYTES: usize = 65_536;
/// Longest `type`, `sender`, `room_id`, `state_key`, `event_id` (bytes).
pub const MAX_ID_BYTES: usize = 255;
/// Most entries in `prev_events`.
pub const MAX_PREV_EVENTS: usize = 20;
/// Most entries in `auth_events`.
pub const MAX_AUTH_EVENTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum PduCheckError {
    #[error("unsupported room version {0}")]
    UnsupportedVersion(String),
    #[error("PDU is not canonical JSON: {0}")]
    NotCanonicalJson(String),
    #[error("PDU is {size} bytes, more than {MAX_PDU_BYTES}")]
    TooLarge { size: usize },
    #[error("PDU lacks required field `{0}`")]
    MissingField(&'static str),
    #[error("PDU field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("PDU is not signed by {0}")]
    MissingSignature(OwnedServerName),
    #[error("no public keys supplied for {0}")]
    MissingKeys(OwnedServerName),
    #[error("none of the signatures of {0} uses a known key")]
    NoKnownKey(OwnedServerName),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("cannot redact PDU: {0}")]
    Redaction(String),
}

impl PduCheckError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// A PDU that passed the format check; its signatures are not checked yet.
#[derive(Debug, Clone)]
pub struct PreparedPdu {
    pub event_id: OwnedEventId,
    /// The room the event belongs to (for a v12 `m.room.create`: derived from its event id).
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// Room versions 5+: only keys valid at `origin_server_ts` may be supplied to [`Self::verify`].
    pub enforce_key_validity: bool,
    /// For each server that must have signed: the key ids it signed with. Fetch these keys.
    pub required_keys: BTreeMap<OwnedServerName, BTreeSet<String>>,
    pub object: CanonicalJsonObject,
    rules: RoomVersionRules,
}

/// A PDU that passed format, signature and hash checks (steps 1–3).
#[derive(Debug, Clone)]
pub struct CheckedPdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    /// The event as received, or its redacted form when the content hash did not match.
    pub object: CanonicalJsonObject,
    /// The content hash did not match, so `object` is the redacted event.
    pub redacted: bool,
}

/// Parses received JSON as canonical JSON (rejects floats and integers outside ±(2^53−1)).
pub fn parse_pdu(json: &str) -> Result<CanonicalJsonObject, PduCheckError> {
    serde_json::from_str::<CanonicalJsonObject>(json)
        .map_err(|e| PduCheckError::NotCanonicalJson(e.to_string()))
}

/// The `room_id` a PDU claims, if it has a well-formed one (to look up the room version). A v12
/// `m.room.create` has none: its room id is derived from its event id by [`prepare_pdu`].
pub fn claimed_room_id(pdu: &CanonicalJsonObject) -> Option<OwnedRoomId> {
    pdu.get("room_id")
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|s| OwnedRoomId::try_from(s).ok())
}

/// Step 1: the event format for `version`, plus event id, room id and the keys to fetch.
pub fn prepare_pdu(
    pdu: CanonicalJsonObject,
    version: &RoomVersionId,
) -> Result<PreparedPdu, PduCheckError> {
    let rules = version
        .rules()
        .ok_or_else(|| PduCheckError::UnsupportedVersion(version.to_string()))?;

    let size = serde_json::to_vec(&pdu)
        .map_err(|e| PduCheckError::NotCanonicalJson(e.to_string()))?
        .len();
    if size > MAX_PDU_BYTES {
        return Err(PduCheckError::TooLarge { size });
    }

    let event_type = required_str(&pdu, "type")?;
    if event_type.contains('\0') {
        return Err(PduCheckError::invalid("type", "contains U+0000"));
    }
    let sender = required_str(&pdu, "sender")?;
    let sender = OwnedUserId::try_from(sender)
        .map_err(|e| PduCheckError::invalid("sender", e.to_string()))?;
    if let Some(state_key) = pdu.get("state_key") {
        let s = state_key
            .as_str()
            .ok_or_else(|| PduCheckError::invalid("state_key", "not a string"))?;
        if s.len() > MAX_ID_BYTES {
            return Err(PduCheckError::invalid("state_key", "longer than 255 bytes"));
        }
        if s.contains('\0') {
            return Err(PduCheckError::invalid("state_key", "contains U+0000"));
        }
    }
    match pdu.get("content") {
        Some(CanonicalJsonValue::Object(_)) => {}
        Some(_) => return Err(PduCheckError::invalid("content", "not an object")),
        None => return Err(PduCheckError::MissingField("content")),
    }
    match pdu.get("depth") {
        Some(CanonicalJsonValue::Integer(d)) if i64::from(*d) >= 0 => {}
        Some(_) => {
            return Err(PduCheckError::invalid(
                "depth",
                "not an integer in 0..=2^53-1",
            ));
        }
        None => return Err(PduCheckError::MissingField("depth")),
    }
    let origin_server_ts = match pdu.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => UInt::try_from(i64::from(*ts))
            .map(MilliSecondsSinceUnixEpoch)
            .map_err(|_| PduCheckError::invalid("origin_server_ts", "negative"))?,
        Some(_) => return Err(PduCheckError::invalid("origin_server_ts", "not an integer")),
        None => return Err(PduCheckError::MissingField("origin_server_ts")),
    };
    match pdu.get("hashes") {
        Some(CanonicalJsonValue::Object(h)) => {
            if !h.get("sha256").is_some_and(CanonicalJsonValue::is_string) {
                return Err(PduCheckError::invalid("hashes", "no sha256 string"));
            }
        }
        Some(_) => return Err(PduCheckError::invalid("hashes", "not an object")),
        None => return Err(PduCheckError::MissingField("hashes")),
    }
    match pdu.get("signatures") {
        Some(CanonicalJsonValue::Object(_)) => {}
        Some(_) => return Err(PduCheckError::invalid("signatures", "not an object")),
        None => return Err(PduCheckError::MissingField("signatures")),
    }
    if pdu.get("unsigned").is_some_and(|u| !u.is_object()) {
        return Err(PduCheckError::invalid("unsigned", "not an object"));
    }

    let pairs = rules.events_reference_format == EventsReferenceFormatVersion::V1;
    check_refs(&pdu, "prev_events", MAX_PREV_EVENTS, pairs)?;
    let auth = check_refs(&pdu, "auth_events", MAX_AUTH_EVENTS, pairs)?;

    // The room id: required, except for a v12 create event where it must be absent.
    let is_create = event_type == "m.room.create";
    let room_id_field = match pdu.get("room_id") {
        Some(v) => {
            let s = v
                .as_str()
                .ok_or_else(|| PduCheckError::invalid("room_id", "not a string"))?;
            if s.len() > MAX_ID_BYTES {
                return Err(PduCheckError::invalid("room_id", "longer than 255 bytes"));
            }
            Some(
                OwnedRoomId::try_from(s)
                    .map_err(|e| PduCheckError::invalid("room_id", e.to_string()))?,
            )
        }
        None => None,
    };
    let create_without_room_id = is_create && !rules.event_format.require_room_create_room_id;
    if create_without_room_id && room_id_field.is_some() {
        return Err(PduCheckError::invalid(
            "room_id",
            "must be absent from m.room.create in this room version",
        ));
    }
    if !create_without_room_id && room_id_field.is_none() {
        return Err(PduCheckError::MissingField("room_id"));
    }

    let event_id = if rules.event_format.require_event_id {
        let s = required_str(&pdu, "event_id")?;
        let id = OwnedEventId::try_from(s)
            .map_err(|e| PduCheckError::invalid("event_id", e.to_string()))?;
        if id.server_name().is_none() {
            return Err(PduCheckError::invalid("event_id", "no server name"));
        }
        id
    } else {
        let id = pdu::event_id_of(&pdu, &rules)
            .map_err(|e| PduCheckError::NotCanonicalJson(e.to_string()))?;
        if let Some(claimed) = pdu.get("event_id")
            && claimed.as_str() != Some(id.as_str())
        {
            return Err(PduCheckError::invalid(
                "event_id",
                "does not match the reference hash",
            ));
        }
        id
    };

    let room_id = match room_id_field {
        Some(r) => r,
        None => pdu::room_id_from_create_event_id(&event_id)
            .map_err(|e| PduCheckError::invalid("room_id", e.to_string()))?,
    };

    if !rules.event_format.allow_room_create_in_auth_events && !create_without_room_id {
        // v12: the create event is implied by the room id and must not be listed.
        let create_id = format!("${}", room_id.as_str().trim_start_matches('!'));
        if auth.iter().any(|a| *a == create_id) {
            return Err(PduCheckError::invalid(
                "auth_events",
                "must not contain the m.room.create event in this room version",
            ));
        }
    }

    let required_keys = required_keys_of(&pdu, &rules)?;
    Ok(PreparedPdu {
        event_id,
        room_id,
        sender,
        origin_server_ts,
        enforce_key_validity: rules.enforce_key_validity,
        required_keys,
        object: pdu,
        rules,
    })
}

impl PreparedPdu {
    /// The servers that must have signed, without key ids.
    pub fn required_servers(&self) -> impl Iterator<Item = &OwnedServerName> {
        self.required_keys.keys()
    }

    /// Steps 2 and 3: signatures with the supplied keys, then the content hash (a mismatch
    /// redacts the event). `keys` maps server name → key id (`ed25519:abc`) → public key.
    pub fn verify(self, keys: &PublicKeyMap) -> Result<CheckedPdu, PduCheckError> {
        let verified = ruma::signatures::verify_event(keys, &self.object, &self.rules)
            .map_err(map_verification_error)?;
        let (object, redacted) = match verified {
            Verified::All => (self.object, false),
            Verified::Signatures => {
                let redacted =
                    ruma::canonical_json::redact(self.object, &self.rules.redaction, None)
                        .map_err(|e| PduCheckError::Redaction(e.to_string()))?;
                (redacted, true)
            }
        };
        Ok(CheckedPdu {
            event_id: self.event_id,
            room_id: self.room_id,
            sender: self.sender,
            object,
            redacted,
        })
    }
}

/// Steps 1–3 at once, for callers that already hold the needed keys.
pub fn check_pdu(
    json: &str,
    version: &RoomVersionId,
    keys: &PublicKeyMap,
) -> Result<CheckedPdu, PduCheckError> {
    prepare_pdu(parse_pdu(json)?, version)?.verify(keys)
}

/// Adds a public key (unpadded or padded standard base64, as in `/_matrix/key/v2/server`) to a
/// key map.
pub fn add_public_key(
    map: &mut PublicKeyMap,
    server: &str,
    key_id: &str,
    public_key_base64: &str,
) -> Result<(), PduCheckError> {
    let key = ruma::serde::Base64::parse(public_key_base64)
        .map_err(|e| PduCheckError::BadSignature(format!("public key of {server}: {e}")))?;
    map.entry(server.to_owned())
        .or_default()
        .insert(key_id.to_owned(), key);
    Ok(())
}

fn required_str<'a>(
    pdu: &'a CanonicalJsonObject,
    field: &'static str,
) -> Result<&'a str, PduCheckError> {
    match pdu.get(field) {
        Some(CanonicalJsonValue::String(s)) if s.len() > MAX_ID_BYTES => {
            Err(PduCheckError::invalid(field, "longer than 255 bytes"))
        }
        Some(CanonicalJsonValue::String(s)) => Ok(s),
        Some(_) => Err(PduCheckError::invalid(field, "not a string")),
        None => Err(PduCheckError::MissingField(field)),
    }
}

/// Checks `prev_events`/`auth_events`: an array of at most `max` references, each an event id
/// (`$hash`, v3+) or an `[event_id, {"sha256": ...}]` pair (v1/v2). Returns the event ids.
fn check_refs<'a>(
    pdu: &'a CanonicalJsonObject,
    field: &'static str,
    max: usize,
    pairs: bool,
) -> Result<Vec<&'a str>, PduCheckError> {
    let items = match pdu.get(field) {
        Some(CanonicalJsonValue::Array(a)) => a,
        Some(_) => return Err(PduCheckError::invalid(field, "not an array")),
        None => return Err(PduCheckError::MissingField(field)),
    };
    if items.len() > max {
        return Err(PduCheckError::invalid(
            field,
            format!("more than {max} entries"),
        ));
    }
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let id = if pairs {
            match item.as_array() {
                Some(
                    [
                        CanonicalJsonValue::String(id),
                        CanonicalJsonValue::Object(h),
                    ],
                ) if h.get("sha256").is_some_and(CanonicalJsonValue::is_string) => id.as_str(),
                _ => {
                    return Err(PduCheckError::invalid(
                        field,
                        "entries must be [event_id, {\"sha256\": hash}] in this room version",
                    ));
                }
            }
        } else {
            item.as_str()
                .ok_or_else(|| PduCheckError::invalid(field, "entries must be event id strings"))?
        };
        let parsed = OwnedEventId::try_from(id)
            .map_err(|e| PduCheckError::invalid(field, format!("{id}: {e}")))?;
        if id.len() > MAX_ID_BYTES {
            return Err(PduCheckError::invalid(
                field,
                "event id longer than 255 bytes",
            ));
        }
        if pairs != parsed.server_name().is_some() {
            return Err(PduCheckError::invalid(
                field,
                format!("{id}: wrong event id format for this room version"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn required_keys_of(
    pdu: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<BTreeMap<OwnedServerName, BTreeSet<String>>, PduCheckError> {
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(pdu, &rules.signatures)
            .map_err(map_verification_error)?;
    let signatures = pdu
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object);
    let mut out = BTreeMap::new();
    for server in servers {
        let Some(CanonicalJsonValue::Object(set)) = signatures.and_then(|s| s.get(server.as_str()))
        else {
            return Err(PduCheckError::MissingSignature(server));
        };
        let key_ids: BTreeSet<String> = set
            .keys()
            .filter(|k| k.starts_with("ed25519:"))
            .cloned()
            .collect();
        if key_ids.is_empty() {
            return Err(PduCheckError::NoKnownKey(server));
        }
        out.insert(server, key_ids);
    }
    Ok(out)
}

fn map_verification_error(e: VerificationError) -> PduCheckError {
    let server = |s: String| {
        OwnedServerName::try_from(s.as_str())
            .map_err(|_| PduCheckError::BadSignature(format!("bad server name {s}")))
    };
    match e {
        VerificationError::NoSignaturesForEntity(s) => {
            server(s).map_or_else(|e| e, PduCheckError::MissingSignature)
        }
        VerificationError::NoPublicKeysForEntity(s) => {
            server(s).map_or_else(|e| e, PduCheckError::MissingKeys)
        }
        VerificationError::NoSupportedSignatureForEntity(s) => {
            server(s).map_or_else(|e| e, PduCheckError::NoKnownKey)
        }
        VerificationError::ParseIdentifier {
            identifier_type,
            source,
        } => PduCheckError::InvalidField {
            // `sender` was validated by the format check, so a bad user id is this one.
            field: if identifier_type == "event ID" {
                "event_id"
            } else {
                "content.join_authorised_via_users_server"
            },
            reason: source.to_string(),
        },
        VerificationError::Json(e) => PduCheckError::NotCanonicalJson(e.to_string()),
        other => PduCheckError::BadSignature(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
