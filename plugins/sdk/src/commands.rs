//! [`Commands`]: maps command words to handler functions.
//!
//! ```ignore
//! fn commands() -> Commands {
//!     Commands::new().on("ping", ping).on("roll", roll)
//! }
//! impl Plugin for Dice {
//!     fn registration() -> Registration {
//!         Registration::new("1.0.0").commands(commands().words())
//!     }
//!     fn on_command(command: &Command, _: Delivery) -> sdk::Result<()> {
//!         commands().dispatch(command)
//!     }
//! }
//! ```

use crate::{Command, Result};

/// A command handler.
pub type Handler = fn(&Command) -> Result<()>;

/// Command words and their handlers.
#[derive(Clone, Default)]
pub struct Commands {
    routes: Vec<(String, Handler)>,
}

impl Commands {
    pub fn new() -> Self {
        Commands::default()
    }

    /// Routes `!word …` to `handler` (a later route for the same word replaces an earlier one).
    pub fn on(mut self, word: impl Into<String>, handler: Handler) -> Self {
        let word = word.into();
        self.routes.retain(|(w, _)| *w != word);
        self.routes.push((word, handler));
        self
    }

    /// The routed words, for [`crate::Registration::commands`].
    pub fn words(&self) -> Vec<String> {
        self.routes.iter().map(|(w, _)| w.clone()).collect()
    }

    /// Calls the handler of `command.name`. A word without a handler is logged at warn level and
    /// answered `Ok` (the host only sends registered words, so it is a registration mismatch
    /// that retrying would not fix).
    pub fn dispatch(&self, command: &Command) -> Result<()> {
        match self.routes.iter().find(|(w, _)| *w == command.name) {
            Some((_, handler)) => handler(command),
            None => {
                crate::log::warn(&format!("no handler for command {:?}", command.name));
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.iter().map(|(w, _)| w)).finish()
    }
}
