//! Typing notifications, kept in memory with expiry (the client API's `PUT /typing` and, later,
//! federation's typing EDUs feed it; `/sync` reads it).
//!
//! Typing is ephemeral: nothing is persisted. Each change bumps a serial that forms the ephemeral
//! part of sync tokens (`s{pos}_{serial}`) and wakes the room's members. Expiry is driven by one
//! task that sleeps until the earliest deadline (re-armed through a `Notify` when a sooner one
//! appears), so nothing polls.
//!
//! Locking: one std mutex over the state; no `.await` while it is held.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use homeserver_core::streams::EventStream;
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use tokio::{
    sync::{Notify, broadcast},
    time::Instant,
};

/// Longest typing timeout honoured.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// The serial of the last change in this room.
    serial: u64,
    /// Who to wake when it changes (the joined members at the last update).
    members: Vec<OwnedUserId>,
}

#[derive(Default)]
struct State {
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

pub struct Typing {
    state: Mutex<State>,
    rearm: Notify,
    stream: Arc<EventStream>,
    /// Every change, for those who pass typing on (federation sends its users' to other
    /// servers). Typing is ephemeral: a subscriber that falls behind skips what it missed.
    changes: broadcast::Sender<TypingChange>,
}

/// A user started (`typing`) or stopped typing in a room, by request or by expiry.
#[derive(Debug, Clone)]
pub struct TypingChange {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub typing: bool,
}

/// Changes a subscriber may fall behind by before it skips.
const CHANGE_BACKLOG: usize = 1024;

impl Typing {
    /// Creates the service and starts its expiry task.
    ///
    /// Serials are not persisted, so they start from the wall clock in microseconds: above any
    /// serial an earlier run of the server handed out (it would have needed more than a million
    /// typing changes a second to get ahead of the clock), so a client's token never hides the
    /// typing notices that follow a restart.
    pub fn start(stream: Arc<EventStream>) -> Arc<Typing> {
        let serial = homeserver_core::time::now_millis().saturating_mul(1000);
        let state = State { serial, rooms: HashMap::new() };
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
        let typing = Arc::new(Typing { state: Mutex::new(state), rearm: Notify::new(), stream, changes });
        tokio::spawn(expire_loop(typing.clone()));
        typing
    }

    /// Every typing change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TypingChange> {
        self.changes.subscribe()
    }

    /// The current serial (ephemeral part of sync tokens).
    pub fn serial(&self) -> u64 {
        self.state.lock().expect("typing poisoned").serial
    }

    /// Sets or clears a user's typing state; `members` are woken.
    pub fn set(&self, room: &RoomId, user: &ruma::UserId, until: Option<Instant>, members: Vec<OwnedUserId>) {
        let woken = {
            let mut state = self.state.lock().expect("typing poisoned");
            state.serial += 1;
            let serial = state.serial;
            let entry = state.rooms.entry(room.to_owned()).or_default();
            match until {
                Some(deadline) => {
                    entry.users.insert(user.to_owned(), deadline);
                }
                None => {
                    entry.users.remove(user);
                }
            }
            entry.serial = serial;
            entry.members = members;
            entry.members.clone()
        };
        self.rearm.notify_one();
        self.stream.wake(&woken);
        let change =
            TypingChange { room_id: room.to_owned(), user_id: user.to_owned(), typing: until.is_some() };
        let _ = self.changes.send(change);
    }

    /// Who is typing in a room now, and the serial of the room's last change.
    pub fn typing_in(&self, room: &RoomId) -> (Vec<OwnedUserId>, u64) {
        let state = self.state.lock().expect("typing poisoned");
        match state.rooms.get(room) {
            Some(r) => {
                let now = Instant::now();
                let mut users: Vec<OwnedUserId> =
                    r.users.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone()).collect();
                users.sort();
                (users, r.serial)
            }
            None => (Vec::new(), 0),
        }
    }

    /// Removes expired entries; returns the earliest remaining deadline.
    fn expire(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut to_wake = Vec::new();
        let mut expired = Vec::new();
        let next = {
            let mut state = self.state.lock().expect("typing poisoned");
            let mut next: Option<Instant> = None;
            let mut changed_rooms = Vec::new();
            for (room, r) in state.rooms.iter_mut() {
                let before = r.users.len();
                r.users.retain(|user, until| {
                    let keep = *until > now;
                    if !keep {
                        expired.push(TypingChange {
                            room_id: room.clone(),
                            user_id: user.clone(),
                            typing: false,
                        });
                    }
                    keep
                });
                if r.users.len() != before {
                    changed_rooms.push(room.clone());
                    to_wake.extend(r.members.iter().cloned());
                }
                for until in r.users.values() {
                    next = Some(next.map_or(*until, |n| n.min(*until)));
                }
            }
            for room in changed_rooms {
                state.serial += 1;
                let serial = state.serial;
                if let Some(r) = state.rooms.get_mut(&room) {
                    r.serial = serial;
                }
            }
            next
        };
        if !to_wake.is_empty() {
            self.stream.wake(&to_wake);
        }
        for change in expired {
            let _ = self.changes.send(change);
        }
        next
    }
}

/// Expires typing entries at their deadlines. Room entries stay after everyone stopped (their
/// serial tells syncs about the change); there is one per room anyone ever typed in.
async fn expire_loop(typing: Arc<Typing>) {
    loop {
        // Register for re-arming before looking, so a `set` in between is not missed.
        let rearm = typing.rearm.notified();
        let next = typing.expire();
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = rearm => {}
                }
            }
            None => rearm.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn typing_expires_and_bumps_the_serial() {
        let stream = EventStream::new(0);
        let typing = Typing::start(stream);
        let room: OwnedRoomId = "!r:x".try_into().unwrap();
        let user: OwnedUserId = "@a:x".try_into().unwrap();
        typing.set(&room, &user, Some(Instant::now() + Duration::from_secs(5)), vec![user.clone()]);
        let (users, serial) = typing.typing_in(&room);
        assert_eq!(users, vec![user.clone()]);
        tokio::time::sleep(Duration::from_secs(6)).await;
        tokio::task::yield_now().await;
        let (users, later) = typing.typing_in(&room);
        assert!(users.is_empty());
        assert!(later > serial, "expiry is a change clients must see");
        typing.set(&room, &user, None, vec![]);
        assert!(typing.serial() > later);
    }
}
