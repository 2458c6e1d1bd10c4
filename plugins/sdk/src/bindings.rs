//! The bindings `wit-bindgen` generates for the `bot` world of `plugins/wit/plugin.wit`.
//!
//! Exposed through [`crate::raw`] (imports) and the crate's re-exports; the export side is only
//! reached through [`crate::export_plugin!`].

wit_bindgen::generate!({
    world: "bot",
    path: "../wit",
    pub_export_macro: true,
    default_bindings_module: "lattice_plugin_sdk::__private::bindings",
});
