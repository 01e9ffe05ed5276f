//! Remote server signing keys and our own key endpoints.
//!
//! - [`Keyring::verify_keys`] gives the public keys of a server valid at a time: from the
//!   [`KeyStore`] cache, else fetched (`GET /_matrix/key/v2/server` directly, then the
//!   configured `trusted_key_servers` through `GET /_matrix/key/v2/query/{server}`). Every
//!   response must be self-signed by a key it lists in `verify_keys` (and notary answers signed
//!   by the notary too). A current key is usable up to its response's `valid_until_ts` (capped at
//!   7 days after fetching); an `old_verify_keys` entry is usable for signatures made before its
//!   `expired_ts`. Expired keys are refetched (at most once a minute per server).
//! - [`build_own_keys_response`] / [`Keyring::own_keys_response`]: our signed
//!   `/_matrix/key/v2/server` answer, with `old_verify_keys` after a rotation.
//! - [`Keyring::notary_query`] / [`Keyring::notary_query_server`]: the notary answers for
//!   `/_matrix/key/v2/query`, from cached responses re-signed by us.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName,
    OwnedServerSigningKeyId, ServerName, ServerSigningKeyId, UInt,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys, get_remote_server_keys_batch::v2::QueryCriteria,
        get_server_keys,
    },
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, PublicKeySet},
};

use crate::{
    ServerSigningKey,
    client::FederationClient,
    error::{BoxFuture, KeyringError},
    request_auth::KeySource,
};

