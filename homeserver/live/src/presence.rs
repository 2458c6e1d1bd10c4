//! Presence: the online/unavailable/offline state machine behind `GET/PUT /presence/{userId}/status`,
//! and the presence events `/sync` delivers.
//!
//! A user sets their own state and status message; anyone sharing a room with them may read it.
//! The state machine, modelled on what Synapse users see:
//! - a sync (unless it says `set_presence=offline`) brings an offline user online — or
//!   unavailable, if it says `set_presence=unavailable`;
//! - a user stays "syncing" while a sync is in flight and for `offline_after` after the last one
//!   ends, so a long-poll never makes its user flap; then they go offline;
//! - activity (sending events, receipts, typing, setting presence) sets `last_active`, makes an
//!   idle user online again and marks them `currently_active`; `currently_active` lapses after a
//!   minute without activity, and an online user without activity for `idle_after` becomes
//!   unavailable. A sync alone is not activity: an open but untouched client goes idle.
//!
//! [`Presence`] keeps the live state of users it has seen in memory and is the source of
//! truth; the `presence` table mirrors what room mates may see. Room mates are woken only when
//! something they would display changes (state, status message, `currently_active`); a
//! `last_active` refresh is written at most once per activity window with a stream position but
//! no wake-up, so it rides along with the next sync. One task sleeps until the next deadline —
//! nothing polls. Writes are serialised (one async mutex) so the table follows the memory state in
//! order.
//!
//! Presence is a known CPU sink on busy servers; `presence.enabled = false` turns it off (status
//! requests are then accepted and ignored, and syncs carry no presence).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use homeserver_core::{Error, streams::EventStream, time::now_millis};
use homeserver_storage::{Db, presence::PresenceRow};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// How long `currently_active` lasts after activity; also how often a mere `last_active`
/// refresh is written.
const ACTIVE_WINDOW_MS: i64 = 60_000;

/// Presence timings (from `[presence]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct PresenceSettings {
    pub enabled: bool,
    /// A user goes offline this long after their last sync ended.
    pub offline_after: Duration,
    /// An online user without activity becomes unavailable after this long.
    pub idle_after: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self { enabled: true, offline_after: Duration::from_secs(30), idle_after: Duration::from_secs(300) }
    }
}

/// The presence states of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Online,
    Unavailable,
    Offline,
}

impl State {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Self::Online),
            "unavailable" => Some(Self::Unavailable),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Unavailable => "unavailable",
            Self::Offline => "offline",
        }
    }
}

/// What room mates see of a user (the `presence` row).
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    state: State,
    status_msg: Option<String>,
    last_active_ts: i64,
    currently_active: bool,
}

/// A user's live presence.
#[derive(Debug, Clone)]
struct Live {
    shown: Shown,
    /// The newest activity (the shown one may lag by up to the activity window).
    last_active_ts: i64,
    /// Syncs in flight.
    syncs: u32,
    /// When the last sync ended or presence was set (ms); the offline countdown starts here.
    seen_ts: i64,
    /// The user's key in the deadline queue.
    scheduled: Option<i64>,
}

/// Something that happened to a user's presence.
#[derive(Debug, Clone)]
enum Input {
    SyncStarted {
        wanted: State,
    },
    Activity,
    Set {
        state: State,
        status_msg: Option<String>,
    },
    /// Time passed: the deadlines are checked.
    Tick,
}

/// The shown state a transition leads to, and whether room mates must be woken for it.
struct Change {
    shown: Shown,
    wake: bool,
}

impl Live {
    fn from_row(row: Option<&PresenceRow>, now: i64) -> Self {
        let shown = match row {
            Some(p) => Shown {
                state: State::parse(&p.state).unwrap_or(State::Offline),
                status_msg: p.status_msg.clone(),
                last_active_ts: p.last_active_ts,
                currently_active: p.currently_active,
            },
            None => {
                Shown { state: State::Offline, status_msg: None, last_active_ts: 0, currently_active: false }
            }
        };
        Self { last_active_ts: shown.last_active_ts, shown, syncs: 0, seen_ts: now, scheduled: None }
    }

