//! Devices: listing (with live last-seen data), renaming and deletion.
//!
//! Last-seen tracking is kept cheap: every authenticated request updates an in-memory entry, and
//! the `devices` row is written at most once per [`WRITE_EVERY_MS`] per device (or when the IP
//! changes), in the background. Listings overlay the in-memory values, so they are always current.

use std::{collections::HashMap, sync::Mutex};

use ruma::UserId;

use crate::{
    error::{Error, Result},
    services::Services,
    storage::{devices::Device, now_ms},
};

/// How often a device's last-seen row is written while it is in use.
pub const WRITE_EVERY_MS: i64 = 5 * 60 * 1000;
/// Longest device display name accepted (as Synapse).
pub const MAX_DISPLAY_NAME_LEN: usize = 100;

#[derive(Debug, Clone)]
struct Seen {
    ts: i64,
    ip: Option<String>,
    written_ts: i64,
    written_ip: Option<String>,
}

/// In-memory last use of each device: user -> device -> seen.
#[derive(Default)]
pub struct DeviceActivity {
    inner: Mutex<HashMap<String, HashMap<String, Seen>>>,
}

impl DeviceActivity {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Seen>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a use now; returns what to write when the stored row is due for a refresh.
    fn seen(&self, user_id: &str, device_id: &str, ip: Option<String>) -> Option<Seen> {
        let now = now_ms();
        let mut g = self.lock();
        let devices = match g.get_mut(user_id) {
            Some(d) => d,
            None => g.entry(user_id.to_owned()).or_default(),
        };
        let entry = match devices.get_mut(device_id) {
            Some(e) => e,
            None => devices.entry(device_id.to_owned()).or_insert(Seen {
                ts: now,
                ip: None,
                written_ts: 0,
                written_ip: None,
            }),
        };
        entry.ts = now;
        if ip.is_some() {
            entry.ip = ip;
        }
        if now - entry.written_ts >= WRITE_EVERY_MS || entry.ip != entry.written_ip {
            entry.written_ts = now;
            entry.written_ip = entry.ip.clone();
            return Some(entry.clone());
        }
        None
    }

    fn overlay(&self, user_id: &str, device: &mut Device) {
        let g = self.lock();
        if let Some(seen) = g.get(user_id).and_then(|d| d.get(&device.device_id)) {
            if device.last_seen_ts.is_none_or(|t| t < seen.ts) {
                device.last_seen_ts = Some(seen.ts);
            }
            if seen.ip.is_some() {
                device.last_seen_ip = seen.ip.clone();
            }
        }
    }

    fn forget(&self, user_id: &str, device_id: &str) {
        let mut g = self.lock();
        if let Some(d) = g.get_mut(user_id) {
            d.remove(device_id);
            if d.is_empty() {
                g.remove(user_id);
            }
        }
    }
}

/// Called for every request authenticated by an access token. Never waits for the database.
pub fn record_use(s: &Services, user_id: &str, device_id: &str, ip: Option<String>) {
    let Some(seen) = s.device_activity.seen(user_id, device_id, ip) else {
        return;
    };
    let db = s.db.clone();
    let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
    tokio::spawn(async move {
        if let Err(e) = db
            .touch_device(&user_id, &device_id, seen.ts, seen.ip.as_deref())
            .await
        {
            tracing::warn!(%user_id, %device_id, "recording device use failed: {e}");
        }
    });
}

/// The user's devices, with current last-seen data.
pub async fn list(s: &Services, user_id: &UserId) -> Result<Vec<Device>> {
    let mut devices = s.db.devices(user_id.as_str()).await?;
    for d in &mut devices {
        s.device_activity.overlay(user_id.as_str(), d);
    }
    Ok(devices)
}

/// One of the user's devices; `M_NOT_FOUND` when the user has no such device.
pub async fn get(s: &Services, user_id: &UserId, device_id: &str) -> Result<Device> {
    let mut d =
        s.db.device(user_id.as_str(), device_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown device"))?;
    s.device_activity.overlay(user_id.as_str(), &mut d);
    Ok(d)
}

/// Renames a device (`None` leaves the name as it is). The name is part of the device keys
/// others see, so the device list changes.
pub async fn rename(
    s: &Services,
    user_id: &UserId,
    device_id: &str,
    name: Option<&str>,
) -> Result<()> {
    let current =
        s.db.device(user_id.as_str(), device_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown device"))?;
    let Some(name) = name else {
        return Ok(());
    };
    if name.chars().count() > MAX_DISPLAY_NAME_LEN {
        return Err(Error::invalid_param(format!(
            "Device display name is too long (max {MAX_DISPLAY_NAME_LEN})"
        )));
    }
    if current.display_name.as_deref() == Some(name) {
        return Ok(());
    }
    s.db.rename_device(user_id.as_str(), device_id, Some(name))
        .await?;
    crate::e2ee::device_list_changed(s, user_id).await
}

/// Whether the user has this device.
pub async fn exists(s: &Services, user_id: &UserId, device_id: &str) -> Result<bool> {
    Ok(s.db.device(user_id.as_str(), device_id).await?.is_some())
}

/// Deletes devices of the user (unknown ids are skipped): their access tokens, device keys,
/// one-time and fallback keys and pending to-device messages go too, and the device list
/// changes once.
pub async fn delete(s: &Services, user_id: &UserId, device_ids: &[String]) -> Result<()> {
    let mut deleted = false;
    for device_id in device_ids {
        if !exists(s, user_id, device_id).await? {
            continue;
        }
        s.db.delete_device(user_id.as_str(), device_id).await?;
        s.device_activity.forget(user_id.as_str(), device_id);
        deleted = true;
    }
    if deleted {
        crate::e2ee::device_list_changed(s, user_id).await?;
    }
    Ok(())
}
