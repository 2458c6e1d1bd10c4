//! homeserver-client-api: the Matrix client-server API handlers.
//!
//! Layout: one file per endpoint group, each with a `routes()` that registers its handlers from
//! ruma metadata ([`homeserver_http::RouterExt::ruma_route`]).
//! - [`discovery`]: `/versions`, `.well-known`, `/capabilities`.
//! - [`account`]: registration, login, logout, whoami, password, deactivation; [`uia`] is the
//!   user-interactive auth they share; [`devices`], [`profile`].
//! - [`rooms`]: creation, membership, aliases, the public room directory.
//! - [`events`]: sending, state, redaction, and reading events (`/event`, `/members`,
//!   `/messages`, `/context`).
//! - [`sync`]: `/sync`, whose response `homeserver-sync` computes; [`filter`] stores filters,
//!   [`account_data`] checks and stores account data.
//! - [`typing`], [`presence`], [`receipts`]: the handlers in front of `homeserver-live`, which
//!   owns the live state (typing, presence, unread counts, ignore lists) they and sync share.
//! - [`ratelimit`]: token buckets per action (Synapse's `rc_*`); [`passwords`]: every password
//!   hash and check, rate-limited per account and address, with bounded concurrency.
//!
//! Handlers are thin: parse (done by the extractor), check who may do it, call one operation of
//! `homeserver-rooms` or storage, shape the response. They hold no locks and write no room events
//! themselves.

pub mod account;
pub mod account_data;
pub mod admin;
pub mod backup;
pub mod cross_signing;
pub mod devices;
pub mod discovery;
pub mod events;
pub mod filter;
mod guests;
pub mod keys;
pub mod legacy;
mod legacy_extras;
pub mod media;
pub mod openid;
mod paging;
pub mod passwords;
pub mod presence;
pub mod profile;
pub mod push_rule_set;
pub mod pushers;
pub mod pushrules;
pub mod ratelimit;
pub mod receipts;
pub mod relations;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod spaces;
pub mod sync;
pub mod tags;
pub mod timestamp;
pub mod typing;
pub mod uia;
pub mod upgrade;
pub mod user_directory;

use std::sync::Arc;

use axum::Router;
use homeserver_core::{Error, ErrorKind, ids::hash_token, streams::EventStream};
use homeserver_http::{AuthState, Session};
use homeserver_live::{Live, presence::PresenceSettings};
use homeserver_rooms::Rooms;
use homeserver_storage::Db;
use homeserver_sync::Syncer;
use ruma::{OwnedServerName, UserId};

use crate::ratelimit::{Action, RateLimiter, RateLimits};

/// Settings of the client API.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server_name: OwnedServerName,
    /// Whether anyone may register (`m.login.dummy`, or a token when tokens are configured).
    pub registration_enabled: bool,
    /// Whether guest accounts may be created (`POST /register?kind=guest`).
    pub guest_access: bool,
    /// If non-empty, registration requires one of these tokens (`m.login.registration_token`).
    pub registration_tokens: Vec<String>,
    /// `m.homeserver.base_url` for `/.well-known/matrix/client` (absent: 404).
    pub well_known_base_url: Option<String>,
    /// Rate limits per action (`None`: unlimited).
    pub rate_limits: RateLimits,
    /// Upper bound for a `/sync` long-poll timeout.
    pub max_sync_timeout_ms: u64,
    /// Secret for Synapse-style shared-secret registration (`/_synapse/admin/v1/register`).
    pub registration_shared_secret: Option<String>,
    /// Whether presence is tracked and delivered, and its timings.
    pub presence: PresenceSettings,
    /// Whether the user directory finds every user (not only room mates and public rooms).
    pub search_all_users: bool,
    /// The media repository's limits, switches and place.
    pub media: homeserver_media::MediaConfig,
}

