//! [`MediaRepo`]: uploads (streamed, within the size limit and the uploader's quota),
//! asynchronous uploads (`create`, then `fill` by the same user before the id expires) and
//! reads of this server's media. Every upload — a client's or a plugin's — goes through
//! [`MediaRepo::upload`] or [`MediaRepo::fill`], so the limits hold for all.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use futures::Stream;
use homeserver_core::{ids::random_string, time::now_millis};
use homeserver_storage::{
    Db, StorageError,
    media::{MediaRow, ThumbnailRow},
};
use ruma::{ServerName, UserId};
use tokio::sync::Semaphore;

use crate::{
    remote::{RemoteError, RemoteMedia},
    serving,
    store::{ContentStore, StoreError},
    thumbnail::{self, Method},
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
    /// Bytes of other servers' media kept cached (the oldest fetched dropped past it).
    pub remote_cache_bytes: u64,
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
            remote_cache_bytes: 10 << 30,
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
    /// Another server's media could not be fetched.
    Remote(RemoteError),
    /// Another server's media is larger than this server's upload limit.
    RemoteTooLarge,
    /// The media has no thumbnail (not an image of a type thumbnails are made of).
    NoThumbnail,
    /// The image is too large to thumbnail.
    ThumbnailTooLarge,
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
/// Thumbnails rendered at once (CPU-bound, each on a blocking thread).
const RENDERS_AT_ONCE: usize = 2;
/// Other servers' media fetched at once.
const REMOTE_FETCHES_AT_ONCE: usize = 8;
/// Largest image thumbnails are made of.
const MAX_THUMBNAIL_SOURCE: u64 = 40 << 20;

/// A thumbnail row's content type when the original answers at that size (no larger).
const ORIGINAL: &str = "x-lattice/original";
/// A thumbnail row's content type when the image cannot be thumbnailed (undecodable, too large).
const NONE: &str = "x-lattice/none";

/// The answer a stored thumbnail row gives.
fn answer(row: MediaRow, stored: ThumbnailRow) -> Result<Thumbnail, MediaError> {
    match stored.content_type.as_str() {
        ORIGINAL => Ok(Thumbnail::Original(row)),
        NONE => Err(MediaError::NoThumbnail),
        _ => Ok(Thumbnail::Generated(stored)),
    }
}

/// What answers a thumbnail request.
#[derive(Debug, Clone)]
pub enum Thumbnail {
    /// The media itself (no larger than asked, animated as asked, or larger than all sizes).
    Original(MediaRow),
    Generated(ThumbnailRow),
}

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
    /// Federation's fetcher of other servers' media, once plugged in.
    remote: Arc<OnceLock<Arc<dyn RemoteMedia>>>,
    /// One fetch per remote media id at a time (the rest wait for it and read the cache).
    fetching: FetchLocks,
    remote_fetches: Arc<Semaphore>,
    renders: Arc<Semaphore>,
}

type FetchLocks = Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// A claim on one remote media id's fetch lock, removed from the map by its last holder
/// (also when the request is abandoned midway).
struct FetchSlot {
    locks: FetchLocks,
    key: String,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl FetchSlot {
    fn claim(locks: &FetchLocks, key: String) -> FetchSlot {
        let lock = locks.lock().expect("fetch locks poisoned").entry(key.clone()).or_default().clone();
        FetchSlot { locks: locks.clone(), key, lock: Some(lock) }
    }

    async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.as_ref().expect("held until dropped").lock().await
    }
}

