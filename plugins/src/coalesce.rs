//! Edit coalescing: a bot streaming an answer edits its message many times a second; the room
//! sees at most one edit per message per [`INTERVAL`], always including the last one. An edit
//! arriving within the interval replaces any edit still waiting; one flush per message is
//! scheduled for when the interval ends.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;

pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// Messages not edited for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Messages a plugin may be editing at once (within [`FORGET_AFTER`]).
const MAX_MESSAGES: usize = 100;

/// What to do with an edit.
#[derive(Debug, PartialEq)]
pub(crate) enum Plan {
    /// Send it now.
    Now,
    /// It waits; schedule a flush after this long (none: one is already scheduled).
    Later(Option<Duration>),
}

struct Entry {
    last_sent: Instant,
    pending: Option<(Value, String)>,
    flush_scheduled: bool,
}

/// Edits per (room, target), keyed by strings.
#[derive(Default)]
pub(crate) struct Coalescer {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl Coalescer {
    /// Decides about an edit of `key` with `content` sent as `sender`.
    pub(crate) fn plan(
        &self,
        key: &(String, String),
        content: Value,
        sender: String,
        now: Instant,
    ) -> Result<Plan, crate::bindings::types::Error> {
        let mut entries = self.entries.lock().expect("coalescer poisoned");
        if entries.len() >= MAX_MESSAGES {
            entries.retain(|_, e| e.flush_scheduled || now.duration_since(e.last_sent) < FORGET_AFTER);
        }
        let full = entries.len() >= MAX_MESSAGES;
        match entries.get_mut(key) {
            Some(entry) if now.duration_since(entry.last_sent) < INTERVAL || entry.flush_scheduled => {
                entry.pending = Some((content, sender));
                if entry.flush_scheduled {
                    return Ok(Plan::Later(None));
                }
                entry.flush_scheduled = true;
                Ok(Plan::Later(Some(INTERVAL.saturating_sub(now.duration_since(entry.last_sent)))))
            }
            Some(entry) => {
                entry.last_sent = now;
                Ok(Plan::Now)
            }
            None if full => Err(crate::bindings::types::Error::Quota(format!(
                "at most {MAX_MESSAGES} messages edited at once"
            ))),
            None => {
                entries.insert(key.clone(), Entry { last_sent: now, pending: None, flush_scheduled: false });
                Ok(Plan::Now)
            }
        }
    }

    /// The waiting edit of `key`, taken when its flush is due.
    pub(crate) fn take(&self, key: &(String, String), now: Instant) -> Option<(Value, String)> {
        let mut entries = self.entries.lock().expect("coalescer poisoned");
        let entry = entries.get_mut(key)?;
        entry.flush_scheduled = false;
        entry.last_sent = now;
        entry.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn edits_within_the_interval_wait_and_the_last_one_wins() {
        let c = Coalescer::default();
        let key = ("!r".to_owned(), "$e".to_owned());
        let t0 = Instant::now();
        assert_eq!(c.plan(&key, json!(1), "@b".into(), t0).unwrap(), Plan::Now);
        let first_wait = c.plan(&key, json!(2), "@b".into(), t0 + Duration::from_millis(300)).unwrap();
        assert_eq!(first_wait, Plan::Later(Some(Duration::from_millis(700))));
        assert_eq!(
            c.plan(&key, json!(3), "@b".into(), t0 + Duration::from_millis(600)).unwrap(),
            Plan::Later(None)
        );
        assert_eq!(c.take(&key, t0 + INTERVAL).map(|(v, _)| v), Some(json!(3)));
        // Right after a flush, the next edit waits for the interval again.
        assert!(matches!(c.plan(&key, json!(4), "@b".into(), t0 + INTERVAL).unwrap(), Plan::Later(Some(_))));
        // Another message is independent.
        let other = ("!r".to_owned(), "$f".to_owned());
        assert_eq!(c.plan(&other, json!(1), "@b".into(), t0).unwrap(), Plan::Now);
    }

    #[test]
    fn a_plugin_edits_a_bounded_number_of_messages_at_once() {
        let c = Coalescer::default();
        let t0 = Instant::now();
        for i in 0..MAX_MESSAGES {
            c.plan(&("!r".into(), format!("$e{i}")), json!(1), "@b".into(), t0).unwrap();
        }
        assert!(c.plan(&("!r".into(), "$new".into()), json!(1), "@b".into(), t0).is_err());
        // Old ones are forgotten after a while, making room again.
        assert!(c.plan(&("!r".into(), "$new".into()), json!(1), "@b".into(), t0 + FORGET_AFTER).is_ok());
    }
}
