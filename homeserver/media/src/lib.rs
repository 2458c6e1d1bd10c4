//! homeserver-media: the media repository. Content lives on the filesystem under
//! `<data_dir>/media`, named by its SHA-256 (so identical uploads are stored once), written
//! through a temporary file while it streams in (a large upload never sits whole in memory),
//! synced to disk before it is renamed into place and before its metadata row commits — a 200
//! means the bytes are durable. Metadata (media id, content hash, type, name, size, uploader)
//! is in the database (`homeserver_storage::media`).
//!
//! Layout: [`store`] the content-addressed files; [`repo`] the repository the client API,
//! federation and plugins use (uploads with size and quota limits, asynchronous uploads,
//! reads, other servers' media fetched once and cached, thumbnails, quarantine, deletion);
//! [`thumbnail`] the spec's sizes and rendering; [`remote`] what the repository needs from
//! federation (implemented there); [`multipart`] federation's two-part media bodies;
//! [`serving`] what a download may be served as (content type, disposition).

pub mod multipart;
pub mod remote;
pub mod repo;
pub mod serving;
pub mod store;
pub mod thumbnail;

pub use remote::{RemoteContent, RemoteError, RemoteMedia};
pub use repo::{MediaConfig, MediaError, MediaRepo, Thumbnail, Uploaded};