    /// Applies `input` to the memory-only fields and returns the change to the shown state, if any.
    fn step(&mut self, input: &Input, now: i64, s: &PresenceSettings) -> Option<Change> {
        let mut next = self.shown.clone();
        match input {
            Input::SyncStarted { wanted } => {
                self.syncs += 1;
                match (self.shown.state, wanted) {
                    (State::Offline, _) => {
                        next.state = *wanted;
                        self.last_active_ts = now;
                    }
                    (State::Online, State::Unavailable) => next.state = State::Unavailable,
                    _ => {}
                }
            }
            Input::Activity => {
                self.last_active_ts = now;
                if next.state == State::Unavailable {
                    next.state = State::Online;
                }
            }
            Input::Set { state, status_msg } => {
                self.seen_ts = now;
                next.state = *state;
                next.status_msg = status_msg.clone();
                if *state == State::Online {
                    self.last_active_ts = now;
                }
            }
            Input::Tick => {
                let idle_for = now - self.last_active_ts;
                if self.syncs == 0
                    && next.state != State::Offline
                    && now - self.seen_ts >= s.offline_after.as_millis() as i64
                {
                    next.state = State::Offline;
                } else if next.state == State::Online && idle_for >= s.idle_after.as_millis() as i64 {
                    next.state = State::Unavailable;
                }
            }
        }
        next.currently_active = next.state == State::Online && now - self.last_active_ts < active_window(s);
        let visible = next.state != self.shown.state
            || next.status_msg != self.shown.status_msg
            || next.currently_active != self.shown.currently_active;
        let refresh = self.last_active_ts - self.shown.last_active_ts >= ACTIVE_WINDOW_MS;
        if visible || refresh {
            next.last_active_ts = self.last_active_ts;
        }
        (visible || refresh).then_some(Change { shown: next, wake: visible })
    }

    /// When the next [`Input::Tick`] could change something (ms), if ever.
    fn next_deadline(&self, s: &PresenceSettings) -> Option<i64> {
        let mut deadlines = Vec::new();
        if self.syncs == 0 && self.shown.state != State::Offline {
            deadlines.push(self.seen_ts + s.offline_after.as_millis() as i64);
        }
        if self.shown.state == State::Online {
            deadlines.push(self.last_active_ts + s.idle_after.as_millis() as i64);
            if self.shown.currently_active {
                deadlines.push(self.last_active_ts + active_window(s));
            }
        }
        deadlines.into_iter().min()
    }
}

fn active_window(s: &PresenceSettings) -> i64 {
    ACTIVE_WINDOW_MS.min(s.idle_after.as_millis() as i64)
}

/// The live presence of users seen since start-up, their deadlines in time order, and the
/// writer of the `presence` table.
pub struct Presence {
    pub settings: PresenceSettings,
    pub enabled: bool,
    /// This server: its users have timers; other servers' users are shown as their servers say.
    server_name: OwnedServerName,
    db: Db,
    stream: Arc<EventStream>,
    inner: Mutex<Inner>,
    /// Serialises writes so the table follows the memory state in order.
    writer: tokio::sync::Mutex<()>,
    /// Wakes the timer task when a deadline earlier than its next one appears.
    rearm: Notify,
    /// The newest stream position a presence row was written at (`i64::MAX` until known), so a
    /// sync can tell without a query that no presence changed since its token.
    newest_pos: AtomicI64,
}

#[derive(Default)]
struct Inner {
    live: HashMap<OwnedUserId, Live>,
    /// `(deadline ms, user)` for every user with a deadline; `Live::scheduled` is their key.
    queue: BTreeSet<(i64, OwnedUserId)>,
}

impl Inner {
    /// Re-queues a user after their state changed; true if this is now the earliest deadline.
    fn reschedule(&mut self, user: &UserId, settings: &PresenceSettings) -> bool {
        let Some(live) = self.live.get_mut(user) else { return false };
        let next = live.next_deadline(settings);
        if next == live.scheduled {
            return false;
        }
        if let Some(old) = live.scheduled.take() {
            self.queue.remove(&(old, user.to_owned()));
        }
        live.scheduled = next;
        let Some(at) = next else { return false };
        let earliest = self.queue.first().is_none_or(|(first, _)| at < *first);
        self.queue.insert((at, user.to_owned()));
        earliest
    }
}

enum Stepped {
    NotLoaded,
    Unchanged,
    MustWrite,
    Changed(Change),
}

