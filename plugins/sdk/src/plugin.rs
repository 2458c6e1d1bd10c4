//! The [`Plugin`] trait: one associated function per export of the `guest` and `bridge-guest`
//! interfaces.

use serde::Deserialize;

use crate::net::NetEvent;
use crate::webhook::{HttpRequest, HttpResponse};
use crate::Ephemeral;
use crate::{Command, Delivery, Error, Event, ProposedEvent, Registration, Verdict};

/// What the host tells the plugin at `init` (its `info-json`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Info {
    /// The homeserver's name (`example.org`).
    pub server_name: String,
    /// The bot's full user id (`@echo:example.org`).
    pub user_id: String,
    /// The plugin's id from `lattice.toml` (`[plugins.<id>]`).
    pub plugin_id: String,
}

/// A plugin. Every method has a default except [`Plugin::registration`]; export the type with
/// [`crate::export_plugin!`].
///
/// The methods are associated functions: the host keeps one component instance per plugin and
/// calls one export at a time, so state that must outlive a call goes in a `static`
/// (`std::sync::OnceLock`, `thread_local!`) or, to survive reloads and restarts, in [`crate::Kv`].
pub trait Plugin {
    /// The version, commands and configuration keys the default [`Plugin::init`] answers.
    fn registration() -> Registration;

    /// Called once per instance before anything else. An `Err` refuses the start.
    fn init(info: &Info) -> Result<Registration, String> {
        let _ = info;
        Ok(Self::registration())
    }

    /// Called after `init` when the stored version differs from the registered one (`None`: the
    /// first start). The new version is recorded, and the plugin serves, only once this is `Ok`.
    fn migrate(from_version: Option<&str>) -> Result<(), String> {
        let _ = from_version;
        Ok(())
    }

    /// An event of a room the bot is in, or an invite of the bot. An `Err` is retried with
    /// backoff, then dead-lettered.
    fn on_event(event: &Event, delivery: Delivery) -> Result<(), Error> {
        let _ = (event, delivery);
        Ok(())
    }

    /// A `!word args…` message for one of the registered command words; retried like events.
    fn on_command(command: &Command, delivery: Delivery) -> Result<(), Error> {
        let _ = (command, delivery);
        Ok(())
    }

    /// A timer set with [`crate::timers::set`] is due.
    fn on_timer(tag: &str) -> Result<(), Error> {
        let _ = tag;
        Ok(())
    }

    /// Something happened on the connection `name` the plugin opened with [`crate::net::open`]:
    /// it is established, a message arrived, or it closed. Calls come in order per connection.
    /// An `Err` is only logged by the host: the event is not delivered again, so a bridge keeps
    /// what it must not lose (a message it could not relay yet) in [`crate::Kv`] itself.
    fn on_net(name: &str, event: NetEvent) -> Result<(), Error> {
        let _ = (name, event);
        Ok(())
    }

    /// For a bridge (a plugin granted `net` or `namespaces`): a typing notice (`m.typing`,
    /// `{"user_ids": […]}`) or a public read receipt (`m.receipt`, as in `/sync`) in a room its
    /// bot is in. An `Err` is only logged.
    fn on_ephemeral(event: &Ephemeral) -> Result<(), Error> {
        let _ = event;
        Ok(())
    }

    /// For a policy (a plugin granted `policy`): an event a user of the server is about to send,
    /// before it is stored. The server waits for the answer — at most `grants.policy_ms`, after
    /// which it allows the event and counts a crash — so answer from what is at hand.
    fn check_event(event: &ProposedEvent) -> Verdict {
        let _ = event;
        Verdict::Allow
    }

    /// For a plugin granted `webhooks`: a request to `/_lattice/plugins/<id>/…` (`request.path`
    /// is what follows the id). Authenticate the caller yourself (a token from your
    /// configuration); see [`crate::webhook`] for building answers.
    fn on_http_request(request: &HttpRequest) -> HttpResponse {
        let _ = request;
        crate::webhook::text(404, "not found")
    }
}

/// The glue [`crate::export_plugin!`] expands to: converts the generated types and calls the
/// [`Plugin`].
pub mod dispatch {
    use super::{Info, Plugin};
    use crate::bindings::exports::lattice::plugin::guest::Invocation;
    use crate::bindings::lattice::plugin::types::Event as RawEvent;
    use crate::net::NetEvent;
    use crate::{Command, Delivery, Error, Event, Registration};

    pub fn init<P: Plugin>(info_json: String) -> Result<Registration, String> {
        install_panic_hook();
        let info: Info = serde_json::from_str(&info_json)
            .map_err(|e| format!("malformed info-json from the host: {e}"))?;
        P::init(&info)
    }

    pub fn migrate<P: Plugin>(from_version: Option<String>) -> Result<(), String> {
        P::migrate(from_version.as_deref())
    }

    pub fn on_event<P: Plugin>(ev: RawEvent, delivery: Delivery) -> Result<(), Error> {
        P::on_event(&Event::from_raw(ev), delivery)
    }

    pub fn on_command<P: Plugin>(invocation: Invocation, delivery: Delivery) -> Result<(), Error> {
        let command = Command {
            event: Event::from_raw(invocation.event),
            name: invocation.name,
            args: invocation.args,
        };
        P::on_command(&command, delivery)
    }

    pub fn on_timer<P: Plugin>(tag: String) -> Result<(), Error> {
        P::on_timer(&tag)
    }

    pub fn on_net<P: Plugin>(name: String, event: NetEvent) -> Result<(), Error> {
        P::on_net(&name, event)
    }

    pub fn on_ephemeral<P: Plugin>(event: crate::Ephemeral) -> Result<(), Error> {
        P::on_ephemeral(&event)
    }

    pub fn check_event<P: Plugin>(event: crate::ProposedEvent) -> crate::Verdict {
        P::check_event(&event)
    }

    pub fn on_http_request<P: Plugin>(request: crate::webhook::HttpRequest) -> crate::webhook::HttpResponse {
        P::on_http_request(&request)
    }

    /// Sends panic messages to the host's log: with `panic = "abort"` a panic is a trap, and the
    /// message would otherwise only reach the (discarded) stderr.
    fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::error(&format!("panic: {info}"));
            }));
        });
    }
}
