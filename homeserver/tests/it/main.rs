//! End-to-end tests: real servers on ephemeral loopback ports, driven over HTTP — by the
//! `matrix-sdk` client library for the main flows and by raw HTTP where the wire matters.
//! Each test gets its own database: SQLite, or PostgreSQL when `LATTICE_TEST_DATABASE_URL` is set.
//!
//! - `harness`: `TestServer` (start, restart, stop) and raw-HTTP helpers.
//! - `sdk`: the core flow with matrix-sdk (register, create, invite, join, chat, sync, history).
//! - `sdk_chat`: everyday chat features through matrix-sdk (DM, unread, typing, favourite, edit,
//!   reactions, thread, recall, ignore, user directory).
//! - `sdk_groups`: group features through matrix-sdk (muting a room, search, presence, knocking,
//!   content reports, room upgrades).
//! - `accounts`: registration, login, logout, devices, password, deactivation, profiles.
//! - `errors`: every error code the foundation promises, with its status.
//! - `rooms`: room creation options, membership, aliases, directory, state, redaction, reads.
//! - `sync`: initial/incremental sync, filters, lazy loading, long-poll wake-up latency.
//! - `lifecycle`: restarts keep everything; the binary's CLI and config errors.
//! - `friends`: direct chats, tags, ignoring users, the user directory.
//! - `relations`: edits, reactions, threads, references, `/relations`, `/threads`.
//! - `search`: `POST /search`, CJK text, pagination, context, visibility.
//! - `groups`: knock, restricted joins, upgrades, space hierarchy, jump to date, pins, reports.
//! - `guests`: guest accounts, the endpoints open to them, rooms that allow them, peeking.
//! - `admin`: the Synapse-compatible admin API (users, rooms, reports; admins only).
//! - `chat`: receipts, read markers, typing, unread counts, push rules, notifications.
//! - `presence`: the online/unavailable/offline state machine as room mates see it.
//! - `push`: pushers and a test push gateway: one notification per notifying event, formats,
//!   outages and restarts, rejected pushkeys, validation.
//! - `fuzz`: property tests over bodies, filters, search and pagination parameters: no 5xx,
//!   no dropped connection, bounded time.
//! - `limits`: rate limits with the defaults, one budget per effect whichever endpoint reaches
//!   it; capped directory pages.
//! - `durability`: sync tokens of every stream across a restart; concurrent read-modify-writes.
//! - `hardening`: rules no endpoint can skip (redaction authority, one membership path, aliases),
//!   concurrent writes, bounded filters, lax and malformed request bodies.
//! - `visibility`: history visibility on every event-returning endpoint (left, never joined, late).
//! - `e2ee_federation`: keys queried and claimed through another server; to-device and
//!   device-list EDUs.
//! - `federation`, `federation_membership`, `federation_delivery`: servers federating over HTTPS
//!   with a test CA — keys, signed requests, transactions, joins, messages; invites, rejections,
//!   knocks, leaves, directories, backfill, EDUs; outages, catch-up and the destinations' admin.
//! - `plugins`: WASM plugins hosted for real — the echo bot, hostile fixtures contained, delivery
//!   across a disabled plugin and a restart, reload rollback, send rate, the plugin admin API.
//! - `plugin_binary`, `upstream`: the `lattice` binary run from a `lattice.toml` with secrets in
//!   its environment, and an OpenAI-compatible streaming test server, for the plugin tests below.
//! - `plugins_chatgpt`: the ChatGPT bot against a streaming model service: threads, context,
//!   edits, direct chats, mentions, per-room settings, provider failures.
//! - `plugins_http`: plugin HTTP as an admin runs it (the binary, a granted host, a secret from
//!   the environment, a streamed answer), and a plugin refused for requests it was not granted.
//! - `spec_schema`: responses validated against the Matrix spec's OpenAPI schemas (`../shared/matrix-spec`).

mod accounts;
mod admin;
mod chat;
mod durability;
mod e2ee;
mod e2ee_federation;
mod errors;
mod federation;
mod federation_delivery;
mod federation_discovery;
mod federation_membership;
mod federation_versions;
mod friends;
mod fuzz;
mod groups;
mod guests;
mod hardening;
mod harness;
mod ircd;
mod key_backup;
mod lifecycle;
mod limits;
mod media;
mod media_federation;
mod merges;
mod plugin_binary;
mod plugins;
mod plugins_chatgpt;
mod plugins_http;
mod plugins_irc;
mod plugins_policy;
mod plugins_python;
mod plugins_webhooks;
mod plugins_ws;
mod presence;
mod push;
mod relations;
mod rooms;
mod sdk;
mod sdk_chat;
mod sdk_groups;
mod search;
mod spec_schema;
mod sync;
mod upstream;
mod visibility;
