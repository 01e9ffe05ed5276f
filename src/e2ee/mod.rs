//! End-to-end encryption plumbing: device lists, the key server (`keys`), cross-signing and
//! signatures (`cross_signing`), send-to-device (`to_device`) and server-side key backups
//! (`backup`). SQL lives in storage::keys and storage::room_keys.

pub mod backup;
pub mod cross_signing;
pub mod keys;
pub mod signing;
pub mod to_device;

use ruma::UserId;

use crate::{error::Result, services::Services};

/// Records that a user's device list changed and wakes everyone who shares a room with them.
pub async fn device_list_changed(s: &Services, user_id: &UserId) -> Result<()> {
    let uid = user_id.to_string();
    let mut w =
        s.db.begin_stream(1, crate::storage::StreamKind::DeviceLists)
            .await?;
    sqlx::query("INSERT INTO device_list_changes (stream_id, user_id) VALUES ($1, $2)")
        .bind(w.first)
        .bind(&uid)
        .execute(&mut *w.tx)
        .await?;
    let pos = w.commit().await?;
    let mut users = s.db.users_sharing_rooms(user_id.as_str()).await?;
    users.push(user_id.to_string());
    s.notifier.notify_users(&users, pos);
    crate::federation::edus::device_list_changed(s, user_id).await;
    Ok(())
}
