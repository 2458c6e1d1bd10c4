//! Fresh, throw-away databases for tests, on SQLite always and on PostgreSQL when
//! `LATTICE_TEST_DATABASE_URL` points at a server.
//!
//! Every [`TestDatabase`] is its own database (a new SQLite file, or a new Postgres database
//! created next to the one the URL names) and is removed when dropped, so tests never see each
//! other's rows and can run in parallel.

use std::path::PathBuf;

use sqlx::{Connection, Executor};

/// The environment variable that selects PostgreSQL for tests.
pub const TEST_DATABASE_ENV: &str = "LATTICE_TEST_DATABASE_URL";

/// A database that exists for the lifetime of this value.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// Creates a fresh empty database (not yet migrated; [`crate::Db::connect`] migrates).
    pub async fn create() -> TestDatabase {
        let suffix = format!(
            "{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                % 1_000_000_000_000
        );
        match std::env::var(TEST_DATABASE_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => {
                sqlx::any::install_default_drivers();
                let name = format!("lattice_test_{suffix}_{}", rand_suffix());
                let mut conn = sqlx::AnyConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach {TEST_DATABASE_ENV}: {e}"));
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let url = replace_db_name(&admin_url, &name);
                TestDatabase { url, cleanup: Cleanup::Postgres { admin_url, name } }
            }
            _ => {
                let dir = std::env::temp_dir().join("lattice-tests");
                std::fs::create_dir_all(&dir).expect("temp dir");
                let path = dir.join(format!("db_{suffix}_{}.sqlite", rand_suffix()));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                TestDatabase { url, cleanup: Cleanup::File(path) }
            }
        }
    }

    /// True when the tests run against PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.cleanup, Cleanup::Postgres { .. })
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id()) % 1_000_000
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Dropping runs outside any runtime the test may still be inside of.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                    if let Ok(rt) = rt {
                        rt.block_on(async {
                            if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await {
                                let _ = conn
                                    .execute(sqlx::AssertSqlSafe(format!(
                                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                    )))
                                    .await;
                            }
                        });
                    }
                })
                .join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::replace_db_name;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_db_name("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://h/test?sslmode=disable", "y"),
            "postgres://h/y?sslmode=disable"
        );
        assert_eq!(replace_db_name("postgres://h", "z"), "postgres://h/z");
    }
}
