//! Push: delivering a user's notifications to their phones through push gateways (`/pushers`
//! with `kind: http`, the push gateway API's `POST /_matrix/push/v1/notify`).
//!
//! What notifies whom is decided once, by the room pipeline, as push actions stored with the
//! event (`homeserver-rooms::push`); a pusher is a cursor over its user's notifications
//! (`pushers.last_pos`). [`PushSender`] follows the event stream: when it moves, one query
//! finds the pushers whose users were notified in the new range ([`Db::pushers_notified`]) and
//! wakes them (and a pusher set anew through `homeserver-live::pushers` at once); each pusher
//! then sends, in order and one at a time, the notifications after its
//! cursor and moves the cursor past each once the gateway accepted it (or it was read, redacted
//! or refused for good). A failing gateway is retried with a doubling delay; a notification is
//! given up on only after it failed for a day, as Synapse does. Nothing is polled, and after a
//! restart every pusher resumes from its stored cursor.
//!
//! A notification is sent at least once: a crash after the gateway accepted it and before the
//! cursor was saved sends it again (gateways and phones tolerate a repeat; a skip is worse).

mod deliver;
pub mod gateway;
pub mod payload;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use homeserver_core::streams::EventStream;
use homeserver_live::Live;
use homeserver_storage::{Db, pushers::PusherKey};
use tokio::sync::{Notify, Semaphore, broadcast::error::RecvError};
use tracing::warn;

pub use crate::gateway::GatewayPolicy;
use crate::gateway::Gateways;

/// Pushers doing work (reading the database, waiting on a gateway) at once: at start-up every
/// pusher is woken, and a message to a big room wakes many; they take turns.
const MAX_ACTIVE: usize = 16;
/// How long a pusher waits after a database error before it looks again.
const DB_RETRY: Duration = Duration::from_secs(5);

/// How a pusher retries a failing gateway.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay; it doubles with each failure.
    pub initial: Duration,
    /// The longest delay between two tries.
    pub max: Duration,
    /// How long one notification is retried before it is given up on.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// The push sender: wakes pushers as the event stream moves and runs their deliveries.
#[derive(Clone)]
pub struct PushSender {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    stream: Arc<EventStream>,
    live: Live,
    gateways: Gateways,
    backoff: Backoff,
    active: Semaphore,
    /// The pushers whose delivery task runs.
    running: Mutex<HashMap<PusherKey, Slot>>,
    /// Whether any pusher exists (as of start-up, or one was set since): a server without
    /// pushers does not look for pushers to wake each time the stream moves. A pusher set
    /// later starts from its own cursor, so nothing the router skipped is missed.
    any_pushers: AtomicBool,
}

/// A running delivery task: whether it was woken meanwhile, and how to cut its retry delay
/// short when its pusher was set again.
struct Slot {
    again: bool,
    /// The user read something: send the badge once caught up.
    badge: bool,
    reset: Arc<Notify>,
}

/// Why a pusher is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Its user may have been notified.
    Notified,
    /// It was set (or set again) through `/pushers/set`.
    Set,
    /// Its user's read receipts moved: the badge may have gone down.
    Read,
}

impl PushSender {
    pub fn new(
        db: Db,
        stream: Arc<EventStream>,
        live: Live,
        policy: GatewayPolicy,
        backoff: Backoff,
    ) -> Self {
        let inner = Inner {
            db,
            stream,
            live,
            gateways: Gateways::new(policy),
            backoff,
            active: Semaphore::new(MAX_ACTIVE),
            running: Mutex::new(HashMap::new()),
            any_pushers: AtomicBool::new(false),
        };
        PushSender { inner: Arc::new(inner) }
    }

