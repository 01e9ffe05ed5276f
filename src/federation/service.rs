//! The federation services a running server holds: the outbound client, the keyring, and the
//! durable sender over the `federation_outbox` table.

use std::sync::Arc;

use ganglion_federation::{
    ServerSigningKey,
    client::{FederationClient, FederationConfig as ClientConfig},
    keyring::{Keyring, KeyringConfig, OldSigningKey, TrustedKeyServer},
    sender::{self, ItemKind, QueueItem, QueueStore, SenderConfig, SenderHandle, StoreError},
};
use ruma::{OwnedServerName, ServerName};

use crate::{
    config::Config,
    error::{Error, Result},
    storage::Db,
};

pub struct Federation {
    pub client: Arc<FederationClient>,
    pub keyring: Arc<Keyring>,
    pub sender: SenderHandle,
    /// Inbound requests per origin server.
    pub limiter: governor::DefaultKeyedRateLimiter<String>,
}

/// The sender's queue on the database; rows are added by the event writer (and EDU producers)
/// in the transactions that create them.
pub struct DbQueue(pub Db);

impl QueueStore for DbQueue {
    async fn pending(
        &self,
        destination: &ServerName,
        max_pdus: usize,
        max_edus: usize,
    ) -> std::result::Result<Vec<QueueItem>, StoreError> {
        let rows = self
            .0
            .outbox_pending(destination.as_str(), max_pdus as i64, max_edus as i64)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(QueueItem {
                    id: r.id,
                    kind: if r.kind == "edu" {
                        ItemKind::Edu
                    } else {
                        ItemKind::Pdu
                    },
                    json: serde_json::value::RawValue::from_string(r.json).ok()?,
                })
            })
            .collect())
    }

    async fn ack(
        &self,
        destination: &ServerName,
        ids: &[i64],
    ) -> std::result::Result<(), StoreError> {
        self.0
            .outbox_ack(destination.as_str(), ids)
            .await
            .map_err(|e| e.to_string().into())
    }

    async fn destinations_with_pending(
        &self,
    ) -> std::result::Result<Vec<OwnedServerName>, StoreError> {
        let names = self
            .0
            .outbox_destinations()
            .await
            .map_err(|e| e.to_string())?;
        Ok(names
            .into_iter()
            .filter_map(|n| OwnedServerName::try_from(n).ok())
            .collect())
    }
}

/// Builds the federation services, or `None` when federation is off.
pub fn start(config: &Config, db: &Db, key: Arc<ServerSigningKey>) -> Result<Option<Federation>> {
    let f = &config.federation;
    if !f.enabled {
        return Ok(None);
    }
    let client_config = ClientConfig {
        ca_file: f.ca_file.clone(),
        allowed_servers: f.allowed_servers.clone(),
        denied_servers: f.denied_servers.clone(),
        allow_private_networks: f.allow_private_networks,
        ..ClientConfig::default()
    };
    let client = Arc::new(
        FederationClient::new(config.server_name.clone(), key.clone(), client_config)
            .map_err(|e| Error::internal(format!("federation client: {e}")))?,
    );
    let trusted: Vec<TrustedKeyServer> = f
        .trusted_key_servers
        .iter()
        .filter_map(|name| {
            Some(TrustedKeyServer {
                server_name: OwnedServerName::try_from(name.as_str()).ok()?,
                verify_keys: Default::default(),
            })
        })
        .collect();
    let own_old_keys =
        ganglion_federation::keys::load_old_keys(&config.data_dir.join("old_signing_keys"))
            .map_err(Error::internal)?
            .into_iter()
            .map(|(key_id, public_key, expired)| OldSigningKey {
                key_id,
                public_key,
                expired_ts: ruma::MilliSecondsSinceUnixEpoch(ruma::UInt::new_saturating(expired)),
            })
            .collect();
    let keyring = Arc::new(Keyring::new(
        config.server_name.clone(),
        key,
        super::keys::store(db),
        client.clone(),
        KeyringConfig {
            trusted_key_servers: trusted,
            own_old_keys,
            ..KeyringConfig::default()
        },
    ));
    let sender = sender::start(
        Arc::new(DbQueue(db.clone())),
        client.clone(),
        SenderConfig::default(),
    );
    let per_second = std::num::NonZeroU32::new(f.inbound_requests_per_second)
        .unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(f.inbound_burst).unwrap_or(std::num::NonZeroU32::MIN);
    let limiter =
        governor::RateLimiter::keyed(governor::Quota::per_second(per_second).allow_burst(burst));
    Ok(Some(Federation {
        client,
        keyring,
        sender,
        limiter,
    }))
}
