//! Remote server keys on the database (the keyring's cache), and key lookups for PDU checks.

use std::sync::Arc;

use ganglion_federation::{
    error::BoxFuture,
    keyring::{KeyStore, StoredKey},
};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerSigningKeyId, ServerName, ServerSigningKeyId, UInt,
    signatures::PublicKeySet,
};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::{Db, federation::StoredServerKey},
};

/// The keyring's [`KeyStore`] on the `server_keys` table.
pub struct DbKeyStore(pub Db);

impl KeyStore for DbKeyStore {
    fn get_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, std::result::Result<Vec<StoredKey>, String>> {
        Box::pin(async move {
            let rows = self
                .0
                .server_keys(server.as_str())
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    Some(StoredKey {
                        server_name: server.to_owned(),
                        key_id: OwnedServerSigningKeyId::try_from(r.key_id.as_str()).ok()?,
                        public_key: r.public_key,
                        valid_until_ts: u64::try_from(r.valid_until_ts).unwrap_or(0),
                        expired_ts: r.expired_ts.and_then(|t| u64::try_from(t).ok()),
                        key_json: r.key_json,
                    })
                })
                .collect())
        })
    }

    fn put_server_keys<'a>(
        &'a self,
        keys: &'a [StoredKey],
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            for k in keys {
                let row = StoredServerKey {
                    key_id: k.key_id.to_string(),
                    public_key: k.public_key.clone(),
                    valid_until_ts: i64::try_from(k.valid_until_ts).unwrap_or(i64::MAX),
                    expired_ts: k.expired_ts.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                    key_json: k.key_json.clone(),
                };
                self.0
                    .store_server_key(k.server_name.as_str(), &row)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

/// The keys of `server` usable for a signature made at `at_ms` (now when `None`).
pub async fn verify_keys_for(
    s: &Services,
    server: &ServerName,
    key_ids: &[String],
    at_ms: Option<i64>,
) -> Result<PublicKeySet> {
    let fed = s.federation()?;
    let ids: Vec<OwnedServerSigningKeyId> = key_ids
        .iter()
        .filter_map(|k| OwnedServerSigningKeyId::try_from(k.as_str()).ok())
        .collect();
    let refs: Vec<&ServerSigningKeyId> = ids.iter().map(|i| i.as_ref()).collect();
    let at = match at_ms {
        Some(ms) => {
            MilliSecondsSinceUnixEpoch(UInt::new_saturating(u64::try_from(ms).unwrap_or(0)))
        }
        None => MilliSecondsSinceUnixEpoch::now(),
    };
    fed.keyring
        .verify_keys(server, &refs, at)
        .await
        .map_err(|e| {
            Error::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                format!("keys of {server}: {e}"),
            )
        })
}

/// Keeps the keyring usable from places that only hold the store.
pub fn store(db: &Db) -> Arc<dyn KeyStore> {
    Arc::new(DbKeyStore(db.clone()))
}
