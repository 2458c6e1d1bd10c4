//! homeserver-storage: the one place Lattice talks SQL, on PostgreSQL and SQLite alike.
//!
//! Layout:
//! - [`Db`]: the connection pools and engine selection ([`Db::connect`] by URL scheme), and the
//!   embedded migrations for both engines.
//! - [`accounts`]: users, devices, access tokens, UIA sessions, profiles; [`token_cache`] keeps
//!   recent token lookups.
//! - [`events`]: reading events, state groups and membership; [`persist`] applies a whole batch of
//!   room events (the plan the room pipeline computed) in a single transaction.
//! - [`aliases`], [`account_data`], [`txn`]: the smaller aggregates; [`admin`]: server
//!   administration (user lists, room summaries, blocking and purging rooms).
//!
//! Design decision: one store over sqlx's `Any` driver rather than one adapter crate per engine.
//! Every query is written once in the SQL subset both engines accept (`$N` placeholders, `ON
//! CONFLICT`, `RETURNING`, recursive CTEs, integers instead of booleans); only the DDL is
//! per engine (`migrations/{sqlite,postgres}`). The storage test-suite runs on both. See
//! ARCHITECTURE.md for why.
//!
//! SQLite has one writer at a time. Writes therefore go through a separate pool with a single
//! connection (transactions queue in the pool instead of failing with SQLITE_BUSY), reads through a
//! pool of WAL readers. On PostgreSQL both handles are the same pool.

pub mod account_data;
pub mod accounts;
pub mod admin;
pub mod aliases;
pub mod dag;
pub mod destinations;
pub mod directory;
pub mod e2ee;
pub mod events;
pub mod key_backup;
pub mod media;
pub mod notifications;
pub mod openid;
pub mod persist;
pub mod plugins;
pub mod presence;
pub mod pushers;
pub mod receipts;
pub mod relations;
pub mod remote_devices;
pub mod reports;
pub mod search;
pub mod server_keys;
pub mod testing;
pub mod token_cache;
pub mod txn;
pub mod visibility;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    AnyPool, ConnectOptions, Connection, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Errors from the database. They carry no HTTP meaning; callers decide what a failure means.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database URL `{0}` is not a sqlite:// or postgres:// URL")]
    UnsupportedUrl(String),
    #[error("cannot connect to database `{url}`: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unique constraint violated")]
    Conflict,
    #[error("room alias already taken")]
    AliasTaken,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The one way a storage failure becomes a domain error: internal (clients see no detail), with
/// the storage error kept as the source for the log.
impl From<StorageError> for homeserver_core::Error {
    fn from(err: StorageError) -> Self {
        homeserver_core::Error::internal_from(err)
    }
}

/// Which SQL engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Connection pools for one database.
#[derive(Clone)]
pub struct Db {
    read: AnyPool,
    write: AnyPool,
    engine: Engine,
    /// Recent access-token lookups (see [`token_cache`]).
    tokens: Arc<token_cache::TokenCache>,
}

impl Db {
    /// Connects by URL (`sqlite://path?mode=rwc` or `postgres://…`) with the default options
    /// and runs the migrations.
    pub async fn connect(url: &str) -> Result<Db> {
        Self::connect_with(url, DbOptions::default()).await
    }

