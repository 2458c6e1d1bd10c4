//! Benchmark fixture: registers version 1.0.0 with no commands; every export returns `Ok` at
//! once, without calling the host (not even to accept invites).

use lattice_plugin_sdk::{Plugin, Registration};

struct Noop;

impl Plugin for Noop {
    fn registration() -> Registration {
        Registration::new("1.0.0")
    }
}

lattice_plugin_sdk::export_plugin!(Noop);
