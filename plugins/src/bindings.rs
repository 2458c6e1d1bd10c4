//! The host side of the WIT worlds, generated from `plugins/wit`: the `full` world, which
//! includes `bridge` (which includes `bot`) and the policy export, so one linker serves every
//! world (a bot simply imports less) and each export beyond `guest` is looked up per component. Every import is async
//! (Matrix actions and the store are database calls); none can trap: failures are the WIT
//! `error` variant, so a host problem never looks like a guest crash.

wasmtime::component::bindgen!({
    path: "wit",
    world: "full",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use exports::lattice::plugin::{bridge_guest, guest, policy_guest, webhook_guest};
pub(crate) use lattice::plugin::{config, kv, log, matrix, media, net, puppets, timers, types};