    /// Connects by URL with `options` and runs the migrations.
    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Db> {
        let sync = options.sqlite_synchronous;
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            return Err(StorageError::UnsupportedUrl(url.to_owned()));
        };
        let connect_err = |source| StorageError::Connect { url: redact_url(url), source };
        // Slow statements are logged at debug only: the multi-row inserts of a big batch are
        // long, and their text would flood a `warn` log.
        let connect = AnyConnectOptions::from_str(url)
            .map_err(connect_err)?
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let db = match engine {
            Engine::Sqlite => {
                let write = AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            sqlite_connection_pragmas(conn, sync).await
                        })
                    })
                    .connect_with(connect.clone())
                    .await
                    .map_err(connect_err)?;
                let read = AnyPoolOptions::new()
                    .max_connections(8)
                    .idle_timeout(Duration::from_secs(300))
                    .after_connect(move |conn, _| Box::pin(sqlite_connection_pragmas(conn, sync)))
                    .connect_with(connect)
                    .await
                    .map_err(connect_err)?;
                Db { read, write, engine, tokens: Arc::default() }
            }
            Engine::Postgres => {
                // One direct attempt first: a refused connection fails at once instead of after
                // the pool's acquire timeout.
                let probe = sqlx::AnyConnection::connect_with(&connect).await.map_err(connect_err)?;
                let _ = probe.close().await;
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(connect)
                    .await
                    .map_err(connect_err)?;
                Db { read: pool.clone(), write: pool, engine, tokens: Arc::default() }
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<()> {
        match self.engine {
            Engine::Sqlite => SQLITE_MIGRATIONS.run(&self.write).await?,
            Engine::Postgres => POSTGRES_MIGRATIONS.run(&self.write).await?,
        }
        Ok(())
    }

    /// Refreshes the query planner's statistics (`ANALYZE`). PostgreSQL's autovacuum does this
    /// on its own schedule; a bulk load (a benchmark, an import) wants it at once.
    pub async fn analyze(&self) -> Result<()> {
        self.write.execute("ANALYZE").await?;
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The pool for reads (WAL readers on SQLite).
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for writes (the single writer connection on SQLite).
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// A write transaction that excludes every other transaction opened with the same `key`
    /// until it ends, for read-modify-write of one document: SQLite takes its write lock up
    /// front (`BEGIN IMMEDIATE`, so a read inside never races a writer in another process);
    /// PostgreSQL takes a transaction-scoped advisory lock on the key's hash, which works
    /// whether or not the row exists yet.
    pub async fn locked_tx(&self, key: &str) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.engine {
            Engine::Sqlite => Ok(self.writer().begin_with("BEGIN IMMEDIATE").await?),
            Engine::Postgres => {
                let mut tx = self.writer().begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// Closes all connections (used on shutdown so SQLite checkpoints its WAL).
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// How SQLite syncs commits to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is fsynced before it returns: it survives power loss and OS crashes. With
    /// the room pipeline's group commit that is one fsync per batch, not per event.
    #[default]
    Full,
    /// In WAL mode a commit survives a process crash (kill -9); an OS crash or power loss can
    /// lose the last transactions (never the file's consistency).
    Normal,
}

/// Connection options.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbOptions {
    /// SQLite only.
    pub sqlite_synchronous: Synchronous,
}

async fn sqlite_connection_pragmas(
    conn: &mut sqlx::AnyConnection,
    sync: Synchronous,
) -> Result<(), sqlx::Error> {
    conn.execute(match sync {
        Synchronous::Full => "PRAGMA synchronous = FULL",
        Synchronous::Normal => "PRAGMA synchronous = NORMAL",
    })
    .await?;
    conn.execute("PRAGMA busy_timeout = 10000").await?;
    conn.execute("PRAGMA cache_size = -4000").await?;
    Ok(())
}

/// A database URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `$first, $first+1, …` placeholders for an `IN (…)` list of `count` values.
/// Rows of `table` (its `columns`) at these stream positions, mapped by `map`: receipts and
/// presence rows move to a new position when rewritten, so a position finds the row only while
/// it is current.
pub(crate) async fn rows_at_positions<T>(
    db: &Db,
    table: &str,
    columns: &str,
    positions: &[i64],
    map: impl Fn(&sqlx::any::AnyRow) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for chunk in positions.chunks(500) {
        let sql =
            format!("SELECT {columns} FROM {table} WHERE stream_pos IN ({})", placeholders(1, chunk.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for pos in chunk {
            q = q.bind(*pos);
        }
        for row in q.fetch_all(db.reader()).await? {
            out.push(map(&row)?);
        }
    }
    Ok(out)
}

/// The stand-in "device" of to-device messages another server sends (`federation:{origin}`):
/// their message ids are deduplicated under it.
pub const FEDERATION_DEVICE_PREFIX: &str = "federation:";

pub(crate) fn placeholders(first: usize, count: usize) -> String {
    let mut out = String::with_capacity(count * 4);
    for i in 0..count {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('$');
        out.push_str(&(first + i).to_string());
    }
    out
}

/// Maps a unique-constraint violation to [`StorageError::Conflict`].
pub(crate) fn conflict_or(err: sqlx::Error) -> StorageError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        return StorageError::Conflict;
    }
    StorageError::Backend(err)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dag;
#[cfg(test)]
mod tests_device_lists;
#[cfg(test)]
mod tests_plugins;
