//! To-device messages (spec: "Send-to-Device messaging"): a client's `PUT /sendToDevice`
//! queues one message per recipient device at one stream position, once per transaction id,
//! and wakes the recipients' syncs; their syncs deliver them (`homeserver-sync`) until a later
//! sync acknowledges them. `*` addresses every device of a user. Messages for other servers'
//! users are stored, in the same transaction, as one `m.direct_to_device` EDU per server
//! (`federation_to_device`), which federation's sender routes and delivers.

use std::sync::Arc;

use homeserver_core::{Error, ErrorKind, streams::EventStream, time::now_millis};
use homeserver_storage::{
    Db,
    e2ee::{ToDeviceBatch, ToDeviceMessage},
};
use std::collections::BTreeMap;

use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

/// Recipients one request may address (devices, after `*` is expanded).
pub const MAX_RECIPIENTS: usize = 10_000;

/// Who a message goes to: one device, or all of a user's devices.
#[derive(Debug, Clone)]
pub enum Recipient {
    Device(String),
    AllDevices,
}

/// One message of a request: the recipient user, which of their devices, the content.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub user: OwnedUserId,
    pub devices: Recipient,
    pub content: String,
}

pub struct ToDevice {
    db: Db,
    stream: Arc<EventStream>,
    server_name: OwnedServerName,
}

impl ToDevice {
    pub fn new(db: Db, stream: Arc<EventStream>, server_name: OwnedServerName) -> Self {
        Self { db, stream, server_name }
    }

    /// Queues the messages of one `sendToDevice` request (a repeated transaction id queues
    /// nothing again). Durable when this returns.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &str,
        event_type: &str,
        txn_id: &str,
        messages: Vec<Outgoing>,
    ) -> Result<(), Error> {
        let mut recipients = Vec::new();
        let mut woken: Vec<OwnedUserId> = Vec::new();
        // Other servers' users: one `m.direct_to_device` EDU per server, for federation to send.
        let mut remote: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
        for message in messages {
            if message.user.server_name() != self.server_name {
                let device = match &message.devices {
                    Recipient::Device(device) => device.clone(),
                    Recipient::AllDevices => "*".to_owned(),
                };
                let content: Value = serde_json::from_str(&message.content).unwrap_or_else(|_| json!({}));
                let users = remote.entry(message.user.server_name().to_owned()).or_default();
                let devices = users.entry(message.user.to_string()).or_insert_with(|| json!({}));
                devices[device] = content;
                continue;
            }
            let devices = match message.devices {
                Recipient::Device(device) => vec![device],
                Recipient::AllDevices => {
                    self.db.devices(message.user.as_str()).await?.into_iter().map(|d| d.device_id).collect()
                }
            };
            for device_id in devices {
                recipients.push(ToDeviceMessage {
                    user_id: message.user.to_string(),
                    device_id,
                    content: message.content.clone(),
                });
            }
            if recipients.len() > MAX_RECIPIENTS {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("at most {MAX_RECIPIENTS} devices per request"),
                ));
            }
            if !woken.contains(&message.user) {
                woken.push(message.user);
            }
        }
        let reservation = self.stream.reserve(1).await?;
        let pos = reservation.first() as i64;
        let remote: Vec<(String, String)> = remote
            .into_iter()
            .map(|(server, users)| {
                let edu = json!({ "edu_type": "m.direct_to_device", "content": {
                    "sender": sender, "type": event_type,
                    // Unique per sender: the position is this server's, once.
                    "message_id": format!("{}.{pos}", self.server_name),
                    "messages": users,
                } });
                (server.to_string(), edu.to_string())
            })
            .collect();
        let scope = format!("sendToDevice/{event_type}");
        let batch = ToDeviceBatch {
            sender: sender.as_str(),
            sender_device,
            txn_scope: &scope,
            txn_id,
            event_type,
            pos,
            now_ms: now_millis() as i64,
        };
        self.db.queue_to_device(&batch, &recipients, &remote).await?;
        reservation.complete(woken);
        Ok(())
    }
}