impl Presence {
    /// Creates the tracker and, when presence is enabled, starts its timer task.
    pub fn start(
        settings: PresenceSettings,
        server_name: OwnedServerName,
        db: Db,
        stream: Arc<EventStream>,
    ) -> Arc<Self> {
        let presence = Arc::new(Self {
            settings,
            enabled: settings.enabled,
            server_name,
            db,
            stream,
            inner: Mutex::new(Inner::default()),
            writer: tokio::sync::Mutex::new(()),
            rearm: Notify::new(),
            newest_pos: AtomicI64::new(i64::MAX),
        });
        if presence.enabled {
            tokio::spawn(presence_timers(presence.clone()));
        }
        presence
    }

    /// Whether a presence row may have been written after stream position `since`.
    pub fn changed_since(&self, since: i64) -> bool {
        self.newest_pos.load(Ordering::Acquire) > since
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("presence poisoned")
    }

    /// Steps a loaded user's state machine under the lock. `commit` false only tries: the
    /// memory state is kept if nothing shown changes, and left untouched otherwise.
    fn step(&self, user: &UserId, input: &Input, commit: bool) -> Stepped {
        let mut inner = self.lock();
        let Some(live) = inner.live.get_mut(user) else { return Stepped::NotLoaded };
        let mut next = live.clone();
        let change = next.step(input, now_millis() as i64, &self.settings);
        if change.is_some() && !commit {
            return Stepped::MustWrite;
        }
        if let Some(change) = &change {
            next.shown = change.shown.clone();
        }
        *live = next;
        if inner.reschedule(user, &self.settings) {
            self.rearm.notify_one();
        }
        match change {
            Some(change) => Stepped::Changed(change),
            None => Stepped::Unchanged,
        }
    }

    /// Feeds `input` into a user's state machine and writes the change, if there is one.
    async fn feed(&self, user: &UserId, input: Input) -> Result<(), Error> {
        // Fast path: most inputs change nothing anyone sees and never touch the writer lock.
        if let Stepped::Unchanged = self.step(user, &input, false) {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        if !self.lock().live.contains_key(user) {
            // Entries are only added (never removed), and only under the writer lock.
            let row = self.db.presence(user.as_str()).await.map_err(Error::from)?;
            let live = Live::from_row(row.as_ref(), now_millis() as i64);
            self.lock().live.insert(user.to_owned(), live);
        }
        match self.step(user, &input, true) {
            Stepped::Changed(change) => self.write(user, &change).await,
            _ => Ok(()),
        }
    }

    /// Writes a shown state at a new stream position, waking room mates if they should see it.
    async fn write(&self, user: &UserId, change: &Change) -> Result<(), Error> {
        let reservation = self.stream.reserve(1).await?;
        let shown = &change.shown;
        let row = PresenceRow {
            user_id: user.to_string(),
            state: shown.state.as_str().to_owned(),
            status_msg: shown.status_msg.clone(),
            last_active_ts: shown.last_active_ts,
            currently_active: shown.currently_active,
            stream_pos: reservation.first() as i64,
        };
        self.db.set_presence(&row).await.map_err(Error::from)?;
        // Raised before the position completes, so no sync can see the position but not this.
        let known = self.newest_pos.load(Ordering::Acquire);
        if known != i64::MAX {
            self.newest_pos.fetch_max(row.stream_pos, Ordering::AcqRel);
        }
        let mates = if change.wake {
            self.db
                .room_mates(user.as_str())
                .await
                .map_err(Error::from)?
                .into_iter()
                .filter_map(|u| UserId::parse(u).ok())
                .chain([user.to_owned()])
                .collect()
        } else {
            Vec::new()
        };
        reservation.complete(mates);
        Ok(())
    }

    /// Called at the start of every sync; the user counts as syncing while the guard lives.
    /// `set_presence=offline` leaves presence alone.
    pub async fn on_sync(self: &Arc<Self>, user: &UserId, set_presence: &str) -> Result<SyncGuard, Error> {
        if !self.enabled || set_presence == "offline" {
            return Ok(SyncGuard { syncing: None });
        }
        let wanted = if set_presence == "unavailable" { State::Unavailable } else { State::Online };
        self.feed(user, Input::SyncStarted { wanted }).await?;
        Ok(SyncGuard { syncing: Some((self.clone(), user.to_owned())) })
    }

    /// Something the user did (sent an event, a receipt, a typing notice): they are active. A
    /// failure to record it is logged, never the user's problem.
    pub async fn activity(&self, user: &UserId) {
        if self.enabled
            && let Err(err) = self.feed(user, Input::Activity).await
        {
            tracing::warn!(%user, error = %err, "could not record presence activity");
        }
    }

    /// The user set their own state and status message (ignored when presence is disabled).
    pub async fn set(&self, user: &UserId, state: State, status_msg: Option<String>) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        self.feed(user, Input::Set { state, status_msg }).await
    }