impl Drop for FetchSlot {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().expect("fetch locks poisoned");
        // Clones are made under the map's lock: with ours gone, a count of one is the map's own.
        drop(self.lock.take());
        if locks.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&self.key);
        }
    }
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
    /// The repository.
    pub fn new(db: Db, server_name: &ServerName, config: MediaConfig) -> MediaRepo {
        let store = ContentStore::new(config.root.clone());
        MediaRepo {
            db,
            store,
            server_name: server_name.as_str().into(),
            config: Arc::new(config),
            streaming: Arc::default(),
            committing: Arc::default(),
            remote: Arc::default(),
            fetching: Arc::default(),
            remote_fetches: Arc::new(Semaphore::new(REMOTE_FETCHES_AT_ONCE)),
            renders: Arc::new(Semaphore::new(RENDERS_AT_ONCE)),
        }
    }

    /// Removes what interrupted uploads of an earlier run left: only the serving process, at
    /// start-up (an admin command running beside it must not touch uploads in progress).
    pub fn clear_interrupted_uploads(&self) {
        self.store.clear_temporary();
    }

    /// Plugs in federation's fetcher of other servers' media (once, at start-up).
    pub fn set_remote(&self, remote: Arc<dyn RemoteMedia>) {
        let _ = self.remote.set(remote);
    }

    /// This server's name (the origin of its own media).
    pub fn server_name(&self) -> &str {
        &self.server_name
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
        self.still_stored(&stored.sha256).await?;
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
        self.still_stored(&stored.sha256).await?;
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

    /// Content stored before the commit lock was taken is still there (a deletion of the last
    /// media using it, which holds the lock, may have removed it since).
    async fn still_stored(&self, sha256: &str) -> Result<(), MediaError> {
        match tokio::fs::try_exists(self.store.path_of(sha256)).await? {
            true => Ok(()),
            false => Err(MediaError::Internal("the upload's content was removed meanwhile; retry".into())),
        }
    }

    /// This server's media, ready to serve.
    pub async fn get_local(&self, media_id: &str) -> Result<MediaRow, MediaError> {
        let server = self.server_name.clone();
        self.get_row(&server, media_id).await
    }

    /// Media of any server, ready to serve: another server's is fetched (once) and cached.
    pub async fn get(&self, server: &str, media_id: &str) -> Result<MediaRow, MediaError> {
        // Host names are case-insensitive: one spelling per server, so a quarantine or deletion
        // reaches every copy and this server's own media is never fetched from itself.
        if server.eq_ignore_ascii_case(&self.server_name) {
            let ours = self.server_name.clone();
            return self.get_row(&ours, media_id).await;
        }
        let server = server.to_ascii_lowercase();
        let origin = <&ServerName>::try_from(server.as_str()).map_err(|_| MediaError::NotFound)?;
        // The spec's media id alphabet: nothing else reaches another server's URL.
        let well_formed = !media_id.is_empty()
            && media_id.len() <= 255
            && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(MediaError::NotFound);
        }
        if let Some(row) = self.cached(&server, media_id).await? {
            return Ok(row);
        }
        let slot = FetchSlot::claim(&self.fetching, format!("{server}/{media_id}"));
        let _one = slot.lock().await;
        // A fetch that held the slot before may have cached it.
        match self.cached(&server, media_id).await? {
            Some(row) => Ok(row),
            None => self.fetch(origin, media_id).await,
        }
    }

    /// Another server's media from the cache.
    async fn cached(&self, server: &str, media_id: &str) -> Result<Option<MediaRow>, MediaError> {
        match self.db.media(server, media_id).await? {
            Some(row) if row.quarantined => Err(MediaError::NotFound),
            row => Ok(row.filter(|r| r.sha256.is_some())),
        }
    }

    /// Fetches another server's media into the store and the cache.
    async fn fetch(&self, origin: &ServerName, media_id: &str) -> Result<MediaRow, MediaError> {
        let remote = self.remote.get().ok_or(MediaError::NotFound)?.clone();
        let _slot = self
            .remote_fetches
            .acquire()
            .await
            .map_err(|_| MediaError::Internal("remote fetches closed".into()))?;
        let content = remote.download(origin, media_id).await.map_err(MediaError::Remote)?;
        let stored =
            self.store.write(content.body, self.config.max_upload_bytes).await.map_err(|err| match err {
                StoreError::TooLarge => MediaError::RemoteTooLarge,
                StoreError::Body(why) => MediaError::Remote(RemoteError::Unavailable(why)),
                StoreError::Io(err) => MediaError::Internal(err.to_string()),
            })?;
        let _commit = self.committing.lock().await;
        self.still_stored(&stored.sha256).await?;
        self.make_room_in_cache(stored.size).await?;
        let row = MediaRow {
            origin: origin.to_string(),
            media_id: media_id.to_owned(),
            sha256: Some(stored.sha256),
            content_type: serving::content_type(content.content_type.as_deref()),
            filename: serving::filename(content.filename.as_deref()),
            size: stored.size as i64,
            // Nobody's quota: the cache is the server's.
            uploader: String::new(),
            created_ts: now_millis() as i64,
            expires_ts: None,
            legacy_visible: false,
            quarantined: false,
        };
        match self.db.insert_media(&row).await {
            Ok(()) => Ok(row),
            // Cached meanwhile (by an earlier run's fetch): that row stands.
            Err(StorageError::Conflict) => {
                self.cached(origin.as_str(), media_id).await?.ok_or(MediaError::NotFound)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Drops the oldest cached remote media until `incoming` more bytes fit the cache (call
    /// under `committing`).
    async fn make_room_in_cache(&self, incoming: u64) -> Result<(), MediaError> {
        let limit = self.config.remote_cache_bytes;
        let mut cached = self.db.remote_media_bytes(&self.server_name).await?.max(0) as u64;
        while cached.saturating_add(incoming) > limit {
            let oldest = self.db.remote_media_before(&self.server_name, i64::MAX, 50).await?;
            if oldest.is_empty() {
                break;
            }
            for (origin, media_id) in oldest {
                self.delete_locked(&origin, &media_id).await?;
            }
            cached = self.db.remote_media_bytes(&self.server_name).await?.max(0) as u64;
        }
        Ok(())
    }

    /// What answers a thumbnail request for `row` (`width`x`height` at least, by `method`):
    /// a stored thumbnail, one generated and stored now, or the original.
    pub async fn thumbnail(
        &self,
        row: MediaRow,
        width: u32,
        height: u32,
        method: Method,
        animated: bool,
    ) -> Result<Thumbnail, MediaError> {
        let essence = row.content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let Some(format) = thumbnail::format_of(&essence) else {
            return Err(MediaError::NoThumbnail);
        };
        let Some(size) = thumbnail::choose(width, height, method) else {
            return Ok(Thumbnail::Original(row));
        };
        if row.size as u64 > MAX_THUMBNAIL_SOURCE {
            return Err(match row.origin == *self.server_name {
                true => MediaError::ThumbnailTooLarge,
                false => MediaError::RemoteTooLarge,
            });
        }
        let (w, h, m) = (size.width as i64, size.height as i64, size.method.as_str());
        if !animated && let Some(stored) = self.db.thumbnail(&row.origin, &row.media_id, w, h, m).await? {
            return answer(row, stored);
        }
        // Rendered on a task of its own, so it finishes (and is stored) even if the request is
        // abandoned: a client cannot start renders by disconnecting faster than they complete.
        let repo = self.clone();
        tokio::spawn(async move { repo.render(row, format, size, animated).await })
            .await
            .map_err(|e| MediaError::Internal(e.to_string()))?
    }

    /// Renders and stores one thumbnail size of `row`, at most [`RENDERS_AT_ONCE`] at a time.
    /// An image that needs no thumbnail at this size, or cannot have one, is recorded as such,
    /// so it is decoded once, not on every request.
    async fn render(
        &self,
        row: MediaRow,
        format: image::ImageFormat,
        size: thumbnail::Size,
        animated: bool,
    ) -> Result<Thumbnail, MediaError> {
        let _render = self
            .renders
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MediaError::Internal("renders closed".into()))?;
        let (w, h, m) = (size.width as i64, size.height as i64, size.method.as_str());
        let source = self.read(&row, MAX_THUMBNAIL_SOURCE).await?;
        if animated && thumbnail::is_animated(&source, format) {
            return Ok(Thumbnail::Original(row));
        }
        // Rendered by a request that held a permit before?
        if let Some(stored) = self.db.thumbnail(&row.origin, &row.media_id, w, h, m).await? {
            return answer(row, stored);
        }
        let rendered = tokio::task::spawn_blocking(move || thumbnail::render(&source, format, size))
            .await
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let marker = |content_type: &str| ThumbnailRow {
            origin: row.origin.clone(),
            media_id: row.media_id.clone(),
            width: w,
            height: h,
            method: m.to_owned(),
            sha256: String::new(),
            content_type: content_type.to_owned(),
            size: 0,
        };
        let generated = match rendered {
            Ok(Some(rendered)) => {
                let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(rendered.bytes))]);
                let stored = self
                    .store
                    .write(body, u64::MAX)
                    .await
                    .map_err(|e| MediaError::Internal(format!("{e:?}")))?;
                ThumbnailRow {
                    sha256: stored.sha256,
                    content_type: rendered.content_type.to_owned(),
                    size: stored.size as i64,
                    ..marker("")
                }
            }
            Ok(None) => marker(ORIGINAL),
            Err(err) => {
                tracing::debug!(media = %row.media_id, "no thumbnail: {err}");
                marker(NONE)
            }
        };
        let _commit = self.committing.lock().await;
        if !generated.sha256.is_empty() {
            self.still_stored(&generated.sha256).await?;
        }
        // Not recorded if the media was deleted meanwhile; its file then goes too.
        if !self.db.insert_thumbnail(&generated).await?
            && !generated.sha256.is_empty()
            && !self.db.content_in_use(&generated.sha256).await?
        {
            self.store.remove(&generated.sha256).await?;
        }
        answer(row, generated)
    }

    /// Opens content by its hash (a thumbnail's).
    pub async fn open_content(&self, sha256: &str) -> Result<tokio::fs::File, MediaError> {
        Ok(self.store.open(sha256).await?)
    }

    /// Quarantines media (or lifts it): quarantined media is served to nobody. Whether it exists.
    pub async fn quarantine(&self, server: &str, media_id: &str, on: bool) -> Result<bool, MediaError> {
        Ok(self.db.set_media_quarantined(server, media_id, on).await?)
    }

    /// Deletes media, its thumbnails and the files no other media uses. Whether it existed.
    pub async fn delete(&self, server: &str, media_id: &str) -> Result<bool, MediaError> {
        // Under the commit lock: an upload of the same bytes either committed its row before
        // (the file stays) or finds the file gone and fails (see `still_stored`).
        let _commit = self.committing.lock().await;
        self.delete_locked(server, media_id).await
    }

    /// [`MediaRepo::delete`] under `committing`.
    async fn delete_locked(&self, server: &str, media_id: &str) -> Result<bool, MediaError> {
        let Some(hashes) = self.db.delete_media(server, media_id).await? else { return Ok(false) };
        for sha256 in hashes {
            if !self.db.content_in_use(&sha256).await? {
                self.store.remove(&sha256).await?;
            }
        }
        Ok(true)
    }

    /// Deletes cached media of other servers fetched before `before_ms`; how many.
    pub async fn purge_remote(&self, before_ms: i64) -> Result<u64, MediaError> {
        let mut purged = 0;
        loop {
            let batch = self.db.remote_media_before(&self.server_name, before_ms, 500).await?;
            if batch.is_empty() {
                return Ok(purged);
            }
            for (origin, media_id) in batch {
                if self.delete(&origin, &media_id).await? {
                    purged += 1;
                }
            }
        }
    }

    async fn get_row(&self, server: &str, media_id: &str) -> Result<MediaRow, MediaError> {
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
            MediaError::Remote(RemoteError::NotFound) => Error::not_found("Unknown media"),
            MediaError::Remote(RemoteError::NotYetUploaded) => Error::new(
                ErrorKind::NotYetUploaded,
                "The content of this media has not been uploaded to its server yet",
            ),
            MediaError::Remote(RemoteError::Unavailable(why)) => Error::new(
                ErrorKind::Remote { status: 502, errcode: "M_UNKNOWN".into() },
                format!("The media's server could not be reached: {why}"),
            ),
            MediaError::RemoteTooLarge => Error::new(
                ErrorKind::Remote { status: 502, errcode: "M_TOO_LARGE".into() },
                "The media is larger than this server fetches",
            ),
            MediaError::NoThumbnail => Error::new(
                ErrorKind::Unknown,
                "This media cannot be thumbnailed (not an image of a supported type)",
            ),
            MediaError::ThumbnailTooLarge => {
                Error::new(ErrorKind::TooLarge, "The image is too large to thumbnail")
            }
            MediaError::Internal(why) => Error::internal(why),
        }
    }
}
