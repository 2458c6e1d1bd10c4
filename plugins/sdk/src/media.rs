//! The server's media repository, as the bot (the `media` import): upload a file to send it
//! (`m.image`, `m.file`…), download one someone sent. At most 16 MiB per call, within the
//! server's upload limit and the bot's quota.
//!
//! ```ignore
//! let mxc = sdk::media::upload("text/plain", Some("notes.txt"), b"hello")?;
//! sdk::send_json(room, "m.room.message", &json!({ "msgtype": "m.file", "body": "notes.txt", "url": mxc }))?;
//! let file = sdk::media::download(&mxc)?; // file.content_type, file.filename, file.data
//! ```

use crate::Result;
use crate::bindings::lattice::plugin::media as host;

/// A downloaded file: `content_type`, `filename`, `data`.
pub use host::Content;

/// Uploads a file; its `mxc://` URI.
pub fn upload(content_type: &str, filename: Option<&str>, data: &[u8]) -> Result<String> {
    host::upload(content_type, filename, data)
}

/// Downloads a file of this server by its `mxc://` URI.
pub fn download(mxc: &str) -> Result<Content> {
    host::download(mxc)
}
