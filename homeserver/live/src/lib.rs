//! homeserver-live: the live, non-HTTP state of users that every front end shares — typing,
//! the presence state machine, read receipts, unread counts, ignore lists, account-data writes,
//! to-device messages, pusher changes and the lazy-loading bookkeeping of sync.
//!
//! It sits below the handlers (client API, sync, and later federation and application
//! services), above storage and the event stream: a typing EDU from another server and a
//! client's `PUT /typing` end in the same [`typing::Typing`]; nothing here knows HTTP. Each part
//! is a service object holding what it needs; [`Live`] bundles them, cheap to clone.

pub mod account_data;
pub mod device_lists;
pub mod ignore;
pub mod keys;
pub mod lazy;
pub mod presence;
pub mod pushers;
pub mod receipts;
pub mod to_device;
pub mod typing;
pub mod unread;

use std::sync::Arc;

use homeserver_core::streams::EventStream;
use homeserver_storage::Db;

/// Every live service of one server process.
#[derive(Clone)]
pub struct Live {
    pub typing: Arc<typing::Typing>,
    pub presence: Arc<presence::Presence>,
    pub unread: Arc<unread::UnreadCache>,
    pub ignore_lists: Arc<ignore::IgnoreLists>,
    pub account_data: Arc<account_data::AccountData>,
    pub lazy_members: Arc<lazy::LazyMemberCache>,
    pub receipts: Arc<receipts::Receipts>,
    pub to_device: Arc<to_device::ToDevice>,
    pub device_lists: Arc<device_lists::DeviceLists>,
    pub pusher_changes: Arc<pushers::PusherChanges>,
}

impl Live {
    /// Creates the services and starts their timer tasks (typing expiry, presence deadlines).
    pub fn start(
        db: Db,
        stream: Arc<EventStream>,
        presence: presence::PresenceSettings,
        server_name: ruma::OwnedServerName,
    ) -> Self {
        let ignore_lists = Arc::new(ignore::IgnoreLists::new(db.clone(), stream.clone()));
        Self {
            typing: typing::Typing::start(stream.clone()),
            presence: presence::Presence::start(presence, server_name.clone(), db.clone(), stream.clone()),
            unread: Arc::new(unread::UnreadCache::new(db.clone(), stream.clone())),
            receipts: Arc::new(receipts::Receipts::new(db.clone(), stream.clone())),
            to_device: Arc::new(to_device::ToDevice::new(db.clone(), stream.clone(), server_name.clone())),
            device_lists: Arc::new(device_lists::DeviceLists::new(db.clone(), stream.clone())),
            pusher_changes: Arc::default(),
            account_data: Arc::new(account_data::AccountData::new(db, stream, ignore_lists.clone())),
            ignore_lists,
            lazy_members: Arc::new(lazy::LazyMemberCache::default()),
        }
    }
}