/// Remote keys are trusted at most this long after they were fetched, whatever their
/// `valid_until_ts` says (spec: the lesser of `valid_until_ts` and 7 days).
pub const MAX_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One cached key of a remote server, keyed by `(server_name, key_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub server_name: OwnedServerName,
    pub key_id: OwnedServerSigningKeyId,
    /// The public key, unpadded base64.
    pub public_key: String,
    /// Milliseconds: for a current key, the response's `valid_until_ts` capped at fetch time +
    /// 7 days; for an old key, the response's.
    pub valid_until_ts: u64,
    /// Milliseconds: set for keys listed in `old_verify_keys` (usable for signatures before it).
    pub expired_ts: Option<u64>,
    /// The signed key response that listed this key, as received (JSON text). Served again,
    /// re-signed, by the notary endpoints.
    pub key_json: String,
}

impl StoredKey {
    /// Whether the key can verify a signature made at `at_ms`.
    pub fn usable_at(&self, at_ms: u64) -> bool {
        match self.expired_ts {
            Some(expired) => at_ms < expired,
            None => at_ms <= self.valid_until_ts,
        }
    }
}

/// Storage of remote keys; the server implements it on its database. A table keyed by
/// `(server_name, key_id)` with the other [`StoredKey`] fields as columns is enough.
pub trait KeyStore: Send + Sync {
    /// Every stored key of `server`.
    fn get_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<Vec<StoredKey>, String>>;
    /// Inserts or replaces (on `(server_name, key_id)`) the given keys.
    fn put_server_keys<'a>(&'a self, keys: &'a [StoredKey]) -> BoxFuture<'a, Result<(), String>>;
}

/// An in-memory [`KeyStore`] (tests, or a server without persistence).
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: Mutex<BTreeMap<(String, String), StoredKey>>,
}

impl KeyStore for MemoryKeyStore {
    fn get_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<Vec<StoredKey>, String>> {
        let keys = self
            .keys
            .lock()
            .map(|keys| {
                keys.values()
                    .filter(|k| k.server_name == server)
                    .cloned()
                    .collect()
            })
            .map_err(|e| e.to_string());
        Box::pin(async move { keys })
    }

    fn put_server_keys<'a>(&'a self, keys: &'a [StoredKey]) -> BoxFuture<'a, Result<(), String>> {
        let result = self
            .keys
            .lock()
            .map(|mut map| {
                for k in keys {
                    map.insert((k.server_name.to_string(), k.key_id.to_string()), k.clone());
                }
            })
            .map_err(|e| e.to_string());
        Box::pin(async move { result })
    }
}

/// Where remote keys come from; [`FederationClient`] implements it over the network.
pub trait KeyFetcher: Send + Sync {
    /// `GET /_matrix/key/v2/server` on `server`: the response body.
    fn server_keys<'a>(&'a self, server: &'a ServerName) -> BoxFuture<'a, Result<String, String>>;
    /// `GET /_matrix/key/v2/query/{server}` on `notary`: the `server_keys` entries as JSON text.
    fn notary_server_keys<'a>(
        &'a self,
        notary: &'a ServerName,
        server: &'a ServerName,
        minimum_valid_until_ts: MilliSecondsSinceUnixEpoch,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

impl KeyFetcher for FederationClient {
    fn server_keys<'a>(&'a self, server: &'a ServerName) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let response = self
                .send_unauthenticated(server, get_server_keys::v2::Request::new())
                .await
                .map_err(|e| e.to_string())?;
            Ok(response.server_key.json().get().to_owned())
        })
    }

    fn notary_server_keys<'a>(
        &'a self,
        notary: &'a ServerName,
        server: &'a ServerName,
        minimum_valid_until_ts: MilliSecondsSinceUnixEpoch,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let request =
                get_remote_server_keys::v2::Request::new(server.to_owned(), minimum_valid_until_ts);
            let response = self
                .send_unauthenticated(notary, request)
                .await
                .map_err(|e| e.to_string())?;
            Ok(response
                .server_keys
                .iter()
                .map(|raw| raw.json().get().to_owned())
                .collect())
        })
    }
}

/// A notary we ask for keys when a server cannot be reached directly.
#[derive(Debug, Clone)]
pub struct TrustedKeyServer {
    pub server_name: OwnedServerName,
    /// The notary's own keys (`ed25519:abc` -> public key). Empty: fetch them from the notary
    /// directly (trust on first use).
    pub verify_keys: BTreeMap<String, Base64>,
}

/// One of our previous signing keys, published in `old_verify_keys`.
#[derive(Debug, Clone)]
pub struct OldSigningKey {
    /// `ed25519:<version>`
    pub key_id: String,
    /// Unpadded base64 public key.
    pub public_key: String,
    pub expired_ts: MilliSecondsSinceUnixEpoch,
}

#[derive(Debug, Clone)]
pub struct KeyringConfig {
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// Our previous keys, for `old_verify_keys`.
    pub own_old_keys: Vec<OldSigningKey>,
    /// How long our published keys are valid (`valid_until_ts` = now + this). Default 1 day.
    pub own_key_validity: Duration,
    /// Do not refetch a server's keys more often than this. Default 1 minute.
    pub min_refetch_interval: Duration,
}

impl Default for KeyringConfig {
    fn default() -> Self {
        Self {
            trusted_key_servers: Vec::new(),
            own_old_keys: Vec::new(),
            own_key_validity: Duration::from_secs(24 * 3600),
            min_refetch_interval: Duration::from_secs(60),
        }
    }
}

fn now_ms() -> u64 {
    MilliSecondsSinceUnixEpoch::now().get().into()
}

fn ms(ts: MilliSecondsSinceUnixEpoch) -> u64 {
    ts.get().into()
}

fn ms_ts(value: u64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::new_saturating(value))
}

/// Our signed `/_matrix/key/v2/server` answer.
pub fn build_own_keys_response(
    server_name: &ServerName,
    key: &ServerSigningKey,
    old_keys: &[OldSigningKey],
    valid_until_ts: MilliSecondsSinceUnixEpoch,
) -> Result<Raw<ServerSigningKeys>, KeyringError> {
    let old: serde_json::Map<String, serde_json::Value> = old_keys
        .iter()
        .filter(|k| k.key_id != key.key_id)
        .map(|k| {
            (
                k.key_id.clone(),
                serde_json::json!({ "key": k.public_key, "expired_ts": k.expired_ts }),
            )
        })
        .collect();
    let value = serde_json::json!({
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": { key.key_id.clone(): { "key": key.public_key_base64() } },
        "old_verify_keys": old,
    });
    let invalid = |reason: String| KeyringError::Invalid {
        server: server_name.to_string(),
        reason,
    };
    let mut object: CanonicalJsonObject =
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    key.sign_json(server_name.as_str(), &mut object)?;
    to_raw(&object).map_err(invalid)
}

fn to_raw(object: &CanonicalJsonObject) -> Result<Raw<ServerSigningKeys>, String> {
    serde_json::value::to_raw_value(object)
        .map(Raw::from_json)
        .map_err(|e| e.to_string())
}

/// Verifies the signatures of `entity` on `object` with `keys`: at least one signature by a key
/// in `keys`, and every such signature valid. Other entities' signatures are ignored.
pub fn verify_entity_signature(
    object: &CanonicalJsonObject,
    entity: &str,
    keys: &PublicKeySet,
) -> Result<(), String> {
    let signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(s)) => s,
        _ => return Err("no signatures".into()),
    };
    let Some(entity_signatures) = signatures.get(entity) else {
        return Err(format!("not signed by {entity}"));
    };
    let mut only_entity = object.clone();
    only_entity.insert(
        "signatures".into(),
        CanonicalJsonValue::Object(BTreeMap::from([(
            entity.to_owned(),
            entity_signatures.clone(),
        )])),
    );
    let map: PublicKeyMap = BTreeMap::from([(entity.to_owned(), keys.clone())]);
    ruma::signatures::verify_json(&map, &only_entity).map_err(|e| e.to_string())
}

/// A verified key response.
#[derive(Debug, Clone)]
pub struct VerifiedServerKeys {
    pub keys: ServerSigningKeys,
    pub object: CanonicalJsonObject,
}

/// Parses a key response and checks that it is for `expected` and self-signed by a key in its
/// `verify_keys`.
pub fn verify_server_keys(json: &str, expected: &ServerName) -> Result<VerifiedServerKeys, String> {
    let object: CanonicalJsonObject =
        serde_json::from_str(json).map_err(|e| format!("not canonical JSON: {e}"))?;
    let keys: ServerSigningKeys =
        serde_json::from_str(json).map_err(|e| format!("not a key response: {e}"))?;
    if keys.server_name != expected {
        return Err(format!("response is for {}", keys.server_name));
    }
    let set: PublicKeySet = keys
        .verify_keys
        .iter()
        .map(|(id, k)| (id.to_string(), k.key.clone()))
        .collect();
    if set.is_empty() {
        return Err("no verify_keys".into());
    }
    verify_entity_signature(&object, expected.as_str(), &set)?;
    Ok(VerifiedServerKeys { keys, object })
}

/// The rows to store for a verified response.
fn rows_of(verified: &VerifiedServerKeys, json: &str) -> Vec<StoredKey> {
    let cap = now_ms().saturating_add(MAX_KEY_VALIDITY.as_millis() as u64);
    let valid_until = ms(verified.keys.valid_until_ts).min(cap);
    let server = &verified.keys.server_name;
    let mut rows: Vec<StoredKey> = verified
        .keys
        .verify_keys
        .iter()
        .map(|(id, k)| StoredKey {
            server_name: server.clone(),
            key_id: id.clone(),
            public_key: k.key.encode(),
            valid_until_ts: valid_until,
            expired_ts: None,
            key_json: json.to_owned(),
        })
        .collect();
    rows.extend(
        verified
            .keys
            .old_verify_keys
            .iter()
            .filter(|(id, _)| !verified.keys.verify_keys.contains_key(*id))
            .map(|(id, k)| StoredKey {
                server_name: server.clone(),
                key_id: id.clone(),
                public_key: k.key.encode(),
                valid_until_ts: valid_until,
                expired_ts: Some(ms(k.expired_ts)),
                key_json: json.to_owned(),
            }),
    );
    rows
}

/// The remote key cache and our key endpoints.
pub struct Keyring {
    server_name: OwnedServerName,
    key: Arc<ServerSigningKey>,
    store: Arc<dyn KeyStore>,
    fetcher: Arc<dyn KeyFetcher>,
    config: KeyringConfig,
    last_fetch: Mutex<HashMap<OwnedServerName, Instant>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("server_name", &self.server_name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// `server_name`/`key`: ours. `fetcher`: usually the [`FederationClient`] (in an `Arc`).
    pub fn new(
        server_name: OwnedServerName,
        key: Arc<ServerSigningKey>,
        store: Arc<dyn KeyStore>,
        fetcher: Arc<dyn KeyFetcher>,
        config: KeyringConfig,
    ) -> Self {
        Self {
            server_name,
            key,
            store,
            fetcher,
            config,
            last_fetch: Mutex::new(HashMap::new()),
        }
    }

    /// Our `/_matrix/key/v2/server` answer, valid for `own_key_validity`.
    pub fn own_keys_response(&self) -> Result<Raw<ServerSigningKeys>, KeyringError> {
        let until = now_ms().saturating_add(self.config.own_key_validity.as_millis() as u64);
        build_own_keys_response(
            &self.server_name,
            &self.key,
            &self.config.own_old_keys,
            ms_ts(until),
        )
    }

    fn own_keys_at(&self, at_ms: u64) -> PublicKeySet {
        let mut set = PublicKeySet::new();
        if let Ok(current) = Base64::parse(self.key.public_key_base64()) {
            set.insert(self.key.key_id.clone(), current);
        }
        for old in &self.config.own_old_keys {
            if at_ms < ms(old.expired_ts)
                && let Ok(key) = Base64::parse(&old.public_key)
            {
                set.insert(old.key_id.clone(), key);
            }
        }
        set
    }

    async fn stored(&self, server: &ServerName) -> Result<Vec<StoredKey>, KeyringError> {
        self.store
            .get_server_keys(server)
            .await
            .map_err(KeyringError::Store)
    }

    /// Stores verified rows, keeping an existing current key whose validity is longer.
    async fn store_rows(&self, rows: Vec<StoredKey>) -> Result<(), KeyringError> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let existing = self.stored(&first.server_name).await?;
        let rows: Vec<StoredKey> = rows
            .into_iter()
            .filter(|new| {
                !existing.iter().any(|old| {
                    old.key_id == new.key_id
                        && old.expired_ts.is_none()
                        && new.expired_ts.is_none()
                        && old.valid_until_ts > new.valid_until_ts
                })
            })
            .collect();
        self.store
            .put_server_keys(&rows)
            .await
            .map_err(KeyringError::Store)
    }

    /// The keys of a notary: configured, else cached and valid now, else fetched directly.
    async fn notary_keys(&self, notary: &TrustedKeyServer) -> Result<PublicKeySet, String> {
        if !notary.verify_keys.is_empty() {
            return Ok(notary.verify_keys.clone());
        }
        let now = now_ms();
        let usable = |rows: &[StoredKey]| -> PublicKeySet {
            rows.iter()
                .filter(|k| k.usable_at(now))
                .filter_map(|k| Some((k.key_id.to_string(), Base64::parse(&k.public_key).ok()?)))
                .collect()
        };
        let rows = self
            .stored(&notary.server_name)
            .await
            .map_err(|e| e.to_string())?;
        let set = usable(&rows);
        if !set.is_empty() {
            return Ok(set);
        }
        let json = self.fetcher.server_keys(&notary.server_name).await?;
        let verified = verify_server_keys(&json, &notary.server_name)?;
        let rows = rows_of(&verified, &json);
        self.store_rows(rows.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(usable(&rows))
    }

    /// Fetches the keys of `server`: directly, then through each trusted key server, until a
    /// source gives a verified response. Stores what it gets.
    pub async fn refresh(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: MilliSecondsSinceUnixEpoch,
    ) -> Result<(), KeyringError> {
        if let Ok(mut last) = self.last_fetch.lock() {
            last.insert(server.to_owned(), Instant::now());
        }
        let mut errors = Vec::new();
        let mut direct_stored = false;
        match self.fetcher.server_keys(server).await {
            Ok(json) => match verify_server_keys(&json, server) {
                Ok(verified) => {
                    self.store_rows(rows_of(&verified, &json)).await?;
                    if ms(verified.keys.valid_until_ts) >= ms(minimum_valid_until_ts) {
                        return Ok(());
                    }
                    direct_stored = true;
                    errors.push("direct: response expires too early".to_owned());
                }
                Err(e) => errors.push(format!("direct: {e}")),
            },
            Err(e) => errors.push(format!("direct: {e}")),
        }
        for notary in &self.config.trusted_key_servers {
            if notary.server_name == server {
                continue;
            }
            let notary_name = notary.server_name.as_str();
            let notary_keys = match self.notary_keys(notary).await {
                Ok(keys) if !keys.is_empty() => keys,
                Ok(_) => {
                    errors.push(format!("{notary_name}: no usable notary key"));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{notary_name}: its keys: {e}"));
                    continue;
                }
            };
            let answers = match self
                .fetcher
                .notary_server_keys(&notary.server_name, server, minimum_valid_until_ts)
                .await
            {
                Ok(answers) => answers,
                Err(e) => {
                    errors.push(format!("{notary_name}: {e}"));
                    continue;
                }
            };
            let mut stored_any = false;
            for json in answers {
                let verified = match verify_server_keys(&json, server).and_then(|v| {
                    verify_entity_signature(&v.object, notary_name, &notary_keys).map(|()| v)
                }) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(format!("{notary_name}: {e}"));
                        continue;
                    }
                };
                self.store_rows(rows_of(&verified, &json)).await?;
                stored_any = true;
            }
            if stored_any {
                return Ok(());
            }
        }
        if direct_stored {
            return Ok(());
        }
        Err(KeyringError::Fetch {
            server: server.to_string(),
            reason: errors.join("; "),
        })
    }

    fn may_refetch(&self, server: &ServerName) -> bool {
        self.last_fetch.lock().map_or(true, |last| {
            last.get(server)
                .is_none_or(|t| t.elapsed() >= self.config.min_refetch_interval)
        })
    }

    /// The public keys of `server` usable for a signature made at `at` (e.g. now for request
    /// authentication, the event's `origin_server_ts` for PDUs). When a key in `key_ids` is
    /// missing or not usable, refetches (at most once per `min_refetch_interval`). The result
    /// may still lack some of `key_ids`; verification then fails for those signatures.
    pub async fn verify_keys(
        &self,
        server: &ServerName,
        key_ids: &[&ServerSigningKeyId],
        at: MilliSecondsSinceUnixEpoch,
    ) -> Result<PublicKeySet, KeyringError> {
        let at_ms = ms(at);
        if server == self.server_name {
            return Ok(self.own_keys_at(at_ms));
        }
        let usable = |rows: &[StoredKey]| -> PublicKeySet {
            rows.iter()
                .filter(|k| k.usable_at(at_ms))
                .filter_map(|k| Some((k.key_id.to_string(), Base64::parse(&k.public_key).ok()?)))
                .collect()
        };
        let set = usable(&self.stored(server).await?);
        let complete = !set.is_empty() && key_ids.iter().all(|id| set.contains_key(id.as_str()));
        if complete || !self.may_refetch(server) {
            return Ok(set);
        }
        let minimum = ms_ts(at_ms.max(now_ms()));
        if let Err(e) = self.refresh(server, minimum).await {
            tracing::debug!(%server, error = %e, "key refresh failed");
            if set.is_empty() {
                return Err(e);
            }
        }
        Ok(usable(&self.stored(server).await?))
    }

    /// [`Keyring::verify_keys`] for several servers at once (e.g. the signers of a PDU).
    pub async fn public_key_map(
        &self,
        required: &BTreeMap<OwnedServerName, Vec<OwnedServerSigningKeyId>>,
        at: MilliSecondsSinceUnixEpoch,
    ) -> Result<PublicKeyMap, KeyringError> {
        let mut map = PublicKeyMap::new();
        for (server, ids) in required {
            let ids: Vec<&ServerSigningKeyId> = ids.iter().map(|id| id.as_ref()).collect();
            map.insert(
                server.to_string(),
                self.verify_keys(server, &ids, at).await?,
            );
        }
        Ok(map)
    }

    /// The notary answer for one server (`GET /_matrix/key/v2/query/{server}`): our own keys
    /// for our name; else the cached responses (refetched when none is valid until
    /// `minimum_valid_until_ts`, default now), each re-signed by us.
    pub async fn notary_query_server(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<Vec<Raw<ServerSigningKeys>>, KeyringError> {
        if server == self.server_name {
            return Ok(vec![self.own_keys_response()?]);
        }
        let minimum = minimum_valid_until_ts.map_or_else(now_ms, ms);
        let mut rows = self.stored(server).await?;
        let fresh = rows
            .iter()
            .any(|k| k.expired_ts.is_none() && k.valid_until_ts >= minimum);
        if !fresh && self.may_refetch(server) {
            match self.refresh(server, ms_ts(minimum)).await {
                Ok(()) => rows = self.stored(server).await?,
                Err(e) => tracing::debug!(%server, error = %e, "notary refresh failed"),
            }
        }
        let documents: BTreeSet<&str> = rows.iter().map(|k| k.key_json.as_str()).collect();
        let mut answers = Vec::new();
        for json in documents {
            let mut object: CanonicalJsonObject = match serde_json::from_str(json) {
                Ok(o) => o,
                Err(_) => continue,
            };
            self.key.sign_json(self.server_name.as_str(), &mut object)?;
            answers.push(to_raw(&object).map_err(|reason| KeyringError::Invalid {
                server: server.to_string(),
                reason,
            })?);
        }
        Ok(answers)
    }

    /// The notary answer for `POST /_matrix/key/v2/query`: every requested server's cached
    /// responses (whatever key ids were asked, as the spec allows), re-signed by us. A
    /// criteria's `minimum_valid_until_ts` is the latest over the server's requested keys.
    pub async fn notary_query(
        &self,
        request: &BTreeMap<OwnedServerName, BTreeMap<OwnedServerSigningKeyId, QueryCriteria>>,
    ) -> Result<Vec<Raw<ServerSigningKeys>>, KeyringError> {
        let mut answers = Vec::new();
        for (server, criteria) in request {
            let minimum = criteria
                .values()
                .filter_map(|c| c.minimum_valid_until_ts)
                .max_by_key(|ts| ms(*ts));
            answers.extend(self.notary_query_server(server, minimum).await?);
        }
        Ok(answers)
    }
}

impl KeySource for Keyring {
    fn verify_key<'a>(
        &'a self,
        server: &'a ServerName,
        key_id: &'a ServerSigningKeyId,
    ) -> BoxFuture<'a, Result<Option<Base64>, String>> {
        Box::pin(async move {
            let set = self
                .verify_keys(server, &[key_id], MilliSecondsSinceUnixEpoch::now())
                .await
                .map_err(|e| e.to_string())?;
            Ok(set.get(key_id.as_str()).cloned())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::request_auth::tests::test_key;

    fn sn(s: &str) -> OwnedServerName {
        s.try_into().unwrap()
    }

    /// Serves canned key responses and counts requests.
    #[derive(Default)]
    struct FakeFetcher {
        direct: Mutex<HashMap<String, String>>,
        notary: Mutex<HashMap<(String, String), Vec<String>>>,
        direct_calls: AtomicUsize,
    }

    impl KeyFetcher for FakeFetcher {
        fn server_keys<'a>(
            &'a self,
            server: &'a ServerName,
        ) -> BoxFuture<'a, Result<String, String>> {
            self.direct_calls.fetch_add(1, Ordering::SeqCst);
            let answer = self
                .direct
                .lock()
                .unwrap()
                .get(server.as_str())
                .cloned()
                .ok_or_else(|| "unreachable".to_owned());
            Box::pin(async move { answer })
        }
        fn notary_server_keys<'a>(
            &'a self,
            notary: &'a ServerName,
            server: &'a ServerName,
            _: MilliSecondsSinceUnixEpoch,
        ) -> BoxFuture<'a, Result<Vec<String>, String>> {
            let answer = self
                .notary
                .lock()
                .unwrap()
                .get(&(notary.to_string(), server.to_string()))
                .cloned()
                .ok_or_else(|| "unreachable".to_owned());
            Box::pin(async move { answer })
        }
    }

    fn keys_json(
        server: &str,
        key: &ServerSigningKey,
        old: &[OldSigningKey],
        valid_until_ms: u64,
    ) -> String {
        build_own_keys_response(&sn(server), key, old, ms_ts(valid_until_ms))
            .unwrap()
            .json()
            .get()
            .to_owned()
    }

    fn keyring(fetcher: Arc<FakeFetcher>, config: KeyringConfig) -> Keyring {
        Keyring::new(
            sn("us.org"),
            Arc::new(test_key(1, "us")),
            Arc::new(MemoryKeyStore::default()),
            fetcher,
            config,
        )
    }

    const HOUR: u64 = 3600 * 1000;

    #[test]
    fn own_response_is_self_signed_with_old_keys() {
        let key = test_key(1, "new");
        let old = OldSigningKey {
            key_id: "ed25519:old".into(),
            public_key: test_key(2, "old").public_key_base64(),
            expired_ts: ms_ts(1000),
        };
        let json = keys_json("us.org", &key, &[old], now_ms() + HOUR);
        let verified = verify_server_keys(&json, &sn("us.org")).unwrap();
        assert!(verified.keys.verify_keys.contains_key(key.key_id.as_str()));
        assert_eq!(verified.keys.old_verify_keys.len(), 1);
        assert!(verify_server_keys(&json, &sn("them.org")).is_err());
        // Tampering breaks the self-signature.
        let tampered = json.replace("\"server_name\"", "\"extra\":1,\"server_name\"");
        assert!(verify_server_keys(&tampered, &sn("us.org")).is_err());
        // Signed by a key that is not in verify_keys.
        let mut object: CanonicalJsonObject = serde_json::from_str(&json).unwrap();
        object.remove("signatures");
        test_key(3, "new").sign_json("us.org", &mut object).unwrap();
        let forged = serde_json::to_string(&object).unwrap();
        assert!(verify_server_keys(&forged, &sn("us.org")).is_err());
    }

    #[tokio::test]
    async fn fetches_caches_and_refetches_expired_keys() {
        let remote = test_key(5, "r1");
        let fetcher = Arc::new(FakeFetcher::default());
        fetcher.direct.lock().unwrap().insert(
            "them.org".into(),
            keys_json("them.org", &remote, &[], now_ms() + HOUR),
        );
        let config = KeyringConfig {
            min_refetch_interval: Duration::ZERO,
            ..KeyringConfig::default()
        };
        let ring = keyring(fetcher.clone(), config);
        let id: &ServerSigningKeyId = remote.key_id.as_str().try_into().unwrap();
        let now = MilliSecondsSinceUnixEpoch::now();
        let set = ring.verify_keys(&sn("them.org"), &[id], now).await.unwrap();
        assert_eq!(set[id.as_str()].encode(), remote.public_key_base64());
        // Cached: no second fetch.
        ring.verify_keys(&sn("them.org"), &[id], now).await.unwrap();
        assert_eq!(fetcher.direct_calls.load(Ordering::SeqCst), 1);
        // A signature made after valid_until_ts needs a refetch.
        let later = ms_ts(now_ms() + 2 * HOUR);
        let set = ring
            .verify_keys(&sn("them.org"), &[id], later)
            .await
            .unwrap();
        assert!(set.is_empty(), "the server still says valid for 1 h only");
        assert_eq!(fetcher.direct_calls.load(Ordering::SeqCst), 2);
        // Through the KeySource trait.
        assert!(
            ring.verify_key(&sn("them.org"), id)
                .await
                .unwrap()
                .is_some()
        );
        // Unknown key id triggers a fetch and still fails.
        let unknown: &ServerSigningKeyId = "ed25519:nope".try_into().unwrap();
        assert!(
            ring.verify_key(&sn("them.org"), unknown)
                .await
                .unwrap()
                .is_none()
        );
        // Unreachable server with nothing cached is an error.
        assert!(ring.verify_key(&sn("gone.org"), unknown).await.is_err());
    }

    #[tokio::test]
    async fn rotated_keys_verify_old_signatures_only() {
        let old_key = test_key(6, "old");
        let new_key = test_key(7, "new");
        let rotation = now_ms() - HOUR;
        let fetcher = Arc::new(FakeFetcher::default());
        let old = OldSigningKey {
            key_id: old_key.key_id.clone(),
            public_key: old_key.public_key_base64(),
            expired_ts: ms_ts(rotation),
        };
        fetcher.direct.lock().unwrap().insert(
            "them.org".into(),
            keys_json("them.org", &new_key, &[old], now_ms() + HOUR),
        );
        let ring = keyring(fetcher, KeyringConfig::default());
        let old_id: &ServerSigningKeyId = old_key.key_id.as_str().try_into().unwrap();
        let before = ring
            .verify_keys(&sn("them.org"), &[old_id], ms_ts(rotation - 1000))
            .await
            .unwrap();
        assert!(before.contains_key(old_id.as_str()));
        let after = ring
            .verify_keys(&sn("them.org"), &[old_id], ms_ts(rotation + 1000))
            .await
            .unwrap();
        assert!(!after.contains_key(old_id.as_str()));
        assert!(after.contains_key(new_key.key_id.as_str()));
    }

    #[tokio::test]
    async fn notary_fallback_and_answers() {
        let remote = test_key(8, "r");
        let notary_key = test_key(9, "n");
        let fetcher = Arc::new(FakeFetcher::default());
        // The notary's answer: the remote's response counter-signed by the notary.
        let mut object: CanonicalJsonObject =
            serde_json::from_str(&keys_json("them.org", &remote, &[], now_ms() + HOUR)).unwrap();
        notary_key.sign_json("notary.org", &mut object).unwrap();
        let signed = serde_json::to_string(&object).unwrap();
        fetcher
            .notary
            .lock()
            .unwrap()
            .insert(("notary.org".into(), "them.org".into()), vec![signed]);
        // The notary's own keys are fetched directly (no configured verify_keys).
        fetcher.direct.lock().unwrap().insert(
            "notary.org".into(),
            keys_json("notary.org", &notary_key, &[], now_ms() + HOUR),
        );
        let config = KeyringConfig {
            trusted_key_servers: vec![TrustedKeyServer {
                server_name: sn("notary.org"),
                verify_keys: BTreeMap::new(),
            }],
            ..KeyringConfig::default()
        };
        let ring = keyring(fetcher.clone(), config);
        let id: &ServerSigningKeyId = remote.key_id.as_str().try_into().unwrap();
        assert!(
            ring.verify_key(&sn("them.org"), id)
                .await
                .unwrap()
                .is_some()
        );

        // We answer as a notary: the cached response, now also signed by us.
        let answers = ring
            .notary_query_server(&sn("them.org"), None)
            .await
            .unwrap();
        assert_eq!(answers.len(), 1);
        let json = answers[0].json().get();
        let verified = verify_server_keys(json, &sn("them.org")).unwrap();
        let us = test_key(1, "us");
        let our_keys = PublicKeySet::from([(
            us.key_id.clone(),
            Base64::parse(us.public_key_base64()).unwrap(),
        )]);
        verify_entity_signature(&verified.object, "us.org", &our_keys).unwrap();
        // Our own name: our own response.
        let own = ring
            .notary_query(&BTreeMap::from([(sn("us.org"), BTreeMap::new())]))
            .await
            .unwrap();
        verify_server_keys(own[0].json().get(), &sn("us.org")).unwrap();
    }

    #[tokio::test]
    async fn notary_with_bad_signature_is_rejected() {
        let remote = test_key(10, "r");
        let fetcher = Arc::new(FakeFetcher::default());
        // Countersigned by someone else's key under the notary's name.
        let mut object: CanonicalJsonObject =
            serde_json::from_str(&keys_json("them.org", &remote, &[], now_ms() + HOUR)).unwrap();
        test_key(11, "n")
            .sign_json("notary.org", &mut object)
            .unwrap();
        fetcher.notary.lock().unwrap().insert(
            ("notary.org".into(), "them.org".into()),
            vec![serde_json::to_string(&object).unwrap()],
        );
        let configured = test_key(12, "n");
        let config = KeyringConfig {
            trusted_key_servers: vec![TrustedKeyServer {
                server_name: sn("notary.org"),
                verify_keys: BTreeMap::from([(
                    configured.key_id.clone(),
                    Base64::parse(configured.public_key_base64()).unwrap(),
                )]),
            }],
            ..KeyringConfig::default()
        };
        let ring = keyring(fetcher, config);
        let id: &ServerSigningKeyId = remote.key_id.as_str().try_into().unwrap();
        assert!(ring.verify_key(&sn("them.org"), id).await.is_err());
    }
}
