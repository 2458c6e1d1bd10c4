//! Write Lattice plugins in Rust.
//!
//! A Lattice plugin is a WebAssembly component built against a world of the WIT package
//! `lattice:plugin@0.1.0` (`plugins/wit/plugin.wit`): `bot`, `bridge` (a bot that also acts as
//! puppets and keeps network connections), `policy` or `webhooks`. This crate generates the
//! bindings for `full` (all of them) and wraps them so that a plugin is one type implementing
//! [`Plugin`] plus one [`export_plugin!`] line; what the host calls is what the admin granted.
//! A plugin that uses neither [`net`] nor [`puppets`] imports only what `bot` does (the
//! component keeps only the imports the code calls), so it runs as a bot:
//!
//! ```ignore
//! use lattice_plugin_sdk::{self as sdk, Command, Delivery, Event, Plugin, Registration};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn registration() -> Registration {
//!         Registration::new("1.0.0").command("hello")
//!     }
//!     fn on_event(event: &Event, _delivery: Delivery) -> sdk::Result<()> {
//!         sdk::accept_invite(event)?;
//!         Ok(())
//!     }
//!     fn on_command(command: &Command, _delivery: Delivery) -> sdk::Result<()> {
//!         sdk::reply_in_thread(&command.event, &format!("hello, {}", command.event.sender()))?;
//!         Ok(())
//!     }
//! }
//!
//! lattice_plugin_sdk::export_plugin!(Hello);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` (see `plugins/README.md`).
//!
//! What is here:
//! - [`Plugin`] and [`export_plugin!`]: the exports (`init`, `migrate`, `on-event`, `on-command`,
//!   `on-timer`, and a bridge's `on-net`), each with a default.
//! - [`Registration`] / [`ConfigKey`] builders for what `init` answers.
//! - [`Event`] (content parsed as JSON, `body()`, `msgtype()`, …) and [`Command`].
//! - [`matrix`]: `reply_in_thread`, `edit`, `react`, `send_text`, `accept_invite`, `whoami`, and
//!   acting as a puppet (`as_user`, `send_json_as`, `join_as`, `leave_as`…).
//! - [`media`]: upload and download files through the server's media repository.
//! - [`Kv`]: the plugin's key-value store with string and JSON values and compare-and-swap.
//! - [`log`] and the [`info!`]-style macros, [`config()`], [`timers`], and a [`Commands`] router.
//! - [`http`]: outbound HTTP over `wasi:http` (a blocking client, chunked bodies, server-sent
//!   events), for plugins granted `http_hosts`.
//! - Bridges: [`puppets`] (`ensure`, `owns`) for the users of the plugin's namespaces, and [`net`]
//!   (`open`, `send`, `close`, `list`) for the connections the host keeps for it, whose events
//!   arrive at [`Plugin::on_net`].
//! - Policies: [`Plugin::check_event`], asked about every event the server's users send when the
//!   admin grants the plugin `policy`.
//! - Webhooks: [`Plugin::on_http_request`] and [`webhook`] helpers, for a plugin granted
//!   `webhooks` (requests to `/_lattice/plugins/<id>/…`).
//! - [`raw`]: the generated bindings of every import, for what the helpers do not cover.

#[doc(hidden)]
pub mod bindings;
pub mod commands;
pub mod config;
mod error;
pub mod event;
pub mod http;
pub mod kv;
pub mod log;
pub mod matrix;
pub mod media;
pub mod net;
pub mod plugin;
pub mod puppets;
pub mod registration;
pub mod webhook;

pub use commands::{Commands, Handler};
pub use config::{config, config_as};
pub use event::{Command, Event};
pub use kv::Kv;
pub use matrix::{accept_invite, edit, react, reply_in_thread, send_text, whoami};
pub use net::NetEvent;
/// A typing notice or read receipt for a bridge ([`Plugin::on_ephemeral`]).
pub use bindings::exports::lattice::plugin::bridge_guest::Ephemeral;
/// What a policy is asked about ([`Plugin::check_event`]) and answers.
pub use bindings::exports::lattice::plugin::policy_guest::{ProposedEvent, Verdict};
pub use plugin::{Info, Plugin};
pub use registration::{ConfigKey, ConfigKind, Registration};

