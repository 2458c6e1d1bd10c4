//! What `init` answers: the plugin's version, command words and configuration keys.

/// The generated `config-key` record (`name`, `kind`, `required`, `description`).
pub use crate::bindings::exports::lattice::plugin::guest::ConfigKey;
/// The kind of value a configuration key takes: `String`, `Integer`, `Boolean`, `List`, `Table`,
/// `Secret`.
pub use crate::bindings::exports::lattice::plugin::guest::ConfigKind;
/// The generated `registration` record (`version`, `commands`, `config`), with builder methods.
pub use crate::bindings::exports::lattice::plugin::guest::Registration;

impl Registration {
    /// A registration with this version, no commands and no configuration keys.
    ///
    /// `migrate` is called when the version differs from the one the host stored.
    pub fn new(version: impl Into<String>) -> Self {
        Registration { version: version.into(), commands: Vec::new(), config: Vec::new() }
    }

    /// Adds a command word: `"echo"` routes messages starting with `!echo` to `on_command`.
    pub fn command(mut self, word: impl Into<String>) -> Self {
        self.commands.push(word.into());
        self
    }

    /// Adds several command words (e.g. [`crate::Commands::words`]).
    pub fn commands<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.commands.extend(words.into_iter().map(Into::into));
        self
    }

    /// Declares a configuration key. The host refuses to start the plugin on keys not declared,
    /// required keys missing, or values of the wrong kind.
    pub fn config_key(mut self, key: ConfigKey) -> Self {
        self.config.push(key);
        self
    }
}

impl ConfigKey {
    /// A key the configuration must contain.
    pub fn required(name: impl Into<String>, kind: ConfigKind, description: impl Into<String>) -> Self {
        ConfigKey { name: name.into(), kind, required: true, description: description.into() }
    }

    /// A key the configuration may contain (the plugin supplies the default itself).
    pub fn optional(name: impl Into<String>, kind: ConfigKind, description: impl Into<String>) -> Self {
        ConfigKey { name: name.into(), kind, required: false, description: description.into() }
    }
}
