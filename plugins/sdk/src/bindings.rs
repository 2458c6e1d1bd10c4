//! The bindings `wit-bindgen` generates for the `full` world of `plugins/wit/plugin.wit`.
//!
//! `full` is `bridge` (`bot` plus the `puppets` and `net` imports and the `bridge-guest` export)
//! plus the `policy-guest` export. Every plugin gets these bindings, bots included:
//! `wit-component` keeps only the imports a module actually calls, so a bot that never touches
//! [`crate::net`] or [`crate::puppets`] still imports exactly what the `bot` world does. It
//! exports `bridge-guest` and `policy-guest` as well; the host calls `on-net` only for a plugin
//! with connections and `check-event` only for a plugin the admin granted `policy`.
//!
//! Exposed through [`crate::raw`] (imports) and the crate's re-exports; the export side is only
//! reached through [`crate::export_plugin!`].

wit_bindgen::generate!({
    world: "full",
    path: "../wit",
    pub_export_macro: true,
    default_bindings_module: "lattice_plugin_sdk::__private::bindings",
});