impl ClientConfig {
    pub fn new(server_name: OwnedServerName) -> Self {
        Self {
            server_name,
            registration_enabled: true,
            guest_access: false,
            registration_tokens: Vec::new(),
            well_known_base_url: None,
            rate_limits: RateLimits::default(),
            max_sync_timeout_ms: 60_000,
            registration_shared_secret: None,
            presence: PresenceSettings::default(),
            search_all_users: false,
            media: homeserver_media::MediaConfig::new(std::path::PathBuf::from("./lattice-data/media")),
        }
    }
}

/// The application state every handler receives. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    pub config: ClientConfig,
    pub db: Db,
    pub rooms: Rooms,
    pub stream: Arc<EventStream>,
    pub limiter: RateLimiter,
    pub passwords: passwords::Passwords,
    pub nonces: admin::Nonces,
    /// Typing, presence, unread counts, ignore lists, account-data writes.
    pub live: Live,
    pub syncer: Syncer,
    pub media: homeserver_media::MediaRepo,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    /// Takes one token of `action`'s rate limit for `key` (a user id or an address).
    pub fn limit(&self, action: Action, key: &str) -> Result<(), Error> {
        self.limiter.check(self.config.rate_limits.of(action), action, key)
    }

    pub fn new(config: ClientConfig, db: Db, rooms: Rooms) -> Self {
        let stream = rooms.stream().clone();
        let limiter = RateLimiter::new();
        let passwords = passwords::Passwords::new(config.rate_limits.password);
        let nonces = admin::Nonces::default();
        let live = Live::start(db.clone(), stream.clone(), config.presence, config.server_name.clone());
        let syncer = Syncer::new(db.clone(), rooms.clone(), live.clone());
        let media = homeserver_media::MediaRepo::new(db.clone(), &config.server_name, config.media.clone());
        App(Arc::new(AppInner { config, db, rooms, stream, limiter, passwords, nonces, live, syncer, media }))
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }

    /// True if the user id belongs to this server.
    pub fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.config.server_name
    }
}

impl AuthState for App {
    async fn authenticate(&self, token: &str) -> Result<Session, Error> {
        let owner = self.db.token_owner(&hash_token(token)).await.map_err(Error::from)?;
        let unknown = || Error::new(ErrorKind::UnknownToken { soft_logout: false }, "Unknown access token");
        let owner = owner.ok_or_else(unknown)?;
        if owner.deactivated {
            return Err(unknown());
        }
        Ok(Session {
            user_id: UserId::parse(owner.user_id).map_err(|e| Error::internal(e.to_string()))?,
            device_id: owner.device_id.into(),
            is_admin: owner.is_admin,
            is_guest: owner.is_guest,
        })
    }
}

/// Every client-server route.
pub fn routes() -> Router<App> {
    let router = Router::new();
    let router = discovery::routes(router);
    let router = account::routes(router);
    let router = devices::routes(router);
    let router = profile::routes(router);
    let router = rooms::routes(router);
    let router = events::routes(router);
    let router = sync::routes(router);
    let router = filter::routes(router);
    let router = admin::routes(router);
    let router = legacy::routes(router);
    let router = presence::routes(router);
    let router = receipts::routes(router);
    let router = pushrules::routes(router);
    let router = openid::routes(router);
    let router = pushers::routes(router);
    let router = typing::routes(router);
    let router = tags::routes(router);
    let router = user_directory::routes(router);
    let router = relations::routes(router);
    let router = search::routes(router);
    let router = upgrade::routes(router);
    let router = spaces::routes(router);
    let router = timestamp::routes(router);
    let router = reports::routes(router);
    let router = media::routes(router);
    let router = keys::routes(router);
    let router = cross_signing::routes(router);
    let router = backup::routes(router);
    account_data::routes(router)
}

/// `value` with the keys whose value is `null` removed: the spec omits absent optional fields
/// rather than sending `null`, and strict clients (and the spec's schemas) expect that.
pub(crate) fn without_nulls(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    value
}
