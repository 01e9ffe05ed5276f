//! PDU construction helpers that depend only on the room version: content hash, signature and
//! the reference-hash event id (room v3+), and the v12 room id derived from the create event.

use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, RoomVersionId,
    room_version_rules::RoomVersionRules,
};

use crate::ServerSigningKey;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("unsupported room version {0}")]
    UnsupportedVersion(String),
    #[error("{0}")]
    Hash(String),
}

pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, PduError> {
    version
        .rules()
        .ok_or_else(|| PduError::UnsupportedVersion(version.to_string()))
}

/// Adds `hashes` and `signatures` to `pdu` and returns its event id (`$` + reference hash).
pub fn hash_sign_and_id(
    key: &ServerSigningKey,
    server_name: &str,
    pdu: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, PduError> {
    ruma::signatures::hash_and_sign_event(server_name, key.key_pair(), pdu, &rules.redaction)
        .map_err(|e| PduError::Hash(e.to_string()))?;
    event_id_of(pdu, rules)
}

/// The event id of a PDU in a room version with reference-hash ids (v3 and later).
pub fn event_id_of(
    pdu: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, PduError> {
    let hash =
        ruma::signatures::reference_hash(pdu, rules).map_err(|e| PduError::Hash(e.to_string()))?;
    OwnedEventId::try_from(format!("${hash}")).map_err(|e| PduError::Hash(e.to_string()))
}

/// Room v12: the room id is `!` + the create event's reference hash.
pub fn room_id_from_create_event_id(event_id: &OwnedEventId) -> Result<OwnedRoomId, PduError> {
    let hash = event_id.as_str().trim_start_matches('$');
    OwnedRoomId::try_from(format!("!{hash}")).map_err(|e| PduError::Hash(e.to_string()))
}
