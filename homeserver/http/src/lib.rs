//! homeserver-http: where ruma's typed Matrix endpoints meet axum.
//!
//! Layout:
//! - [`error`]: [`ApiError`], the single place a domain error becomes an HTTP status and a Matrix
//!   `{"errcode","error"}` body.
//! - [`extract`]: the [`Ruma`] extractor — body limit, JSON checks, path/query parsing through
//!   ruma, and authentication resolved into the type the endpoint's metadata demands (a handler of
//!   an authenticated endpoint receives a [`Session`], never an `Option`).
//! - `guest`: the endpoints a guest account may call, checked wherever a token is resolved.
//! - [`nul`]: the middleware that refuses NUL characters from clients (PostgreSQL cannot store
//!   them in text).
//! - [`route`]: [`RouterExt::ruma_route`] registers a handler on every path and method its ruma
//!   request type declares, so no route string is typed by hand; plus the `M_UNRECOGNIZED`
//!   fallbacks.

pub mod error;
pub mod extract;
mod guest;
mod legacy_auth;
pub mod nul;
pub mod route;

pub use error::ApiError;
pub use extract::{AuthState, Authenticated, Ruma, Session};
pub use route::{IntoMatrixResponse, JsonBody, RawResponse, RouterExt, RumaResponse, unrecognized_fallbacks};
