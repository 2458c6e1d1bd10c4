//! [`MediaRepo`]: uploads (streamed, within the size limit and the uploader's quota),
//! asynchronous uploads (`create`, then `fill` by the same user before the id expires) and
//! reads of this server's media. Every upload — a client's or a plugin's — goes through
//! [`MediaRepo::upload`] or [`MediaRepo::fill`], so the limits hold for all.

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use futures::Stream;
use homeserver_core::{ids::random_string, time::now_millis};
use homeserver_storage::{Db, StorageError, media::MediaRow};
use ruma::{ServerName, UserId};

use crate::{
    serving,
    store::{ContentStore, StoreError},
};

/// The repository's limits and switches.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Where content files live (`<data_dir>/media`).
    pub root: PathBuf,
    /// Largest upload (`[media] max_upload_bytes`).
    pub max_upload_bytes: u64,
    /// Bytes one user may have uploaded in all (`[media] user_quota_bytes`).
    pub user_quota_bytes: u64,
    /// Whether new media is also served by the legacy unauthenticated endpoints.
    pub legacy_unauthenticated: bool,
    /// How long an id from `create` waits for its content.
    pub pending_ms: u64,
    /// Pending ids one user may have at once.
    pub max_pending: i64,
}

impl MediaConfig {
    pub fn new(root: PathBuf) -> MediaConfig {
        MediaConfig {
            root,
            max_upload_bytes: 100 << 20,
            user_quota_bytes: 10 << 30,
            legacy_unauthenticated: false,
            pending_ms: 24 * 3600 * 1000,
            max_pending: 10,
        }
    }
}

/// Why a media request failed.
#[derive(Debug)]
pub enum MediaError {
    /// Over the size limit (the limit).
    TooLarge(u64),
    QuotaExceeded,
    NotFound,
    NotYetUploaded,
    CannotOverwrite,
    Forbidden(String),
    TooManyPending,
    /// More uploads of one user at once than allowed.
    TooManyUploads,
    /// The upload stream failed.
    Body(String),
    Internal(String),
}

impl From<StorageError> for MediaError {
    fn from(err: StorageError) -> Self {
        MediaError::Internal(err.to_string())
    }
}

impl From<std::io::Error> for MediaError {
    fn from(err: std::io::Error) -> Self {
        MediaError::Internal(err.to_string())
    }
}

/// An upload's id and `mxc://` URI.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub media_id: String,
    pub mxc: String,
}

/// Uploads one user may stream at once.
const UPLOADS_PER_USER: usize = 4;

#[derive(Clone)]
pub struct MediaRepo {
    db: Db,
    store: ContentStore,
    server_name: Arc<str>,
    pub config: Arc<MediaConfig>,
    /// Uploads streaming now, per user.
    streaming: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Held while an upload's quota is checked and its row written, so concurrent uploads of
    /// one user cannot all fit the same remainder.
    committing: Arc<tokio::sync::Mutex<()>>,
}

/// One of a user's streaming uploads, counted until dropped.
struct Streaming {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    user: String,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("upload counts poisoned");
        if let Some(n) = counts.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

impl MediaRepo {
    /// The repository; what interrupted uploads of an earlier run left is removed.
    pub fn new(db: Db, server_name: &ServerName, config: MediaConfig) -> MediaRepo {
        let store = ContentStore::new(config.root.clone());
        store.clear_temporary();
        MediaRepo {
            db,
            store,
            server_name: server_name.as_str().into(),
            config: Arc::new(config),
            streaming: Arc::default(),
            committing: Arc::default(),
        }
    }

    /// Counts an upload of `user`'s, or refuses it past [`UPLOADS_PER_USER`] at once.
    fn start_streaming(&self, user: &UserId) -> Result<Streaming, MediaError> {
        let mut counts = self.streaming.lock().expect("upload counts poisoned");
        let n = counts.entry(user.to_string()).or_default();
        if *n >= UPLOADS_PER_USER {
            return Err(MediaError::TooManyUploads);
        }
        *n += 1;
        Ok(Streaming { counts: self.streaming.clone(), user: user.to_string() })
    }

