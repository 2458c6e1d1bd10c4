//! State groups: their id sequence and how a new group is laid out.
//!
//! A state group names one room state. Groups have their own ids, apart from stream positions,
//! so that states no event of the live stream introduces — the state at an outlier, at a
//! backfilled event, the result of resolving forks — can be stored too. Ids come from one
//! process-wide counter seeded from the highest stored id; like stream positions, only the
//! serving process allocates them, and an id whose write failed is simply never used.
//!
//! A new group is stored as a delta against the group it derives from (only the keys that
//! differ, removals included), or as a full snapshot once the delta chain is long, so reading
//! any state walks at most [`MAX_STATE_CHAIN`] groups.

use std::sync::atomic::{AtomicI64, Ordering};

use homeserver_core::Error;
use homeserver_storage::{Db, persist::NewStateGroup};
use tokio::sync::OnceCell;

/// A state group becomes a full snapshot again after this many deltas.
pub(crate) const MAX_STATE_CHAIN: i64 = 100;

/// Hands out state group ids.
#[derive(Default)]
pub(crate) struct StateGroupIds {
    next: OnceCell<AtomicI64>,
}

impl StateGroupIds {
    /// A fresh id, above every stored one.
    pub(crate) async fn next(&self, db: &Db) -> Result<i64, Error> {
        let counter = self
            .next
            .get_or_try_init(|| async {
                let max = db.max_state_group().await.map_err(Error::from)?;
                Ok::<_, Error>(AtomicI64::new(max + 1))
            })
            .await?;
        Ok(counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// Hands out positions outside the live stream (below zero, decreasing): backfilled history,
/// outliers, soft-failed and rejected events. Seeded from the lowest stored position.
#[derive(Default)]
pub(crate) struct OutsidePositions {
    next: OnceCell<AtomicI64>,
}

impl OutsidePositions {
    pub(crate) async fn next(&self, db: &Db) -> Result<i64, Error> {
        Ok(self.block(db, 1).await?.start)
    }

    /// `n` consecutive positions below every one handed out so far, lowest first: a batch of
    /// history applied oldest first keeps its order among events of equal depth.
    pub(crate) async fn block(&self, db: &Db, n: usize) -> Result<std::ops::Range<i64>, Error> {
        let counter = self
            .next
            .get_or_try_init(|| async {
                let min = db.min_event_pos().await.map_err(Error::from)?;
                Ok::<_, Error>(AtomicI64::new(min - 1))
            })
            .await?;
        let n = n.max(1) as i64;
        let highest = counter.fetch_sub(n, Ordering::Relaxed);
        Ok(highest - n + 1..highest + 1)
    }
}

/// The state a new group derives from.
pub(crate) struct Base {
    /// The group's id (0: no state yet).
    pub group: i64,
    /// Its delta-chain length.
    pub chain_len: i64,
}

/// Lays out a new group `id` for a state that differs from `base` by `changes` (an entry
/// without event removes the key). `full` yields the whole new state, for when a snapshot is
/// due; `parents` are the states a resolution merged (empty for a plain successor).
pub(crate) fn layout(
    id: i64,
    base: &Base,
    changes: Vec<(String, String, Option<String>)>,
    full: impl FnOnce() -> Vec<(String, String, Option<String>)>,
    parents: Vec<i64>,
) -> NewStateGroup {
    if base.group == 0 || base.chain_len + 1 >= MAX_STATE_CHAIN {
        let entries = full().into_iter().filter(|(_, _, id)| id.is_some()).collect();
        NewStateGroup { group_id: id, prev_group: None, chain_len: 0, entries, parents }
    } else {
        NewStateGroup {
            group_id: id,
            prev_group: Some(base.group),
            chain_len: base.chain_len + 1,
            entries: changes,
            parents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, id: Option<&str>) -> (String, String, Option<String>) {
        ("m.room.member".into(), key.into(), id.map(str::to_owned))
    }

    #[test]
    fn a_group_is_a_delta_until_the_chain_is_long() {
        let delta = layout(7, &Base { group: 3, chain_len: 5 }, vec![entry("@a:x", None)], Vec::new, vec![]);
        assert_eq!(delta.prev_group, Some(3));
        assert_eq!(delta.chain_len, 6);
        assert_eq!(delta.entries, vec![entry("@a:x", None)], "a delta keeps its removals");

        let full = || vec![entry("@b:x", Some("$b")), entry("@a:x", None)];
        let snapshot = layout(
            8,
            &Base { group: 3, chain_len: MAX_STATE_CHAIN - 1 },
            vec![entry("@a:x", None)],
            full,
            vec![],
        );
        assert_eq!(snapshot.prev_group, None);
        assert_eq!(snapshot.chain_len, 0);
        assert_eq!(snapshot.entries, vec![entry("@b:x", Some("$b"))], "a snapshot holds no removals");

        let first =
            layout(1, &Base { group: 0, chain_len: 0 }, vec![], || vec![entry("@c:x", Some("$c"))], vec![]);
        assert_eq!(first.prev_group, None);
    }
}
