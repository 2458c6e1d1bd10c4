//! The global event stream: position allocation, in-order visibility, and wake-ups.
//!
//! Every persisted change a client can sync (room events, account data, ...) gets one position from
//! this allocator. Writers in different rooms commit concurrently, so positions can commit out of
//! order; readers must never see position 7 before 6 has committed, or a sync that advanced past 7
//! would silently skip 6 when it lands. [`EventStream::current`] therefore only advances over the
//! contiguous prefix of completed reservations (Synapse's stream-id generator idea).
//!
//! Writers also raise [`watermarks`] (the newest position per room or user and kind of data) before
//! they complete, so readers can skip queries for data that cannot have changed.
//!
//! When the visible position advances, the users whose data changed at the newly visible positions
//! are woken through per-user `watch` channels. Long-polling `/sync` subscribes before it checks for
//! data and then awaits its channel: no polling loop, and no lost wake-up between check and wait.
//!
//! Locking: one `std::sync::Mutex` over the allocator state and one over the subscriber map. Neither
//! is held across an `.await` and the critical sections are a few map operations, so a std mutex is
//! cheaper than an async one. The subscriber lock is only taken after the state lock is released.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

mod pos;
pub mod watermarks;

pub use pos::StreamPos;
use watermarks::Watermarks;

/// How far ahead of the positions handed out the persisted horizon is kept.
pub const HORIZON_HEADROOM: u64 = 10_000;

