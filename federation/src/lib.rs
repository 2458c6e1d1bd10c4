//! federation: everything server-to-server.
//!
//! Layout:
//! - [`signing_key`]: this server's signing key (kept on disk in the format Synapse uses).
//! - [`client`]: the outbound HTTPS client — server discovery, the SSRF guard, TLS, `X-Matrix`
//!   signing, bounded responses.
//! - [`keys`]: other servers' verify keys (fetched directly or through notaries, stored).
//! - [`key_server`]: our key and the notary endpoints (`/_matrix/key/v2/*`).
//! - [`auth`]: verifying the `X-Matrix` signature of every inbound federation request.
//! - [`transactions`]: `PUT /send/{txnId}` — inbound PDUs into the room model, gaps filled;
//!   `edus` applies typing and receipt EDUs to `homeserver-live`.
//! - `events`, `state`: serving `/event`, `/get_missing_events`, `/state`, `/state_ids` and
//!   `/event_auth` to member servers, with server-level visibility.
//! - `membership`: joining as the resident server (`make_join`, `send_join` v2); [`joiner`]:
//!   joining as the joining server; `leaver`: leaving rooms held elsewhere (rejecting invites);
//!   `knocker`: knocking on rooms held elsewhere;
//!   `invites`: `/invite` v2 both ways; `legacy`: the deprecated v1 `send_join`, `send_leave`
//!   and `invite` forms over the same code. [`remote`] plugs these and profile queries into the room
//!   model as its `RemoteServers`.
//! - [`sender`]: this server's events to the other servers of their rooms, routed into a
//!   persisted outbox when they happen, delivered per destination with backoff;
//!   [`recovery`] clears a backoff when the destination makes a request here.
//! - `query` (profile), `directory` (aliases, public rooms; both ways) and `version`.
//! - [`media`]: this server's media served to other servers, and theirs fetched for the media
//!   repository (plugged in at start-up like `remote`).
//!
//! Receiving and sending events, EDUs, membership and backfill come on top of these.

pub mod auth;
mod backfiller;
pub mod client;
mod device_lists;
mod directory;
mod e2ee;
mod edus;
mod events;
mod invites;
pub mod joiner;
pub mod key_server;
pub mod keys;
mod knocker;
mod leaver;
pub mod legacy;
pub mod media;
mod membership;
pub mod openid;
mod query;
pub mod recovery;
pub mod remote;
pub mod remote_lists;
pub mod sender;
pub mod signing_key;
mod state;
pub mod transactions;
mod version;

use std::{sync::Arc, time::Duration};

use axum::Router;
use homeserver_core::keys::ServerKey;
use homeserver_rooms::Rooms;
use homeserver_storage::Db;

pub use client::{ClientSettings, FederationClient, FederationError};
pub use keys::KeyStore;

/// State of the federation routes. Cheap to clone.
#[derive(Clone)]
pub struct FederationState {
    pub key: ServerKey,
    /// How long other servers may cache the published key.
    pub key_validity: Duration,
    pub keys: Arc<KeyStore>,
    pub client: FederationClient,
    pub db: Db,
    pub rooms: Rooms,
    /// Typing, presence and receipts shared with the client API (EDUs feed them).
    pub live: homeserver_live::Live,
    /// Positions replayed to a destination back from an outage (`federation.catch_up_cap`).
    pub catch_up_cap: u32,
    /// Answers of recent inbound transactions (idempotency).
    pub transactions: Arc<transactions::Transactions>,
    /// Destinations in backoff, cleared when they make a request here.
    pub recovery: Arc<recovery::Recovery>,
    /// The media repository (served to other servers; theirs fetched into it).
    pub media: homeserver_media::MediaRepo,
    /// Other servers' users' device lists being fetched in the background.
    pub device_resyncs: Arc<remote_lists::Resyncs>,
}

/// The federation router (already given its state; the caller adds the fallbacks).
pub fn routes(state: FederationState) -> Router {
    let router = Router::new();
    let router = key_server::routes(router);
    let router = version::routes(router);
    let router = query::routes(router);
    let router = transactions::routes(router);
    let router = events::routes(router);
    let router = state::routes(router);
    let router = membership::routes(router);
    let router = invites::routes(router);
    let router = legacy::routes(router);
    let router = directory::routes(router);
    let router = media::routes(router);
    let router = e2ee::routes(router);
    let router = openid::routes(router);
    router.with_state(state)
}
