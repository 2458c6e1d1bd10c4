//! `media`: uploads and downloads through the server's media repository, as the bot — the
//! same limits as a client's (upload size, the bot's quota), plus a per-call bound: the data
//! crosses the guest boundary whole, so at most [`MAX_BYTES`] each way.

use std::sync::Arc;

use homeserver_media::MediaError;

use crate::{
    bindings::{media, types},
    context::PluginCtx,
    instance::PluginState,
};

type R<T> = Result<T, types::Error>;

/// Largest file a plugin uploads or downloads in one call.
const MAX_BYTES: usize = 16 << 20;

fn to_wit(err: MediaError) -> types::Error {
    match err {
        MediaError::NotFound | MediaError::NotYetUploaded => types::Error::NotFound("no such media".into()),
        MediaError::TooLarge(limit) => types::Error::Quota(format!("media is at most {limit} bytes")),
        MediaError::QuotaExceeded => types::Error::Quota("the bot's media quota is used up".into()),
        other => super::to_wit(other.into()),
    }
}

impl PluginCtx {
    async fn upload_media(
        self: Arc<Self>,
        content_type: String,
        filename: Option<String>,
        data: Vec<u8>,
    ) -> R<String> {
        if data.len() > MAX_BYTES {
            return Err(types::Error::Quota(format!("a plugin uploads at most {MAX_BYTES} bytes at a time")));
        }
        self.take(|b| &mut b.writes, 1.0)?;
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(data))]);
        let uploaded = self
            .services
            .media
            .upload(&self.user, Some(&content_type), filename.as_deref(), body)
            .await
            .map_err(to_wit)?;
        self.count("media_uploaded", 1);
        Ok(uploaded.mxc)
    }

    async fn download_media(self: Arc<Self>, mxc: String) -> R<media::Content> {
        let invalid = || types::Error::Invalid(format!("not an mxc:// URI: {mxc}"));
        let (server, id) =
            mxc.strip_prefix("mxc://").and_then(|rest| rest.split_once('/')).ok_or_else(invalid)?;
        if server.is_empty() || id.is_empty() || id.contains('/') {
            return Err(invalid());
        }
        self.take(|b| &mut b.writes, 1.0)?;
        let repo = &self.services.media;
        let row = repo.get(server, id).await.map_err(to_wit)?;
        let data = repo.read(&row, MAX_BYTES as u64).await.map_err(to_wit)?;
        Ok(media::Content { content_type: row.content_type, filename: row.filename, data })
    }
}

impl media::Host for PluginState {
    async fn upload(&mut self, content_type: String, filename: Option<String>, data: Vec<u8>) -> R<String> {
        on_main!(self, upload_media(content_type, filename, data))
    }

    async fn download(&mut self, mxc: String) -> R<media::Content> {
        on_main!(self, download_media(mxc))
    }
}
