//! `log` (into the server's log and the plugin's own, which the admin reads) and `config`.

use serde_json::Value;

use crate::{
    bindings::{config, log},
    instance::PluginState,
};

/// Longest log message kept; longer ones are cut.
const MAX_MESSAGE: usize = 4096;
/// Counters a plugin may have.
const MAX_COUNTERS: usize = 100;

impl log::Host for PluginState {
    async fn log(&mut self, level: log::Level, message: String) {
        self.rearm();
        let level = match level {
            log::Level::Trace | log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if level == "error" {
            self.last_error_log = Some(message.clone());
        }
        self.ctx.guest_log(level, message);
    }

    async fn counter(&mut self, name: String, delta: u64) {
        self.rearm();
        let name: String = name.chars().take(64).collect();
        let mut counters = self.ctx.counters.lock().expect("counters poisoned");
        if counters.len() >= MAX_COUNTERS && !counters.contains_key(&name) {
            return;
        }
        let value = counters.entry(name).or_default();
        *value = value.saturating_add(delta);
    }
}

impl config::Host for PluginState {
    async fn get(&mut self) -> String {
        self.rearm();
        Value::Object(self.ctx.config.lock().expect("config poisoned").visible.clone()).to_string()
    }
}
