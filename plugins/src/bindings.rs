//! The host side of the WIT world `bot`, generated from `plugins/wit`. Every import is async
//! (Matrix actions and the store are database calls); none can trap: failures are the WIT
//! `error` variant, so a host problem never looks like a guest crash.

wasmtime::component::bindgen!({
    path: "wit",
    world: "bot",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use exports::lattice::plugin::guest;
pub(crate) use lattice::plugin::{config, kv, log, matrix, timers, types};