/// Host timers (`timers::set(tag, after_ms)`, `timers::cancel(tag)`); due timers call
/// [`Plugin::on_timer`].
pub use bindings::lattice::plugin::timers;
/// One delivery of an event: its stream position `id` (stable across redeliveries) and `attempt`
/// (from 1).
pub use bindings::lattice::plugin::types::Delivery;
/// Why a host call failed (the WIT `error` variant); also what `on_event`, `on_command` and
/// `on_timer` return to have the host retry.
pub use bindings::lattice::plugin::types::Error;
/// `m.relates_to` as the host parsed it.
pub use bindings::lattice::plugin::types::Relation;
/// `serde_json`, re-exported so plugins can use the same version as [`Event::content`].
pub use serde_json;

/// `Result` with the host's [`Error`] by default.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// The generated bindings of the imported interfaces, unwrapped: `raw::matrix`, `raw::kv`,
/// `raw::timers`, `raw::log`, `raw::config`, `raw::types`, `raw::puppets`, `raw::net`.
pub mod raw {
    pub use crate::bindings::lattice::plugin::*;
}

/// Exports a [`Plugin`] type as the component's `lattice:plugin/guest`,
/// `lattice:plugin/bridge-guest`, `lattice:plugin/policy-guest` and
/// `lattice:plugin/webhook-guest` interfaces.
///
/// Use it once per plugin crate, at the crate root: `lattice_plugin_sdk::export_plugin!(MyBot);`
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __LatticePluginExport;
            impl $crate::__private::Guest for __LatticePluginExport {
                fn init(
                    info_json: $crate::__private::String,
                ) -> ::core::result::Result<$crate::Registration, $crate::__private::String> {
                    $crate::__private::init::<$plugin>(info_json)
                }
                fn migrate(
                    from_version: ::core::option::Option<$crate::__private::String>,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::migrate::<$plugin>(from_version)
                }
                fn on_event(
                    ev: $crate::__private::RawEvent,
                    delivery: $crate::Delivery,
                ) -> ::core::result::Result<(), $crate::Error> {
                    $crate::__private::on_event::<$plugin>(ev, delivery)
                }
                fn on_command(
                    invocation: $crate::__private::Invocation,
                    delivery: $crate::Delivery,
                ) -> ::core::result::Result<(), $crate::Error> {
                    $crate::__private::on_command::<$plugin>(invocation, delivery)
                }
                fn on_timer(tag: $crate::__private::String) -> ::core::result::Result<(), $crate::Error> {
                    $crate::__private::on_timer::<$plugin>(tag)
                }
            }
            impl $crate::__private::WebhookGuest for __LatticePluginExport {
                fn on_http_request(req: $crate::webhook::HttpRequest) -> $crate::webhook::HttpResponse {
                    $crate::__private::on_http_request::<$plugin>(req)
                }
            }
            impl $crate::__private::PolicyGuest for __LatticePluginExport {
                fn check_event(ev: $crate::ProposedEvent) -> $crate::Verdict {
                    $crate::__private::check_event::<$plugin>(ev)
                }
            }
            impl $crate::__private::BridgeGuest for __LatticePluginExport {
                fn on_net(
                    name: $crate::__private::String,
                    ev: $crate::net::NetEvent,
                ) -> ::core::result::Result<(), $crate::Error> {
                    $crate::__private::on_net::<$plugin>(name, ev)
                }
                fn on_ephemeral(ev: $crate::Ephemeral) -> ::core::result::Result<(), $crate::Error> {
                    $crate::__private::on_ephemeral::<$plugin>(ev)
                }
            }
            $crate::__private::export!(
                __LatticePluginExport with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Used by [`export_plugin!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::export;
    pub use crate::bindings::exports::lattice::plugin::bridge_guest::Guest as BridgeGuest;
    pub use crate::bindings::exports::lattice::plugin::guest::{Guest, Invocation};
    pub use crate::bindings::exports::lattice::plugin::policy_guest::Guest as PolicyGuest;
    pub use crate::bindings::exports::lattice::plugin::webhook_guest::Guest as WebhookGuest;
    pub use crate::bindings::lattice::plugin::types::Event as RawEvent;
    pub use crate::plugin::dispatch::*;
    pub use std::string::String;
}
