//! Echo bot: the example plugin, also used by the host's tests.
//!
//! - Accepts invites of its own user.
//! - `!echo count` replies in thread `count: N`, N being the number of echoes so far (KV `count`).
//! - `!echo <text>` increments KV `count` and replies in thread `<greeting>: <text>`
//!   (config `greeting`, default `echo`).
//! - Every `m.room.message` from someone else whose body does not start with `!` is recorded as
//!   KV `seen/<delivery id, 20 digits>` = body, so tests can read what arrived and in what order.

use lattice_plugin_sdk::{
    self as sdk, Command, Commands, ConfigKey, ConfigKind, Delivery, Event, Kv, Plugin, Registration,
};

struct EchoBot;

fn commands() -> Commands {
    Commands::new().on("echo", echo)
}

fn echo(command: &Command) -> sdk::Result<()> {
    let kv = Kv::new();
    if command.args == "count" {
        let count = kv.get_str("count")?.unwrap_or_else(|| "0".to_owned());
        sdk::reply_in_thread(&command.event, &format!("count: {count}"))?;
    } else {
        kv.increment("count", 1)?;
        let config = sdk::config();
        let greeting = config["greeting"].as_str().unwrap_or("echo");
        sdk::reply_in_thread(&command.event, &format!("{greeting}: {}", command.args))?;
    }
    Ok(())
}

impl Plugin for EchoBot {
    fn registration() -> Registration {
        Registration::new("1.0.0").commands(commands().words()).config_key(ConfigKey::optional(
            "greeting",
            ConfigKind::String,
            "What replies start with (default \"echo\").",
        ))
    }

    fn on_event(event: &Event, delivery: Delivery) -> sdk::Result<()> {
        if sdk::accept_invite(event)? {
            return Ok(());
        }
        if event.is_message()
            && event.sender() != sdk::whoami()
            && let Some(body) = event.body().filter(|b| !b.starts_with('!'))
        {
            Kv::prefixed("seen/").put_str(&format!("{:020}", delivery.id), body)?;
        }
        Ok(())
    }

    fn on_command(command: &Command, _delivery: Delivery) -> sdk::Result<()> {
        commands().dispatch(command)
    }
}

lattice_plugin_sdk::export_plugin!(EchoBot);
