//! Who is asking: every inbound federation request must carry an `X-Matrix` signature of its
//! origin over the method, the URI exactly as received, the destination (this server) and the
//! body, made with a key of the origin that is valid now. The check is [`FederationState`]'s
//! `AuthState::authenticate_server`, which the HTTP extractor runs for every endpoint whose ruma
//! metadata asks for server signatures, so no handler can skip it.

use homeserver_core::{Error, ErrorKind};
use homeserver_http::{AuthState, Session};
use ruma::{
    OwnedServerName,
    api::federation::authentication::XMatrix,
    signatures::{PublicKeyMap, PublicKeySet},
};

use crate::FederationState;

fn unauthorized(reason: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unauthorized, reason)
}

impl AuthState for FederationState {
    async fn authenticate(&self, _token: &str) -> Result<Session, Error> {
        Err(Error::new(ErrorKind::Forbidden, "federation endpoints take no access tokens"))
    }

    async fn authenticate_server(
        &self,
        header: XMatrix,
        request: &http::Request<&[u8]>,
    ) -> Result<OwnedServerName, Error> {
        let ours = self.key.server_name();
        if header.origin == ours {
            return Err(unauthorized("requests from this server's own name are not accepted"));
        }
        if header.destination.as_deref().is_some_and(|d| d != ours) {
            return Err(unauthorized(format!("the request is addressed to another server, not {ours}")));
        }
        let key_id = header.key.to_string();
        let Some(key) = self.keys.request_key(&header.origin, &key_id).await? else {
            return Err(unauthorized(format!("no valid key {key_id} is known for {}", header.origin)));
        };
        let keys: PublicKeySet = [(key_id, key)].into_iter().collect();
        let map: PublicKeyMap = [(header.origin.to_string(), keys)].into_iter().collect();
        header
            .verify_http_request(request, ours, &map)
            .map_err(|e| unauthorized(format!("invalid X-Matrix signature: {e}")))?;
        // A server that can talk to us can be talked to: its backoff, if any, ends now.
        self.recovery.heard_from(&header.origin);
        Ok(header.origin)
    }
}