    /// Whether `size` more bytes fit `uploader`'s quota now (call under `committing`).
    async fn fits_quota(&self, uploader: &UserId, size: u64) -> Result<bool, MediaError> {
        let used = self.db.media_bytes_of(uploader.as_str()).await?.max(0) as u64;
        Ok(used.saturating_add(size) <= self.config.user_quota_bytes)
    }

    fn uploaded(&self, media_id: String) -> Uploaded {
        Uploaded { mxc: format!("mxc://{}/{media_id}", self.server_name), media_id }
    }

    /// How much `uploader` may still upload in one go: the size limit or what is left of the
    /// quota, and whether the quota is the tighter.
    async fn allowance(&self, uploader: &UserId) -> Result<(u64, bool), MediaError> {
        let used = self.db.media_bytes_of(uploader.as_str()).await?.max(0) as u64;
        let left = self.config.user_quota_bytes.saturating_sub(used);
        if left == 0 {
            return Err(MediaError::QuotaExceeded);
        }
        Ok((left.min(self.config.max_upload_bytes), left < self.config.max_upload_bytes))
    }

    /// Streams `body` into the store within the uploader's allowance.
    async fn store<E: std::fmt::Display>(
        &self,
        uploader: &UserId,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<crate::store::Stored, MediaError> {
        let _streaming = self.start_streaming(uploader)?;
        let (limit, quota_bound) = self.allowance(uploader).await?;
        self.store.write(body, limit).await.map_err(|err| match err {
            StoreError::TooLarge if quota_bound => MediaError::QuotaExceeded,
            StoreError::TooLarge => MediaError::TooLarge(self.config.max_upload_bytes),
            StoreError::Body(why) => MediaError::Body(why),
            StoreError::Io(err) => MediaError::Internal(err.to_string()),
        })
    }

    /// Uploads content; durable when this returns.
    pub async fn upload<E: std::fmt::Display>(
        &self,
        uploader: &UserId,
        content_type: Option<&str>,
        filename: Option<&str>,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<Uploaded, MediaError> {
        let stored = self.store(uploader, body).await?;
        let _commit = self.committing.lock().await;
        if !self.fits_quota(uploader, stored.size).await? {
            return Err(MediaError::QuotaExceeded);
        }
        let media_id = random_string(24);
        let row = MediaRow {
            origin: self.server_name.to_string(),
            media_id: media_id.clone(),
            sha256: Some(stored.sha256),
            content_type: serving::content_type(content_type),
            filename: serving::filename(filename),
            size: stored.size as i64,
            uploader: uploader.to_string(),
            created_ts: now_millis() as i64,
            expires_ts: None,
            legacy_visible: self.config.legacy_unauthenticated,
            quarantined: false,
        };
        self.db.insert_media(&row).await?;
        Ok(self.uploaded(media_id))
    }

    /// Reserves an id for content to come (`POST /media/v1/create`); with when it expires.
    pub async fn create(&self, uploader: &UserId) -> Result<(Uploaded, u64), MediaError> {
        // Counted and written under the commit lock, so concurrent creates cannot all fit.
        let _commit = self.committing.lock().await;
        let now = now_millis();
        if self.db.pending_media_of(uploader.as_str(), now as i64).await? >= self.config.max_pending {
            return Err(MediaError::TooManyPending);
        }
        let media_id = random_string(24);
        let expires = now + self.config.pending_ms;
        let row = MediaRow {
            origin: self.server_name.to_string(),
            media_id: media_id.clone(),
            sha256: None,
            content_type: "application/octet-stream".into(),
            filename: None,
            size: 0,
            uploader: uploader.to_string(),
            created_ts: now as i64,
            expires_ts: Some(expires as i64),
            legacy_visible: self.config.legacy_unauthenticated,
            quarantined: false,
        };
        self.db.insert_media(&row).await?;
        Ok((self.uploaded(media_id), expires))
    }

    /// Gives a reserved id its content (`PUT /media/v3/upload/{server}/{id}`): only its creator,
    /// only once, only before it expires.
    pub async fn fill<E: std::fmt::Display>(
        &self,
        uploader: &UserId,
        server: &str,
        media_id: &str,
        content_type: Option<&str>,
        filename: Option<&str>,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<(), MediaError> {
        let now = now_millis() as i64;
        let row = match self.db.media(server, media_id).await? {
            Some(row) if server == &*self.server_name => row,
            _ => return Err(MediaError::NotFound),
        };
        if row.uploader != uploader.as_str() {
            return Err(MediaError::Forbidden("only the creator of a media id may upload to it".into()));
        }
        if row.sha256.is_some() {
            return Err(MediaError::CannotOverwrite);
        }
        if row.expires_ts.is_none_or(|at| at <= now) {
            return Err(MediaError::NotFound);
        }
        let stored = self.store(uploader, body).await?;
        let _commit = self.committing.lock().await;
        if !self.fits_quota(uploader, stored.size).await? {
            return Err(MediaError::QuotaExceeded);
        }
        let filled = MediaRow {
            sha256: Some(stored.sha256),
            content_type: serving::content_type(content_type),
            filename: serving::filename(filename),
            size: stored.size as i64,
            ..row
        };
        let filled = self.db.fill_media(&filled, now).await?;
        match filled {
            true => Ok(()),
            // Another upload to the id won the race.
            false => Err(MediaError::CannotOverwrite),
        }
    }

    /// This server's media, ready to serve.
    pub async fn get(&self, server: &str, media_id: &str) -> Result<MediaRow, MediaError> {
        if server != &*self.server_name {
            // Other servers' media comes with federation's media endpoints.
            return Err(MediaError::NotFound);
        }
        match self.db.media(server, media_id).await? {
            Some(row) if row.quarantined => Err(MediaError::NotFound),
            Some(row) if row.sha256.is_none() => {
                match row.expires_ts.is_some_and(|at| at > now_millis() as i64) {
                    true => Err(MediaError::NotYetUploaded),
                    false => Err(MediaError::NotFound),
                }
            }
            Some(row) => Ok(row),
            None => Err(MediaError::NotFound),
        }
    }

    /// The content of stored media, for streaming out.
    pub async fn open(&self, row: &MediaRow) -> Result<tokio::fs::File, MediaError> {
        let sha256 = row.sha256.as_deref().ok_or(MediaError::NotYetUploaded)?;
        Ok(self.store.open(sha256).await?)
    }

    /// The content of stored media, read whole (at most `limit` bytes): for plugins.
    pub async fn read(&self, row: &MediaRow, limit: u64) -> Result<Vec<u8>, MediaError> {
        if row.size as u64 > limit {
            return Err(MediaError::TooLarge(limit));
        }
        let sha256 = row.sha256.as_deref().ok_or(MediaError::NotYetUploaded)?;
        Ok(tokio::fs::read(self.store.path_of(sha256)).await?)
    }
}

/// The one mapping from media failures to Matrix errors.
impl From<MediaError> for homeserver_core::Error {
    fn from(err: MediaError) -> Self {
        use homeserver_core::{Error, ErrorKind};
        match err {
            MediaError::TooLarge(limit) => {
                Error::new(ErrorKind::TooLarge, format!("Uploads are at most {limit} bytes"))
            }
            MediaError::QuotaExceeded => Error::forbidden("You have reached your media quota"),
            MediaError::NotFound => Error::not_found("Unknown media"),
            MediaError::NotYetUploaded => {
                Error::new(ErrorKind::NotYetUploaded, "The content of this media has not been uploaded yet")
            }
            MediaError::CannotOverwrite => {
                Error::new(ErrorKind::CannotOverwriteMedia, "This media already has content")
            }
            MediaError::Forbidden(why) => Error::forbidden(why),
            MediaError::TooManyPending => Error::new(
                ErrorKind::LimitExceeded { retry_after_ms: 60_000 },
                "Too many media ids waiting for their content",
            ),
            MediaError::TooManyUploads => {
                Error::new(ErrorKind::LimitExceeded { retry_after_ms: 1_000 }, "Too many uploads at once")
            }
            MediaError::Body(why) => {
                Error::new(ErrorKind::Unknown, format!("The upload was cut short: {why}"))
            }
            MediaError::Internal(why) => Error::internal(why),
        }
    }
}
