//! Unread notification counts (`unread_notifications`, `unread_thread_notifications`), counted
//! from the push actions the room pipeline stored, after the user's read receipts.
//!
//! Where counting starts: an event in the main timeline is read once an unthreaded receipt or
//! a `main` receipt is at or after it; an event in a thread once an unthreaded receipt or that
//! thread's receipt is; nothing before the user's stay in the room began counts (as Synapse
//! counts). Ignored users' events never count.
//!
//! Counting every unread push action on every sync would make a long-unread room cost O(unread)
//! per sync and per long-poll wake-up. [`UnreadCache`] keeps each (user, room)'s counts with the
//! stream position they cover and, on the next sync, adds only the actions after it. The cached
//! counts are dropped — and counted afresh from the receipts on — when what they were counted
//! against changes: the receipts, the stay, the ignore list, or a redaction in the room since
//! (a recalled message takes its push actions with it). Everything is derived from the
//! database, so each process of a deployment may keep its own cache.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use homeserver_core::{
    Error,
    streams::{
        EventStream,
        watermarks::{Mark, user_in_room},
    },
};
use homeserver_storage::{Db, receipts::ReceiptRow};
use lru::LruCache;

use crate::ignore::Ignored;

/// (user, room) pairs whose counts are kept.
const CACHE_ENTRIES: usize = 50_000;

/// Unread counts of a user in a room: `(notifications, highlights)` for the main timeline (or
/// everything when threads are not counted apart), and per thread.
pub struct UnreadCounts {
    pub main: (u64, u64),
    pub threads: Vec<(String, u64, u64)>,
}

/// Where counting starts, from the user's receipts and stay.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bounds {
    /// The newest unthreaded receipt, or the start of the stay if that is newer.
    unthreaded: i64,
    /// The newest receipt per thread (`main` for the main timeline).
    threads: BTreeMap<String, i64>,
}

impl Bounds {
    fn of(receipts: &[ReceiptRow], joined_at: i64) -> Self {
        let mut unthreaded = joined_at;
        let mut threads = BTreeMap::new();
        for r in receipts.iter().filter(|r| r.receipt_type == "m.read" || r.receipt_type == "m.read.private")
        {
            if r.thread_id.is_empty() {
                unthreaded = unthreaded.max(r.event_pos);
            } else {
                let pos = threads.entry(r.thread_id.clone()).or_insert(0);
                *pos = (*pos).max(r.event_pos);
            }
        }
        Self { unthreaded, threads }
    }

    /// The position after which an event of `thread` (None: the main timeline) is unread.
    fn read_up_to(&self, thread: Option<&str>) -> i64 {
        let own = self.threads.get(thread.unwrap_or("main")).copied().unwrap_or(0);
        self.unthreaded.max(own)
    }
}

/// Counts by thread (None: the main timeline), covering push actions up to `upto`.
#[derive(Clone)]
struct Counted {
    /// The user's receipts in the room, as read when the stream was at `receipts_at`.
    receipts: Vec<ReceiptRow>,
    receipts_at: i64,
    bounds: Bounds,
    ignored: u64,
    upto: i64,
    by_thread: HashMap<Option<String>, (u64, u64)>,
}

/// Counts unread notifications, keeping those of recently synced (user, room) pairs.
pub struct UnreadCache {
    kept: Mutex<LruCache<(String, String), Counted>>,
    db: Db,
    stream: Arc<EventStream>,
}

fn fingerprint(ignored: &Ignored) -> u64 {
    let mut users: Vec<&String> = ignored.users().collect();
    users.sort_unstable();
    let mut hasher = DefaultHasher::new();
    users.hash(&mut hasher);
    hasher.finish()
}

impl UnreadCache {
    pub fn new(db: Db, stream: Arc<EventStream>) -> Self {
        let kept = Mutex::new(LruCache::new(NonZeroUsize::new(CACHE_ENTRIES).expect("non-zero")));
        Self { kept, db, stream }
    }

