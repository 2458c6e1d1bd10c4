//! Route registration from ruma metadata, ruma responses as axum responses, and the fallbacks
//! that answer unknown endpoints with `M_UNRECOGNIZED`.

use std::future::Future;

use axum::{
    Router,
    extract::State,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use homeserver_core::{Error, ErrorKind};
use ruma::api::{IncomingRequest, OutgoingResponse, OutgoingResponseExt, path_builder::PathBuilder};

use crate::{
    ApiError,
    extract::{AuthKind, AuthState, Ruma},
};

/// A ruma response on its way out.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from),
            Err(e) => ApiError(Error::internal(format!("cannot serialize response: {e}"))).into_response(),
        }
    }
}

/// A JSON body built by hand, for endpoints whose responses are assembled from stored event JSON
/// (sync, messages, state): it avoids re-parsing every event into ruma's types.
pub struct JsonBody(pub serde_json::Value);

/// A response built by hand whole (headers and a streamed body, as media downloads are).
pub struct RawResponse(pub Response);

impl IntoMatrixResponse for RawResponse {
    fn into_matrix_response(self) -> Response {
        self.0
    }
}

/// What a Matrix handler may return: a ruma response type, a hand-built [`JsonBody`] or a
/// [`RawResponse`].
pub trait IntoMatrixResponse: Send {
    fn into_matrix_response(self) -> Response;
}

impl<R: OutgoingResponse + Send> IntoMatrixResponse for R {
    fn into_matrix_response(self) -> Response {
        RumaResponse(self).into_response()
    }
}

impl IntoMatrixResponse for JsonBody {
    fn into_matrix_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A handler for one ruma endpoint: `async fn(state, Ruma<Request>) -> Result<Response, ApiError>`
/// where the response is the request's ruma response type or a [`JsonBody`].
pub trait RumaHandler<S, Req, R>: Clone + Send + Sync + 'static {
    fn register(self, router: Router<S>, extra_paths: &[&'static str]) -> Router<S>;
}

impl<S, Req, R, F, Fut> RumaHandler<S, Req, R> for F
where
    S: AuthState,
    Req: IncomingRequest + Send + 'static,
    Req::Authentication: AuthKind,
    R: IntoMatrixResponse + 'static,
    F: Fn(S, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
{
    fn register(self, mut router: Router<S>, extra_paths: &[&'static str]) -> Router<S> {
        let filter = method_filter(&Req::METHOD);
        for path in Req::PATH_BUILDER.all_paths().chain(extra_paths.iter().copied()) {
            let handler = self.clone();
            router = router.route(
                path,
                on(filter, move |State(state): State<S>, req: Ruma<Req>| {
                    let handler = handler.clone();
                    async move {
                        match handler(state, req).await {
                            Ok(r) => r.into_matrix_response(),
                            Err(e) => e.into_response(),
                        }
                    }
                }),
            );
        }
        router
    }
}

fn method_filter(method: &Method) -> MethodFilter {
    MethodFilter::try_from(method.clone()).expect("ruma endpoints use standard methods")
}

/// Registering ruma handlers on a router.
pub trait RouterExt<S> {
    /// Serves `handler` on every path and the method of its request type's metadata.
    fn ruma_route<Req, R, H: RumaHandler<S, Req, R>>(self, handler: H) -> Self;

    /// Like [`ruma_route`](Self::ruma_route), plus extra path templates that ruma does not list
    /// (e.g. state endpoints with an empty state key, whose trailing segment is absent). Missing
    /// trailing path parameters are passed to ruma as empty strings.
    fn ruma_route_with<Req, R, H: RumaHandler<S, Req, R>>(
        self,
        handler: H,
        extra_paths: &[&'static str],
    ) -> Self;
}

impl<S> RouterExt<S> for Router<S> {
    fn ruma_route<Req, R, H: RumaHandler<S, Req, R>>(self, handler: H) -> Self {
        handler.register(self, &[])
    }

    fn ruma_route_with<Req, R, H: RumaHandler<S, Req, R>>(
        self,
        handler: H,
        extra_paths: &[&'static str],
    ) -> Self {
        handler.register(self, extra_paths)
    }
}

async fn unknown_endpoint() -> ApiError {
    ApiError::new(ErrorKind::Unrecognized, "Unrecognized request")
}

async fn wrong_method() -> Response {
    let mut response =
        ApiError::new(ErrorKind::Unrecognized, "Unrecognized request: method not allowed").into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Adds the `M_UNRECOGNIZED` fallbacks: 404 for unknown paths, 405 for a known path with the
/// wrong method.
pub fn unrecognized_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.fallback(unknown_endpoint).method_not_allowed_fallback(wrong_method)
}
