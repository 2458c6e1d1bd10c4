//! appservices: the Application Service API. So far: loading and validating registration files
//! (the YAML an application service operator gives the homeserver) and matching user ids, room
//! aliases and room ids against their namespaces. Delivering events to application services and
//! authenticating their requests come with the application-service issue.
//!
//! Layout:
//! - [`registration`]: [`Registration`], parsed from YAML with its namespace regexes compiled once.
//! - [`claims`]: [`Claims`], the exclusive user and alias namespaces of application services and
//!   plugins, which clients cannot register or create.

pub mod claims;
pub mod registration;

pub use claims::{Claim, Claims};
pub use registration::{Namespace, Registration, RegistrationError, load_registrations};
