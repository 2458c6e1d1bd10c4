//! To-device messages (spec: "Send-to-Device messaging"): a client's `PUT /sendToDevice`
//! queues one message per recipient device at one stream position, once per transaction id,
//! and wakes the recipients' syncs; their syncs deliver them (`homeserver-sync`) until a later
//! sync acknowledges them. `*` addresses every device of a user. Messages for other servers'
//! users are stored, in the same transaction, as one `m.direct_to_device` EDU per server
//! (`federation_to_device`), which federation's sender routes and delivers.

use std::{collections::BTreeMap, sync::Arc};

use homeserver_core::{Error, ErrorKind, streams::EventStream, time::now_millis};
use homeserver_storage::{
    Db,
    e2ee::{ToDeviceBatch, ToDeviceMessage},
};

use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

/// Recipients one request may address (devices, after `*` is expanded).
pub const MAX_RECIPIENTS: usize = 10_000;
/// Other servers one request may address (each gets an outbox and a delivery worker).
pub const MAX_DESTINATIONS: usize = 100;
/// Largest `m.direct_to_device` EDU (Synapse's limit): a server's messages are split into
/// EDUs of at most this, and one message larger than it is refused.
pub const MAX_EDU_BYTES: usize = 65_536;

/// A message for another server's user: user, device (or `*`), content JSON.
type RemoteMessage = (String, String, String);

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
        // Other servers' users: `m.direct_to_device` EDUs per server, for federation to send.
        let mut remote: BTreeMap<OwnedServerName, Vec<RemoteMessage>> = BTreeMap::new();
        let mut remote_count = 0;
        for message in messages {
            if message.user.server_name() != self.server_name {
                let device = match &message.devices {
                    Recipient::Device(device) => device.clone(),
                    Recipient::AllDevices => "*".to_owned(),
                };
                remote_count += 1;
                if remote.len() >= MAX_DESTINATIONS && !remote.contains_key(message.user.server_name()) {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("at most {MAX_DESTINATIONS} other servers per request"),
                    ));
                }
                let server = message.user.server_name().to_owned();
                remote.entry(server).or_default().push((message.user.to_string(), device, message.content));
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
            if recipients.len() + remote_count > MAX_RECIPIENTS {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("at most {MAX_RECIPIENTS} devices per request"),
                ));
            }
            if !woken.contains(&message.user) {
                woken.push(message.user);
            }
        }
        if recipients.len() + remote_count > MAX_RECIPIENTS {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("at most {MAX_RECIPIENTS} devices per request"),
            ));
        }
        let reservation = self.stream.reserve(1).await?;
        let pos = reservation.first() as i64;
        let now = now_millis();
        let mut edus = Vec::new();
        for (server, messages) in remote {
            // Unique per sender: this server's position and the time (a restored database may
            // reuse a position; receivers drop a message id they saw before).
            let id = format!("{}.{pos}.{now}", self.server_name);
            for edu in pack_edus(sender.as_str(), event_type, &id, messages)? {
                edus.push((server.to_string(), edu));
            }
        }
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
        self.db.queue_to_device(&batch, &recipients, &edus).await?;
        reservation.complete(woken);
        Ok(())
    }
}

/// One server's messages as `m.direct_to_device` EDUs of at most [`MAX_EDU_BYTES`] each (the
/// `n`th with message id `{id}.{n}`), in order.
fn pack_edus(
    sender: &str,
    event_type: &str,
    id: &str,
    messages: Vec<RemoteMessage>,
) -> Result<Vec<String>, Error> {
    let edu = |users: &Map<String, Value>, n: usize| {
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": event_type, "message_id": format!("{id}.{n}"), "messages": users,
        } })
        .to_string()
    };
    // What an EDU costs besides its messages, and each message besides its content.
    let overhead = edu(&Map::new(), 0).len() + 16;
    let mut out = Vec::new();
    let (mut users, mut size) = (Map::new(), overhead);
    for (user, device, content) in messages {
        let cost = user.len() + device.len() + content.len() + 16;
        if overhead + cost > MAX_EDU_BYTES {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("a to-device message for {user} is too large"),
            ));
        }
        if size + cost > MAX_EDU_BYTES {
            out.push(edu(&users, out.len()));
            (users, size) = (Map::new(), overhead);
        }
        let content: Value = serde_json::from_str(&content).unwrap_or_else(|_| json!({}));
        let devices = users.entry(user).or_insert_with(|| json!({}));
        devices[device] = content;
        size += cost;
    }
    if !users.is_empty() {
        out.push(edu(&users, out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_messages_are_packed_into_bounded_edus() {
        let big = format!("{{\"c\":\"{}\"}}", "x".repeat(20_000));
        let messages: Vec<RemoteMessage> =
            (0..7).map(|i| (format!("@u{i}:b"), format!("D{i}"), big.clone())).collect();
        let edus = pack_edus("@a:a", "m.room.encrypted", "a.5.9", messages).unwrap();
        assert_eq!(edus.len(), 3, "three messages fit in one EDU");
        let mut seen = 0;
        for (n, edu) in edus.iter().enumerate() {
            assert!(edu.len() <= MAX_EDU_BYTES, "{}", edu.len());
            let edu: Value = serde_json::from_str(edu).unwrap();
            assert_eq!(edu["content"]["message_id"], format!("a.5.9.{n}"));
            seen += edu["content"]["messages"].as_object().unwrap().len();
        }
        assert_eq!(seen, 7);
        let huge = format!("{{\"c\":\"{}\"}}", "x".repeat(70_000));
        let refused = pack_edus("@a:a", "t", "i", vec![("@u:b".into(), "D".into(), huge)]);
        assert!(matches!(refused, Err(e) if e.kind == ErrorKind::TooLarge));
    }
}