    /// Another server's user's presence, as their server sent it (an `m.presence` EDU): shown
    /// as is, with no timers here — their server says when it changes. Ignored when presence
    /// is disabled or for this server's own users.
    pub async fn set_remote(&self, remote: RemotePresence) -> Result<(), Error> {
        if !self.enabled || remote.user.server_name() == self.server_name {
            return Ok(());
        }
        let now = now_millis() as i64;
        let shown = Shown {
            state: remote.state,
            status_msg: remote.status_msg,
            last_active_ts: now.saturating_sub(remote.last_active_ago.max(0)),
            currently_active: remote.currently_active,
        };
        let _writer = self.writer.lock().await;
        let stored = self.db.presence(remote.user.as_str()).await.map_err(Error::from)?;
        let unchanged = stored.as_ref().is_some_and(|row| {
            row.state == shown.state.as_str()
                && row.status_msg == shown.status_msg
                && row.currently_active == shown.currently_active
        });
        if unchanged {
            return Ok(());
        }
        self.write(&remote.user, &Change { shown, wake: true }).await
    }

    /// The stored presence of a user (None when unknown or presence is disabled).
    pub async fn stored(&self, user: &UserId) -> Result<Option<PresenceRow>, Error> {
        if !self.enabled {
            return Ok(None);
        }
        self.db.presence(user.as_str()).await.map_err(Error::from)
    }

    /// Users shown online or unavailable when the server (re)starts get their countdowns again,
    /// so a restart cannot leave anyone online forever.
    async fn adopt_stored(&self) -> Result<(), Error> {
        let _writer = self.writer.lock().await;
        let newest = self.db.newest_presence_pos().await.map_err(Error::from)?;
        self.newest_pos.store(newest, Ordering::Release);
        let rows = self.db.present_users(self.server_name.as_str()).await.map_err(Error::from)?;
        let now = now_millis() as i64;
        let mut inner = self.lock();
        for row in rows {
            let Ok(user) = UserId::parse(&row.user_id) else { continue };
            if !inner.live.contains_key(&user) {
                inner.live.insert(user.clone(), Live::from_row(Some(&row), now));
                inner.reschedule(&user, &self.settings);
            }
        }
        Ok(())
    }
}

/// Another server's user's presence, from an `m.presence` EDU.
pub struct RemotePresence {
    pub user: OwnedUserId,
    pub state: State,
    pub status_msg: Option<String>,
    /// Milliseconds since the user was last active, by their server's clock.
    pub last_active_ago: i64,
    pub currently_active: bool,
}

/// A sync in flight: the user counts as syncing until it is dropped.
pub struct SyncGuard {
    syncing: Option<(Arc<Presence>, OwnedUserId)>,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let Some((presence, user)) = self.syncing.take() else { return };
        let mut inner = presence.lock();
        if let Some(live) = inner.live.get_mut(&user) {
            live.syncs = live.syncs.saturating_sub(1);
            live.seen_ts = now_millis() as i64;
        }
        if inner.reschedule(&user, &presence.settings) {
            presence.rearm.notify_one();
        }
    }
}

/// Moves users offline, unavailable or out of `currently_active` as their deadlines pass.
async fn presence_timers(presence: Arc<Presence>) {
    if let Err(err) = presence.adopt_stored().await {
        tracing::warn!(error = %err, "could not load stored presence");
    }
    loop {
        let rearm = presence.rearm.notified();
        let now = now_millis() as i64;
        let (due, next): (Vec<OwnedUserId>, Option<i64>) = {
            let inner = presence.lock();
            let due = inner.queue.iter().take_while(|(at, _)| *at <= now).map(|(_, u)| u.clone()).collect();
            (due, inner.queue.iter().find(|(at, _)| *at > now).map(|(at, _)| *at))
        };
        for user in due {
            if let Err(err) = presence.feed(&user, Input::Tick).await {
                tracing::warn!(%user, error = %err, "could not update presence");
            }
        }
        if presence.stream.is_shutting_down() {
            return;
        }
        match next {
            Some(deadline) => {
                let wait = Duration::from_millis((deadline - now).max(1) as u64);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = rearm => {}
                }
            }
            None => rearm.await,
        }
    }
}