    /// Starts following the stream: every pusher is looked at once (it may be owed what came
    /// while the server was down), then those notified as the stream moves and those set anew.
    pub fn run(&self) {
        let this = self.clone();
        let mut changes = self.inner.live.pusher_changes.subscribe();
        let mut current = self.inner.stream.watch_current();
        tokio::spawn(async move {
            let mut routed = *current.borrow_and_update() as i64;
            this.wake_all().await;
            while current.changed().await.is_ok() {
                if this.inner.stream.is_shutting_down() {
                    return;
                }
                let now = *current.borrow_and_update() as i64;
                if now <= routed {
                    continue;
                }
                if !this.inner.any_pushers.load(Ordering::Acquire) {
                    routed = now;
                    continue;
                }
                let db = &this.inner.db;
                match (
                    db.pushers_notified(routed, now).await,
                    db.pushers_with_new_receipts(routed, now).await,
                ) {
                    (Ok(notified), Ok(read)) => {
                        notified.into_iter().for_each(|key| this.wake(key, Wake::Notified));
                        read.into_iter().for_each(|key| this.wake(key, Wake::Read));
                        routed = now;
                    }
                    // The range stays unrouted: the next move of the stream covers it again.
                    (Err(err), _) | (_, Err(err)) => {
                        warn!(error = %err, "could not find the pushers to wake")
                    }
                }
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(key) => {
                        this.inner.any_pushers.store(true, Ordering::Release);
                        this.wake(key, Wake::Set)
                    }
                    Err(RecvError::Lagged(_)) => this.wake_all().await,
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    async fn wake_all(&self) {
        match self.inner.db.all_pusher_keys().await {
            Ok(keys) => {
                if !keys.is_empty() {
                    self.inner.any_pushers.store(true, Ordering::Release);
                }
                keys.into_iter().for_each(|key| self.wake(key, Wake::Notified))
            }
            Err(err) => {
                // Unknown: keep looking as the stream moves.
                self.inner.any_pushers.store(true, Ordering::Release);
                warn!(error = %err, "could not list the pushers")
            }
        }
    }

    /// Makes a pusher look for notifications after its cursor: starts its delivery task, or
    /// tells the running one to look again when it is done (to end a retry delay now when the
    /// pusher was set again, perhaps with a working URL; to send the badge when the user read).
    fn wake(&self, key: PusherKey, why: Wake) {
        let notify = {
            let mut running = self.inner.running.lock().expect("push sender poisoned");
            if let Some(slot) = running.get_mut(&key) {
                slot.again = true;
                slot.badge |= why == Wake::Read;
                if why == Wake::Set {
                    slot.reset.notify_one();
                }
                return;
            }
            let notify = Arc::new(Notify::new());
            running
                .insert(key.clone(), Slot { again: false, badge: why == Wake::Read, reset: notify.clone() });
            notify
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut guard = Forget { inner: &inner, key: &key, armed: true };
            loop {
                if let Err(err) = deliver::catch_up(&inner, &key, &notify).await {
                    // The database failed: the cursor is where it was; look again in a while.
                    warn!(user = %key.user_id, app_id = %key.app_id, error = %err, "push delivery paused");
                    if inner.stream.is_shutting_down() {
                        return;
                    }
                    tokio::time::sleep(DB_RETRY).await;
                    continue;
                }
                let badge = {
                    let mut running = inner.running.lock().expect("push sender poisoned");
                    match running.get_mut(&key) {
                        Some(slot) if slot.again || slot.badge => {
                            slot.again = false;
                            std::mem::take(&mut slot.badge)
                        }
                        _ => {
                            // Removed under the same lock a wake takes, so no wake is lost.
                            running.remove(&key);
                            guard.armed = false;
                            return;
                        }
                    }
                };
                if badge {
                    // Best effort, once, on a task of its own: a badge is soon out of date, and
                    // a slow gateway must not hold the notifications behind it.
                    let inner = inner.clone();
                    let key = key.clone();
                    tokio::spawn(async move { deliver::send_badge(&inner, &key).await });
                }
            }
        });
    }
}

/// Removes a delivery task's entry if the task ends early (a panic, shutdown), so the pusher
/// can be woken again.
struct Forget<'a> {
    inner: &'a Inner,
    key: &'a PusherKey,
    armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Ok(mut running) = self.inner.running.lock()
        {
            running.remove(self.key);
        }
    }
}