    /// The unread counts of `user` in `room_id` as of stream position `now`; the user's stay began
    /// at `joined_at`.
    pub async fn counts(
        &self,
        user: &str,
        room_id: &str,
        joined_at: i64,
        per_thread: bool,
        ignored: &Ignored,
        now: i64,
    ) -> Result<UnreadCounts, Error> {
        let key = (user.to_owned(), room_id.to_owned());
        let cached = self.kept.lock().expect("unread cache poisoned").get(&key).cloned();
        // The receipts counted against are reread only when the user's receipt watermark in the
        // room says they may have changed since they were read.
        let marks = self.stream.marks();
        let receipts = match &cached {
            Some(c)
                if c.receipts_at <= now
                    && marks.cover(c.receipts_at as u64)
                    && !marks.changed_after(
                        Mark::UserReceipts,
                        &user_in_room(user, room_id),
                        c.receipts_at as u64,
                    ) =>
            {
                c.receipts.clone()
            }
            _ => self.db.user_receipts(room_id, user).await.map_err(Error::from)?,
        };
        let bounds = Bounds::of(&receipts, joined_at);
        let ignored_fp = fingerprint(ignored);
        let fresh = || Counted {
            receipts: Vec::new(),
            receipts_at: 0,
            bounds: bounds.clone(),
            ignored: ignored_fp,
            upto: bounds.unthreaded,
            by_thread: HashMap::new(),
        };
        let mut counted = match cached {
            Some(c) if c.bounds == bounds && c.ignored == ignored_fp && c.upto <= now => c,
            _ => fresh(),
        };
        if counted.upto < now {
            let mut rows =
                self.db.unread_push_actions(user, room_id, counted.upto, now).await.map_err(Error::from)?;
            if rows.iter().any(|r| r.redaction) && counted.upto > bounds.unthreaded {
                // A redaction may have removed counted actions: count afresh.
                counted = fresh();
                rows = self
                    .db
                    .unread_push_actions(user, room_id, counted.upto, now)
                    .await
                    .map_err(Error::from)?;
            }
            for row in rows {
                if row.redaction
                    || ignored.contains(&row.sender)
                    || row.stream_pos <= bounds.read_up_to(row.thread_id.as_deref())
                {
                    continue;
                }
                let counter = counted.by_thread.entry(row.thread_id).or_default();
                counter.0 += 1;
                counter.1 += u64::from(row.highlight);
            }
            counted.upto = now;
        }
        let counts = shape(&counted, per_thread);
        counted.receipts = receipts;
        counted.receipts_at = now;
        self.kept.lock().expect("unread cache poisoned").put(key, counted);
        Ok(counts)
    }
}

/// The counts as the client asked for them: threads apart, or all in the room's count.
fn shape(counted: &Counted, per_thread: bool) -> UnreadCounts {
    let mut main = (0, 0);
    let mut threads = Vec::new();
    for (thread, (n, h)) in &counted.by_thread {
        match thread {
            Some(root) if per_thread => threads.push((root.clone(), *n, *h)),
            _ => {
                main.0 += n;
                main.1 += h;
            }
        }
    }
    threads.sort();
    UnreadCounts { main, threads }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(kind: &str, thread: &str, pos: i64) -> ReceiptRow {
        ReceiptRow {
            room_id: "!r:x".into(),
            user_id: "@u:x".into(),
            receipt_type: kind.into(),
            thread_id: thread.into(),
            event_id: format!("$e{pos}"),
            event_pos: pos,
            ts: 0,
            stream_pos: 0,
        }
    }

    #[test]
    fn bounds_follow_the_receipts_of_each_thread() {
        let receipts = [
            receipt("m.read", "", 10),
            receipt("m.read.private", "", 12),
            receipt("m.read", "main", 20),
            receipt("m.read", "$root", 15),
            receipt("m.fully_read", "", 99),
        ];
        let bounds = Bounds::of(&receipts, 5);
        assert_eq!(bounds.unthreaded, 12);
        assert_eq!(bounds.read_up_to(None), 20, "main receipt covers the main timeline");
        assert_eq!(bounds.read_up_to(Some("$root")), 15);
        assert_eq!(bounds.read_up_to(Some("$other")), 12, "other threads: the unthreaded receipt");
        assert_eq!(Bounds::of(&[], 30).read_up_to(None), 30, "nothing before the stay counts");
    }
}
