//! E2EE key storage read by /sync: to-device inbox, one-time key counts, device-list changes.

use serde_json::Value;
use sqlx::Row;

use super::Db;
use crate::error::Result;

impl Db {
    /// Pending to-device messages for a device after `since`, oldest first.
    pub async fn to_device_since(
        &self,
        user_id: &str,
        device_id: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Value)>> {
        let rows = sqlx::query(
            "SELECT stream_id, sender, type, content FROM to_device WHERE user_id = $1 AND device_id = $2
             AND stream_id > $3 ORDER BY stream_id LIMIT $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let content: Value = serde_json::from_str(&r.try_get::<String, _>(3)?)?;
                Ok((
                    r.try_get(0)?,
                    serde_json::json!({"sender": r.try_get::<String, _>(1)?, "type": r.try_get::<String, _>(2)?, "content": content}),
                ))
            })
            .collect()
    }

    /// Deletes to-device messages the device has acknowledged (by syncing past them). Looks
    /// first, so that the usual sync with nothing to acknowledge writes nothing.
    pub async fn ack_to_device(&self, user_id: &str, device_id: &str, upto: i64) -> Result<()> {
        let any = sqlx::query(
            "SELECT 1 FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3 LIMIT 1",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .fetch_optional(&self.pool)
        .await?;
        if any.is_none() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Unclaimed one-time key counts per algorithm.
    pub async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND fallback = 0
             AND used = 0 GROUP BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Algorithms with an unused fallback key.
    pub async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT algorithm FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND fallback = 1 AND used = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Users among `users` whose device lists changed after `since`.
    pub async fn device_lists_changed_since(
        &self,
        users: &[String],
        since: i64,
    ) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        let changed: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(changed.into_iter().filter(|u| users.contains(u)).collect())
    }
}

/// A signature stored apart from the object it signs (merged in when keys are queried).
#[derive(Debug, Clone)]
pub struct KeySignature {
    pub target_user_id: String,
    /// A device id, or the public key of a cross-signing key.
    pub target_key_id: String,
    pub signer_user_id: String,
    /// `ed25519:<key>` as it appears in `signatures`.
    pub signer_key_id: String,
    pub signature: String,
}

/// A device's stored identity keys and display name.
#[derive(Debug, Clone)]
pub struct StoredDeviceKeys {
    pub device_id: String,
    pub json: String,
    pub display_name: Option<String>,
}

/// One to-device message to deliver.
#[derive(Debug, Clone)]
pub struct ToDeviceMessage {
    pub user_id: String,
    pub device_id: String,
    pub content: String,
}

