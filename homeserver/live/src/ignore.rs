//! Ignore lists (`m.ignored_user_list`): who each user ignores, cached because every request that
//! returns events needs it.

use std::{collections::HashSet, num::NonZeroUsize, sync::Arc, sync::Mutex};

use homeserver_core::{Error, streams::EventStream};
use homeserver_storage::{Db, events::EventRow};
use lru::LruCache;
use serde_json::Value;

/// The account-data type that holds an ignore list.
pub const IGNORE_LIST_TYPE: &str = "m.ignored_user_list";

/// Ignore lists kept.
const CACHE_ENTRIES: usize = 50_000;

/// The users someone ignores (`m.ignored_user_list`).
#[derive(Debug, Default, Clone)]
pub struct Ignored(HashSet<String>);

impl Ignored {
    /// The list an `m.ignored_user_list` document holds (empty if it holds none).
    pub fn parse(content: &str) -> Self {
        let value: Value = serde_json::from_str(content).unwrap_or_default();
        Self(
            value
                .get("ignored_users")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// Whether `user` is ignored (their invites, receipts, typing and presence are hidden).
    pub fn contains(&self, user: &str) -> bool {
        self.0.contains(user)
    }

    pub fn users(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    /// Whether an event is hidden: everything an ignored user sends except state events, which
    /// the spec keeps so the room does not look different for having ignored someone.
    pub fn hides(&self, event: &EventRow) -> bool {
        event.state_key.is_none() && self.0.contains(&event.sender)
    }
}

/// Recently read ignore lists, each with a stream position it is at least as new as. Entries
/// only ever move forward: a write stores its list at its own position, a read at the position
/// visible before it read, so a slow read cannot put back a list a write replaced.
pub struct IgnoreLists {
    cache: Mutex<LruCache<String, (i64, Ignored)>>,
    db: Db,
    stream: Arc<EventStream>,
}

impl IgnoreLists {
    pub fn new(db: Db, stream: Arc<EventStream>) -> Self {
        let cache = Mutex::new(LruCache::new(NonZeroUsize::new(CACHE_ENTRIES).expect("non-zero")));
        Self { cache, db, stream }
    }

    /// The users `user` ignores.
    pub async fn of(&self, user: &str) -> Result<Ignored, Error> {
        if let Some((_, list)) = self.cache.lock().expect("ignore lists poisoned").get(user) {
            return Ok(list.clone());
        }
        let visible = self.stream.current() as i64;
        let content = self.db.account_data(user, "", IGNORE_LIST_TYPE).await.map_err(Error::from)?;
        let list = content.as_deref().map(Ignored::parse).unwrap_or_default();
        self.offer(user, visible, list.clone());
        Ok(list)
    }

    /// Records the list a write stored at stream position `pos`.
    pub fn offer(&self, user: &str, pos: i64, list: Ignored) {
        let mut cache = self.cache.lock().expect("ignore lists poisoned");
        if cache.peek(user).is_none_or(|(known, _)| *known < pos) {
            cache.put(user.to_owned(), (pos, list));
        }
    }
}
