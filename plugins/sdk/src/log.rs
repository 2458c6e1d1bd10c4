//! Logging to the server's log (and the plugin's log the admin reads), and admin counters.
//!
//! The macros [`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
//! [`warn!`](crate::warn) and [`error!`](crate::error) take `format!` arguments.

use crate::bindings::lattice::plugin::log as host;

/// Log levels: `Trace`, `Debug`, `Info`, `Warn`, `Error`.
pub use host::Level;

/// Writes one message at `level`.
pub fn write(level: Level, message: &str) {
    host::log(level, message);
}

pub fn trace(message: &str) {
    write(Level::Trace, message);
}

pub fn debug(message: &str) {
    write(Level::Debug, message);
}

pub fn info(message: &str) {
    write(Level::Info, message);
}

pub fn warn(message: &str) {
    write(Level::Warn, message);
}

pub fn error(message: &str) {
    write(Level::Error, message);
}

/// Adds `delta` to the counter `name`, which the admin API reports per plugin.
pub fn counter(name: &str, delta: u64) {
    host::counter(name, delta);
}

/// Logs at trace level: `trace!("got {n} events")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Trace, &::std::format!($($arg)*)) };
}

/// Logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)*)) };
}

/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)*)) };
}

/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)*)) };
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)*)) };
}
