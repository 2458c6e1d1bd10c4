//! Content-addressed files: `<root>/<aa>/<bb>/<sha256 hex>`. A write streams into a temporary
//! file in `<root>/tmp` while hashing, is synced, then renamed to its content's name (if that
//! exists already, the copy is dropped: same bytes). Files are never modified after the rename.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Why content could not be stored.
#[derive(Debug)]
pub enum StoreError {
    /// More than the limit arrived.
    TooLarge,
    /// The body stream failed (the client went away).
    Body(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        StoreError::Io(err)
    }
}

/// Stored content: its hash (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
}

/// The longest a body may stall.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// A temporary file, removed when dropped unless renamed away first.
struct Temporary(PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ContentStore {
    pub fn new(root: PathBuf) -> ContentStore {
        ContentStore { root }
    }

    /// Where content of this hash lives. The hash is ours (hex), never a client's string.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(&sha256[2..4]).join(sha256)
    }

    /// Removes what interrupted uploads left (at start-up, before any upload runs).
    pub fn clear_temporary(&self) {
        let _ = std::fs::remove_dir_all(self.root.join("tmp"));
    }

    /// Streams `body` to disk, at most `limit` bytes; durable when this returns. A body that
    /// stalls for [`IDLE`] is abandoned; a temporary file is removed however the upload ends
    /// (an error, or the request dropped when the client goes away).
    pub async fn write<E: std::fmt::Display>(
        &self,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        limit: u64,
    ) -> Result<Stored, StoreError> {
        let tmp_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await?;
        let tmp = Temporary(tmp_dir.join(format!("upload-{}", homeserver_core::ids::random_string(16))));
        self.write_to(&tmp.0, &mut body, limit).await
    }

    async fn write_to<E: std::fmt::Display>(
        &self,
        tmp: &Path,
        body: &mut (impl Stream<Item = Result<Bytes, E>> + Unpin),
        limit: u64,
    ) -> Result<Stored, StoreError> {
        let mut file = tokio::fs::File::create(tmp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let next = tokio::time::timeout(IDLE, body.next()).await;
            let chunk = match next {
                Ok(Some(chunk)) => chunk.map_err(|e| StoreError::Body(e.to_string()))?,
                Ok(None) => break,
                Err(_) => return Err(StoreError::Body(format!("nothing arrived for {} s", IDLE.as_secs()))),
            };
            size += chunk.len() as u64;
            if size > limit {
                return Err(StoreError::TooLarge);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        drop(file);
        let sha256 = hex(&hasher.finalize());
        let path = self.path_of(&sha256);
        let dir = path.parent().expect("nested path");
        tokio::fs::create_dir_all(dir).await?;
        if !tokio::fs::try_exists(&path).await? {
            tokio::fs::rename(tmp, &path).await?;
            // The rename is durable once the directories are.
            for dir in [dir, dir.parent().expect("nested"), &self.root] {
                tokio::fs::File::open(dir).await?.sync_all().await?;
            }
        }
        Ok(Stored { sha256, size })
    }

    /// Removes content no media uses any more (gone already is fine).
    pub async fn remove(&self, sha256: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path_of(sha256)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Opens stored content for reading.
    pub async fn open(&self, sha256: &str) -> std::io::Result<tokio::fs::File> {
        tokio::fs::File::open(self.path_of(sha256)).await
    }
}

/// A file as a stream of 64 KiB chunks (for streaming content out).
pub fn chunks(file: tokio::fs::File) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(err) => Some((Err(err), None)),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn content_is_stored_once_by_its_hash_and_limits_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path().to_owned());
        let first = store.write(body(&[b"hello ", b"world"]), 100).await.unwrap();
        assert_eq!(first.size, 11);
        assert_eq!(first.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        let again = store.write(body(&[b"hello world"]), 100).await.unwrap();
        assert_eq!(again, first, "the same bytes, the same file");
        let bytes = tokio::fs::read(store.path_of(&first.sha256)).await.unwrap();
        assert_eq!(bytes, b"hello world");
        assert!(matches!(store.write(body(&[b"0123456789", b"x"]), 10).await, Err(StoreError::TooLarge)));
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "failed uploads leave no temporary files");
    }
}
