//! The plugin's configuration: the `config` table of its `[plugins.<id>]` entry in
//! `lattice.toml`, already checked by the host against the registered [`crate::ConfigKey`]s.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::lattice::plugin::config as host;

/// The configuration as a JSON object (an empty object if the host sent something unparsable).
///
/// Optional keys the admin left out are simply absent; apply defaults when reading:
/// `config()["greeting"].as_str().unwrap_or("echo")`.
pub fn config() -> Value {
    serde_json::from_str(&host::get()).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// The configuration deserialized into `T` (use `#[serde(default)]` for optional keys).
pub fn config_as<T: DeserializeOwned>() -> crate::Result<T> {
    Ok(serde_json::from_str(&host::get())?)
}