impl Db {
    /// Stores a device's identity keys. Returns whether they changed; a change drops the
    /// signatures made over the previous keys.
    pub async fn set_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        json: &str,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let old = sqlx::query("SELECT json FROM device_keys WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(old) = old
            && old.try_get::<String, _>(0)? == json
        {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO device_keys (user_id, device_id, json) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, device_id) DO UPDATE SET json = excluded.json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(json)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Identity keys of a user's existing devices, ordered by device id.
    pub async fn device_keys(&self, user_id: &str) -> Result<Vec<StoredDeviceKeys>> {
        let rows = sqlx::query(
            "SELECT k.device_id, k.json, d.display_name FROM device_keys k
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredDeviceKeys {
                    device_id: r.try_get(0)?,
                    json: r.try_get(1)?,
                    display_name: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Adds one-time keys `(key_id, algorithm, json)`. A key id already present with other
    /// content is an error (returned as `Ok(Some(key_id))`, nothing stored); the same key again
    /// is ignored.
    pub async fn add_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[(String, String, String)],
    ) -> Result<Option<String>> {
        let mut tx = self.begin().await?;
        for (key_id, algorithm, json) in keys {
            let res = sqlx::query(
                "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, json, fallback, used)
                 VALUES ($1, $2, $3, $4, $5, 0, 0) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(key_id)
            .bind(algorithm)
            .bind(json)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                let row = sqlx::query(
                    "SELECT json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3 AND fallback = 0",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(key_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = row
                    && row.try_get::<String, _>(0)? != *json
                {
                    return Ok(Some(key_id.clone()));
                }
            }
        }
        tx.commit().await?;
        Ok(None)
    }

    /// Sets the fallback key for an algorithm, replacing the previous one. Re-uploading the
    /// current key unchanged keeps its used flag.
    pub async fn set_fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        key_id: &str,
        algorithm: &str,
        json: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let same = sqlx::query(
            "SELECT 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3
             AND fallback = 1 AND json = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(key_id)
        .bind(json)
        .fetch_optional(&mut *tx)
        .await?;
        if same.is_some() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND fallback = 1
             AND (algorithm = $3 OR key_id = $4)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, json, fallback, used)
             VALUES ($1, $2, $3, $4, $5, 1, 0)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(key_id)
        .bind(algorithm)
        .bind(json)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims one unused one-time key of `algorithm`, or else the fallback key (which stays
    /// available but is marked used). The claim is a conditional update, so two claimers never
    /// receive the same one-time key. Returns `(key_id, json)`.
    pub async fn claim_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        for _ in 0..10 {
            let row = sqlx::query(
                "UPDATE one_time_keys SET used = 1
                 WHERE user_id = $1 AND device_id = $2 AND fallback = 0 AND used = 0 AND key_id = (
                    SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2
                    AND algorithm = $3 AND fallback = 0 AND used = 0 ORDER BY key_id LIMIT 1)
                 RETURNING key_id, json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&self.writer)
            .await?;
            if let Some(row) = row {
                return Ok(Some((row.try_get(0)?, row.try_get(1)?)));
            }
            // Lost a race for the last candidate? Try again while unused keys remain.
            let left = sqlx::query(
                "SELECT 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2
                 AND algorithm = $3 AND fallback = 0 AND used = 0 LIMIT 1",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&self.writer)
            .await?;
            if left.is_none() {
                break;
            }
        }
        let row = sqlx::query(
            "UPDATE one_time_keys SET used = 1
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND fallback = 1
             RETURNING key_id, json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&self.writer)
        .await?;
        match row {
            Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
            None => Ok(None),
        }
    }

    /// A user's cross-signing key of `key_type` (`master`, `self_signing`, `user_signing`).
    pub async fn cross_signing_key(&self, user_id: &str, key_type: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2")
                .bind(user_id)
                .bind(key_type)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(r) => Ok(Some(r.try_get(0)?)),
            None => Ok(None),
        }
    }

    /// Stores cross-signing keys `(key_type, json)` in one transaction.
    pub async fn set_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(&str, String)],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for (key_type, json) in keys {
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, key_type, json) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, key_type) DO UPDATE SET json = excluded.json",
            )
            .bind(user_id)
            .bind(*key_type)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stored signatures over a user's device keys and cross-signing keys.
    pub async fn key_signatures(&self, target_user_id: &str) -> Result<Vec<KeySignature>> {
        let rows = sqlx::query(
            "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM key_signatures
             WHERE target_user_id = $1",
        )
        .bind(target_user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeySignature {
                    target_user_id: target_user_id.to_owned(),
                    target_key_id: r.try_get(0)?,
                    signer_user_id: r.try_get(1)?,
                    signer_key_id: r.try_get(2)?,
                    signature: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Stores signatures (replacing an earlier one by the same signer key).
    pub async fn add_key_signatures(&self, sigs: &[KeySignature]) -> Result<()> {
        let mut tx = self.begin().await?;
        for s in sigs {
            sqlx::query(
                "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(&s.target_user_id)
            .bind(&s.target_key_id)
            .bind(&s.signer_user_id)
            .bind(&s.signer_key_id)
            .bind(&s.signature)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Queues to-device messages from `sender` (idempotent per sender device and `txn_id`).
    /// Returns the stream position written, or `None` when the transaction was seen before.
    pub async fn send_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: &[ToDeviceMessage],
    ) -> Result<Option<i64>> {
        let mut w = self
            .begin_stream(messages.len() as i64, super::StreamKind::ToDevice)
            .await?;
        let fresh = sqlx::query(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(sender)
        .bind(sender_device)
        .bind(txn_id)
        .execute(&mut *w.tx)
        .await?;
        if fresh.rows_affected() == 0 {
            return Ok(None);
        }
        for (i, m) in messages.iter().enumerate() {
            sqlx::query(
                "INSERT INTO to_device (stream_id, user_id, device_id, sender, type, content)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(w.first + i as i64)
            .bind(&m.user_id)
            .bind(&m.device_id)
            .bind(sender)
            .bind(event_type)
            .bind(&m.content)
            .execute(&mut *w.tx)
            .await?;
        }
        Ok(Some(w.commit().await?))
    }

    /// Users whose device lists changed in the stream range `(from, to]`.
    pub async fn device_lists_changed_between(&self, from: i64, to: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > $1 AND stream_id <= $2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
