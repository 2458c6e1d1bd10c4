//! Integration tests of the room model against a real database (SQLite, or PostgreSQL when
//! `LATTICE_TEST_DATABASE_URL` is set).
//!
//! - `pipeline`: created events are valid signed PDUs; auth rules reject what they must.
//! - `classic_cases`: Synapse's state-resolution cases as data.
//! - `dag`: remote events in any order converge (`dag_support`: fake servers, fixtures).

mod classic_cases;
mod dag;
mod dag_support;
mod pipeline;