/// Durable storage of the stream's horizon: the highest position that may ever have been
/// handed out. The allocator raises it *before* handing out positions beyond it, so after a
/// restart the stream can start above every position any client could hold, whether or not
/// the data written at that position survived (a failed write, a receipt, a reservation that
/// was dropped).
pub trait Horizon: Send + Sync + 'static {
    /// Persists `to` as the horizon (never lowering it); resolves once it is durable.
    fn raise(&self, to: u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// A horizon kept in memory, for tests and tools that never restart a stream.
#[derive(Default)]
pub struct MemoryHorizon(std::sync::atomic::AtomicU64);

impl MemoryHorizon {
    /// The highest horizon persisted so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Horizon for MemoryHorizon {
    fn raise(&self, to: u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        self.0.fetch_max(to, std::sync::atomic::Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The horizon could not be persisted, so no position may be handed out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot persist the stream horizon: {0}")]
pub struct HorizonError(pub String);

/// Allocates stream positions and wakes readers once they become visible.
pub struct EventStream {
    shutting_down: std::sync::atomic::AtomicBool,
    state: Mutex<AllocState>,
    current: watch::Sender<u64>,
    subscribers: Mutex<Subscribers>,
    marks: Watermarks,
    horizon: Arc<dyn Horizon>,
    /// Serialises raises of the horizon (one write in flight).
    raising: tokio::sync::Mutex<()>,
}

struct AllocState {
    next: u64,
    /// The persisted horizon: positions up to it may be handed out.
    limit: u64,
    /// Whether a background raise is under way.
    topping_up: bool,
    /// The highest position such that it and every position below it completed.
    visible: u64,
    /// Completed-but-not-yet-visible positions, with the users to wake when they become visible.
    /// Positions in flight are absent from this map and below `next`.
    completed: BTreeMap<u64, Vec<OwnedUserId>>,
}

#[derive(Default)]
struct Subscribers {
    by_user: HashMap<OwnedUserId, watch::Sender<u64>>,
    /// Map size after the last sweep of dead channels; a sweep happens when it doubles.
    swept_at: usize,
}

/// A reserved, contiguous range of positions. Completing it (or dropping it, which completes it
/// with nobody to wake) lets readers move past it.
#[must_use = "a reservation stalls the stream until it is completed or dropped"]
pub struct Reservation {
    stream: Arc<EventStream>,
    first: u64,
    count: u64,
    done: bool,
}

impl EventStream {
    /// Starts the stream above `recovered`, the highest position that may have been handed out
    /// before (the stored horizon, or any stored position if higher), and persists a new horizon
    /// before anything is handed out.
    pub async fn start(recovered: u64, horizon: Arc<dyn Horizon>) -> Result<Arc<Self>, HorizonError> {
        let limit = recovered + HORIZON_HEADROOM;
        horizon.raise(limit).await.map_err(HorizonError)?;
        let (current, _) = watch::channel(recovered);
        Ok(Arc::new(Self {
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(AllocState {
                next: recovered + 1,
                limit,
                topping_up: false,
                visible: recovered,
                completed: BTreeMap::new(),
            }),
            current,
            subscribers: Mutex::new(Subscribers::default()),
            marks: Watermarks::new(recovered),
            horizon,
            raising: tokio::sync::Mutex::new(()),
        }))
    }

    /// A stream with an in-memory horizon, for tests.
    pub fn new(last_committed: u64) -> Arc<Self> {
        let (current, _) = watch::channel(last_committed);
        Arc::new(Self {
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(AllocState {
                next: last_committed + 1,
                limit: u64::MAX,
                topping_up: false,
                visible: last_committed,
                completed: BTreeMap::new(),
            }),
            current,
            subscribers: Mutex::new(Subscribers::default()),
            marks: Watermarks::new(last_committed),
            horizon: Arc::new(MemoryHorizon::default()),
            raising: tokio::sync::Mutex::new(()),
        })
    }

    /// The highest position readers may see.
    pub fn current(&self) -> u64 {
        *self.current.borrow()
    }

    /// The newest position written per room or user and kind of data (see [`watermarks`]).
    pub fn marks(&self) -> &Watermarks {
        &self.marks
    }

    /// A receiver of [`current`](Self::current), for background consumers that tail the stream.
    pub fn watch_current(&self) -> watch::Receiver<u64> {
        self.current.subscribe()
    }

    /// Reserves `count` consecutive positions (at least one). Positions are only handed out
    /// below the persisted horizon; when less than half the headroom is left, the horizon is
    /// raised in the background, and a reservation that would pass it waits for the raise.
    pub async fn reserve(self: &Arc<Self>, count: u64) -> Result<Reservation, HorizonError> {
        let count = count.max(1);
        loop {
            let needed = {
                let mut state = self.state.lock().expect("stream state poisoned");
                let last = state.next + count - 1;
                if last <= state.limit {
                    let first = state.next;
                    state.next += count;
                    if state.limit - last < HORIZON_HEADROOM / 2 && !state.topping_up {
                        state.topping_up = true;
                        let stream = Arc::clone(self);
                        let target = last + HORIZON_HEADROOM;
                        tokio::spawn(async move {
                            if let Err(err) = stream.raise_horizon(target).await {
                                tracing::error!(error = %err, "raising the stream horizon failed");
                            }
                            stream.state.lock().expect("stream state poisoned").topping_up = false;
                        });
                    }
                    return Ok(Reservation { stream: Arc::clone(self), first, count, done: false });
                }
                last + HORIZON_HEADROOM
            };
            self.raise_horizon(needed).await?;
        }
    }

    /// Persists a horizon of at least `target` and lets the allocator use it.
    async fn raise_horizon(&self, target: u64) -> Result<(), HorizonError> {
        let _one_at_a_time = self.raising.lock().await;
        if self.state.lock().expect("stream state poisoned").limit >= target {
            return Ok(());
        }
        self.horizon.raise(target).await.map_err(HorizonError)?;
        let mut state = self.state.lock().expect("stream state poisoned");
        state.limit = state.limit.max(target);
        Ok(())
    }

    /// A channel that changes whenever something for `user` becomes visible.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut subs = self.subscribers.lock().expect("subscribers poisoned");
        if subs.by_user.len() > 64 && subs.by_user.len() >= subs.swept_at * 2 {
            subs.by_user.retain(|_, tx| tx.receiver_count() > 0);
            subs.swept_at = subs.by_user.len();
        }
        subs.by_user.entry(user.to_owned()).or_insert_with(|| watch::channel(self.current()).0).subscribe()
    }

    /// Tells every waiting reader to finish now (server shutdown): long-polls return at once.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        // Background tasks following the stream wake up and see the shutdown.
        self.current.send_modify(|_| {});
        let subs = self.subscribers.lock().expect("subscribers poisoned");
        let now = self.current();
        for tx in subs.by_user.values() {
            tx.send_replace(now);
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wakes `users` without allocating a position (for ephemeral data such as typing).
    pub fn wake(&self, users: &[OwnedUserId]) {
        let subs = self.subscribers.lock().expect("subscribers poisoned");
        let now = self.current();
        for user in users {
            if let Some(tx) = subs.by_user.get(user) {
                tx.send_replace(now);
            }
        }
    }

    fn complete(&self, first: u64, count: u64, wake: Vec<OwnedUserId>) {
        let (new_visible, to_wake) = {
            let mut state = self.state.lock().expect("stream state poisoned");
            // Record every position of the range; wake-ups ride on the last one.
            for pos in first..first + count - 1 {
                state.completed.insert(pos, Vec::new());
            }
            state.completed.insert(first + count - 1, wake);
            let mut to_wake = Vec::new();
            let mut visible = state.visible;
            while let Some(users) = state.completed.remove(&(visible + 1)) {
                visible += 1;
                to_wake.extend(users);
            }
            if visible == state.visible {
                return;
            }
            state.visible = visible;
            (visible, to_wake)
        };
        self.current.send_replace(new_visible);
        if to_wake.is_empty() {
            return;
        }
        let subs = self.subscribers.lock().expect("subscribers poisoned");
        for user in &to_wake {
            if let Some(tx) = subs.by_user.get(user) {
                tx.send_replace(new_visible);
            }
        }
    }
}

impl Reservation {
    /// The first reserved position.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// How many positions were reserved.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Marks the range committed and wakes `users` once it becomes visible.
    pub fn complete(mut self, users: Vec<OwnedUserId>) {
        self.done = true;
        self.stream.complete(self.first, self.count, users);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            // A failed write leaves a gap; readers simply see no row at those positions.
            self.stream.complete(self.first, self.count, Vec::new());
        }
    }
}

#[cfg(test)]
mod tests;
