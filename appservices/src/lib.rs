//! appservices: the Application Service API. So far: loading and validating registration files
//! (the YAML an application service operator gives the homeserver) and matching user ids, room
//! aliases and room ids against their namespaces. Delivering events to application services and
//! authenticating their requests come with the application-service issue.
//!
//! Layout:
//! - [`registration`]: [`Registration`], parsed from YAML with its namespace regexes compiled once.

pub mod registration;

pub use registration::{Registration, RegistrationError, load_registrations};
