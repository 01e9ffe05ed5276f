//! Send-to-device messaging between local devices.

use ruma::{
    DeviceId, UserId, api::client::to_device::send_event_to_device::v3::Messages,
    to_device::DeviceIdOrAllDevices,
};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::keys::ToDeviceMessage,
};

/// Queues `messages` for their target devices (idempotent per sending device and `txn_id`).
/// Messages for users of other servers go out as `m.direct_to_device` EDUs; messages for
/// unknown local users or devices are dropped.
pub async fn send(
    s: &Services,
    sender: &UserId,
    sender_device: &DeviceId,
    event_type: &str,
    txn_id: &str,
    messages: &Messages,
) -> Result<()> {
    let mut out = Vec::new();
    let mut users = Vec::new();
    let mut remote: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for (user_id, targets) in messages {
        if !s.is_local(user_id) {
            let entry = remote.entry(user_id.to_string()).or_default();
            for (target, content) in targets {
                let content: serde_json::Value = serde_json::from_str(content.json().get())
                    .map_err(|e| Error::bad_json(format!("to-device content: {e}")))?;
                if !content.is_object() {
                    return Err(Error::bad_json("to-device content must be an object"));
                }
                let target = match target {
                    DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
                    DeviceIdOrAllDevices::DeviceId(d) => d.to_string(),
                };
                entry.insert(target, content);
            }
            continue;
        }
        let devices: Vec<String> =
            s.db.devices(user_id.as_str())
                .await?
                .into_iter()
                .map(|d| d.device_id)
                .collect();
        for (target, content) in targets {
            let content: serde_json::Value = serde_json::from_str(content.json().get())
                .map_err(|e| Error::bad_json(format!("to-device content: {e}")))?;
            if !content.is_object() {
                return Err(Error::bad_json("to-device content must be an object"));
            }
            let content = content.to_string();
            let chosen: Vec<&String> = match target {
                DeviceIdOrAllDevices::AllDevices => devices.iter().collect(),
                DeviceIdOrAllDevices::DeviceId(d) => devices
                    .iter()
                    .filter(|x| x.as_str() == d.as_str())
                    .collect(),
            };
            for device_id in chosen {
                out.push(ToDeviceMessage {
                    user_id: user_id.to_string(),
                    device_id: device_id.clone(),
                    content: content.clone(),
                });
            }
        }
        if !users.contains(&user_id.to_string()) {
            users.push(user_id.to_string());
        }
    }
    let written =
        s.db.send_to_device(
            sender.as_str(),
            sender_device.as_str(),
            txn_id,
            event_type,
            &out,
        )
        .await?;
    if let Some(pos) = written
        && !out.is_empty()
    {
        s.notifier.notify_users(&users, pos);
    }
    if written.is_some() && !remote.is_empty() {
        let message_id = crate::federation::edus::to_device_message_id(
            sender.as_str(),
            sender_device.as_str(),
            txn_id,
        );
        crate::federation::edus::direct_to_device(
            s,
            sender.as_str(),
            event_type,
            &message_id,
            &remote,
        )
        .await;
    }
    Ok(())
}