/// A presence event as `/sync` delivers it.
pub fn presence_event(p: &PresenceRow, now: i64) -> Value {
    let mut content = json!({
        "presence": p.state,
        "last_active_ago": (now - p.last_active_ts).max(0),
        "currently_active": p.currently_active,
    });
    if let Some(msg) = &p.status_msg {
        content["status_msg"] = json!(msg);
    }
    json!({ "type": "m.presence", "sender": p.user_id, "content": content })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PresenceSettings {
        PresenceSettings {
            enabled: true,
            offline_after: Duration::from_millis(30_000),
            idle_after: Duration::from_millis(300_000),
        }
    }

    fn offline_user(now: i64) -> Live {
        Live::from_row(None, now)
    }

    #[test]
    fn a_long_poll_keeps_its_user_online_and_the_end_starts_the_countdown() {
        let s = settings();
        let mut live = offline_user(0);
        let change = live.step(&Input::SyncStarted { wanted: State::Online }, 1_000, &s).unwrap();
        assert!(change.wake);
        assert_eq!((change.shown.state, change.shown.currently_active), (State::Online, true));
        live.shown = change.shown;
        // 45 s into the poll: still syncing, so not offline, but no longer currently active.
        let change = live.step(&Input::Tick, 61_000, &s).unwrap();
        assert_eq!((change.shown.state, change.shown.currently_active), (State::Online, false));
        live.shown = change.shown;
        assert!(live.step(&Input::Tick, 90_000, &s).is_none(), "a sync in flight keeps the user online");
        // The poll ends; 30 s later the user is offline.
        live.syncs = 0;
        live.seen_ts = 100_000;
        assert_eq!(live.next_deadline(&s), Some(130_000));
        assert!(live.step(&Input::Tick, 129_000, &s).is_none());
        let change = live.step(&Input::Tick, 130_000, &s).unwrap();
        assert_eq!(change.shown.state, State::Offline);
        assert!(change.wake);
    }

    #[test]
    fn idle_users_become_unavailable_and_activity_brings_them_back() {
        let s = settings();
        let mut live = offline_user(0);
        live.shown = live.step(&Input::SyncStarted { wanted: State::Online }, 0, &s).unwrap().shown;
        live.shown = live.step(&Input::Tick, 60_000, &s).unwrap().shown;
        assert!(!live.shown.currently_active);
        // Syncing alone is not activity.
        assert!(live.step(&Input::SyncStarted { wanted: State::Online }, 100_000, &s).is_none());
        let change = live.step(&Input::Tick, 300_000, &s).unwrap();
        assert_eq!(change.shown.state, State::Unavailable);
        live.shown = change.shown;
        let change = live.step(&Input::Activity, 310_000, &s).unwrap();
        assert_eq!((change.shown.state, change.shown.currently_active), (State::Online, true));
        assert_eq!(change.shown.last_active_ts, 310_000);
        live.shown = change.shown;
        // More activity inside the window changes nothing shown; after it, a quiet refresh.
        assert!(live.step(&Input::Activity, 320_000, &s).is_none());
        let refresh = live.step(&Input::Activity, 370_000, &s).unwrap();
        assert!(!refresh.wake, "a last_active refresh wakes nobody");
        assert_eq!(refresh.shown.last_active_ts, 370_000);
    }

    #[test]
    fn explicit_states_and_sync_requests() {
        let s = settings();
        let mut live = offline_user(0);
        let change = live.step(&Input::SyncStarted { wanted: State::Unavailable }, 0, &s).unwrap();
        assert_eq!(change.shown.state, State::Unavailable);
        live.shown = change.shown;
        // A later plain sync does not override unavailable; setting it does.
        assert!(live.step(&Input::SyncStarted { wanted: State::Online }, 1_000, &s).is_none());
        let set = Input::Set { state: State::Online, status_msg: Some("back".into()) };
        let change = live.step(&set, 2_000, &s).unwrap();
        assert_eq!((change.shown.state, change.shown.status_msg.as_deref()), (State::Online, Some("back")));
        live.shown = change.shown;
        let change = live.step(&Input::SyncStarted { wanted: State::Unavailable }, 3_000, &s).unwrap();
        assert_eq!(change.shown.state, State::Unavailable);
    }
}
