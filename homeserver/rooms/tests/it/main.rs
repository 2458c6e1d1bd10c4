//! Integration tests of the room model against a real database (SQLite, or PostgreSQL when
//! `LATTICE_TEST_DATABASE_URL` is set).
//!
//! - `pipeline`: created events are valid signed PDUs; auth rules reject what they must.

mod pipeline;
