//! homeserver: the composition root. It reads the configuration, opens the database, loads the
//! signing key, wires the room model, the client API and the federation routes together, and
//! serves them. It is also a library so tests can start real servers in-process.
//!
//! Layout:
//! - [`config`]: the TOML file, defaults and environment overrides.
//! - [`Server::build`], [`Server::router`], [`Server::serve`]: start-up, the HTTP stack (tracing
//!   span per request, CORS, `M_UNRECOGNIZED` fallbacks) and graceful shutdown.
//! - [`admin`]: the `lattice user …` subcommands.
//! - [`logging`]: the tracing subscriber.

pub mod admin;
pub mod config;
pub mod logging;
pub mod media_cli;
pub mod plugin_admin;
pub mod plugin_cli;
pub mod plugin_webhooks;
pub mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    http::{HeaderName, Method, header},
    response::{IntoResponse, Response},
};
use homeserver_client_api::{
    App, ClientConfig,
    ratelimit::{RateLimit, RateLimits},
};
use homeserver_core::{keys::ServerKey, streams::EventStream};
use homeserver_rooms::{Rooms, RoomsConfig, ServerKeysHandle, membership::AppserviceUsers};
use homeserver_storage::Db;
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};
use tracing::{Span, info, info_span};

use crate::config::Config;

/// A failure to start; the binary prints it as one line and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Storage(#[from] homeserver_storage::StorageError),
    #[error(transparent)]
    SigningKey(#[from] federation::signing_key::SigningKeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Appservice(#[from] appservices::RegistrationError),
    #[error(transparent)]
    Horizon(#[from] homeserver_core::streams::HorizonError),
    #[error(transparent)]
    Federation(#[from] federation::FederationError),
    #[error(transparent)]
    Plugin(#[from] plugins::PluginError),
}

/// The user ids and aliases that application services and plugins own exclusively.
fn exclusive_claims(
    config: &Config,
    appservices: &[appservices::Registration],
) -> Result<appservices::Claims, StartError> {
    let server = config.server_name.as_str();
    let mut claims: Vec<appservices::Claim> = appservices.iter().map(|r| r.claim(server)).collect();
    for (id, spec) in &config.plugins {
        let claim = spec
            .claim(id, server)
            .map_err(|message| plugins::PluginError::Config { id: id.clone(), message })?;
        claims.push(claim);
    }
    Ok(appservices::Claims::new(claims))
}

/// The federation client and the key store (which the room model checks signatures with).
fn federation_parts(
    config: &Config,
    db: &Db,
    key: &ServerKey,
) -> Result<(federation::FederationClient, Arc<federation::KeyStore>), StartError> {
    let settings = federation::ClientSettings {
        insecure_tls: config.testing.insecure_federation_tls,
        allow_private: config.testing.allow_private_destinations,
        ca_file: (!config.federation.ca_file.is_empty()).then(|| config.federation.ca_file.clone().into()),
        nameservers: config.federation.nameserver_addresses().map_err(StartError::Config)?,
        ..federation::ClientSettings::default()
    };
    let client = federation::FederationClient::new(key.clone(), &settings)?;
    let notaries = config
        .federation
        .trusted_key_servers
        .iter()
        .map(|s| ruma::ServerName::parse(s).expect("validated").to_owned())
        .collect();
    let keys = Arc::new(federation::KeyStore::new(db.clone(), key.clone(), client.clone(), notaries));
    Ok((client, keys))
}

/// The stream horizon kept in the database (see `homeserver_core::streams::Horizon`).
struct StoredHorizon(Db);

impl homeserver_core::streams::Horizon for StoredHorizon {
    fn raise(&self, to: u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.0.raise_stream_horizon(to as i64).await.map_err(|e| e.to_string()) })
    }
}

/// Behind a reverse proxy: the client's address is the last `X-Forwarded-For` entry (the one the
/// proxy appended; earlier entries are the client's own claims), not the proxy's.
async fn forwarded_client(mut req: Request, next: axum::middleware::Next) -> Response {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .next_back();
    if let Some(ip) = forwarded {
        let port =
            req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.port()).unwrap_or(0);
        req.extensions_mut().insert(axum::extract::ConnectInfo(SocketAddr::new(ip, port)));
    }
    next.run(req).await
}

/// Wraps every route so that a panic in a handler answers the request instead of dropping it.
fn catch_panics(router: Router) -> Router {
    router.layer(CatchPanicLayer::custom(panic_response))
}

/// A handler that panicked: the client gets a 500 `M_UNKNOWN` instead of a dropped connection,
/// and the log gets the panic message (the request span names the endpoint).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "request handler panicked");
    let mut response = axum::Json(serde_json::json!({
        "errcode": "M_UNKNOWN",
        "error": "Internal server error",
    }))
    .into_response();
    *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// The bound sockets: plain HTTP, and HTTPS when configured.
pub struct Listeners {
    pub client: TcpListener,
    pub tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

/// A built server: every component, ready to serve.
pub struct Server {
    pub config: Config,
    pub db: Db,
    pub app: App,
    pub federation: federation::FederationState,
    /// Outbound federation; delivers only while the server serves.
    pub sender: Arc<federation::sender::Sender>,
    /// The WASM plugins, loaded and started (`init`); delivered to only while the server serves.
    pub plugins: Option<plugins::PluginHost>,
    /// Push notifications to push gateways; delivers only while the server serves.
    pub push: homeserver_push::PushSender,
}

impl Server {
    /// Opens storage, loads or creates the signing key and builds the components.
    pub async fn build(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let server_name: ruma::OwnedServerName =
            ruma::ServerName::parse(&config.server_name).expect("validated").to_owned();
        if config.database.url.is_empty() {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| config::ConfigError::Read {
                path: config.data_dir.display().to_string(),
                source,
            })?;
        }
        let options = homeserver_storage::DbOptions { sqlite_synchronous: config.sqlite_synchronous()? };
        let db = Db::connect_with(&config.database_url(), options).await?;
        let (key, created) =
            federation::signing_key::load_or_create(&server_name, &config.signing_key_path())?;
        if created {
            info!(path = %config.signing_key_path().display(), key_id = %key.key_id(), "created a new signing key");
        }
        let (federation_client, keys) = federation_parts(&config, &db, &key)?;
        let recovered = db.max_stream_pos().await? as u64;
        let stream = EventStream::start(recovered, Arc::new(StoredHorizon(db.clone()))).await?;
        let appservices = appservices::load_registrations(&config.appservices.registration_files)?;
        let registrations = appservices.clone();
        let claims = exclusive_claims(&config, &appservices)?;
        let rooms_config = RoomsConfig {
            default_room_version: config.rooms.default_version.as_str().try_into().expect("validated"),
            event_cache_size: config.rooms.event_cache_size,
            appservice_users: (!appservices.is_empty()).then(|| {
                AppserviceUsers(Arc::new(move |user: &ruma::UserId| {
                    registrations.iter().any(|r| r.is_interested_in_user(user.as_str()))
                }))
            }),
            server_keys: Some(ServerKeysHandle(keys.clone())),
            claims: Arc::new(claims),
        };
        let rooms = Rooms::new(db.clone(), key.clone(), stream, rooms_config);
        let limit =
            |enabled: bool, per_second: f64, burst: u32| enabled.then_some(RateLimit { per_second, burst });
        let rl = &config.rate_limits;
        let client = ClientConfig {
            server_name,
            registration_enabled: config.registration.enabled,
            guest_access: config.registration.allow_guest_access,
            registration_tokens: config.registration.tokens.clone(),
            well_known_base_url: (!config.well_known.client_base_url.is_empty())
                .then(|| config.well_known.client_base_url.clone()),
            rate_limits: RateLimits {
                register: limit(rl.enabled, rl.register_per_second, rl.register_burst),
                login: limit(rl.enabled, rl.login_per_second, rl.login_burst),
                message: limit(rl.enabled, rl.message_per_second, rl.message_burst),
                password: limit(rl.enabled, rl.password_per_second, rl.password_burst),
                room_creation: limit(rl.enabled, rl.room_creation_per_second, rl.room_creation_burst),
                profile: limit(rl.enabled, rl.profile_per_second, rl.profile_burst),
                join: limit(rl.enabled, rl.join_per_second, rl.join_burst),
                invite: limit(rl.enabled, rl.invite_per_second, rl.invite_burst),
                anonymous: limit(rl.enabled, rl.anonymous_per_second, rl.anonymous_burst),
            },
            max_sync_timeout_ms: config.sync.max_timeout_ms,
            presence: homeserver_live::presence::PresenceSettings {
                enabled: config.presence.enabled,
                offline_after: Duration::from_millis(config.presence.offline_after_ms),
                idle_after: Duration::from_millis(config.presence.idle_after_ms),
            },
            search_all_users: config.user_directory.search_all_users,
            media: homeserver_media::MediaConfig {
                max_upload_bytes: config.media.max_upload_bytes,
                user_quota_bytes: config.media.user_quota_bytes,
                legacy_unauthenticated: config.media.legacy_unauthenticated_download,
                remote_cache_bytes: config.media.remote_cache_bytes,
                ..homeserver_media::MediaConfig::new(config.data_dir.join("media"))
            },
            registration_shared_secret: (!config.registration.shared_secret.is_empty())
                .then(|| config.registration.shared_secret.clone()),
        };
        let app = App::new(client, db.clone(), rooms);
        if !appservices.is_empty() {
            info!(count = appservices.len(), "loaded application service registrations");
        }
        let federation = federation::FederationState {
            key,
            key_validity: Duration::from_secs(7 * 24 * 3600),
            keys,
            client: federation_client,
            db: db.clone(),
            rooms: app.rooms.clone(),
            live: app.live.clone(),
            transactions: Arc::default(),
            recovery: Arc::default(),
            catch_up_cap: config.federation.catch_up_cap,
            media: app.media.clone(),
            device_resyncs: Arc::default(),
        };
        app.media.set_remote(federation::media::FederatedMedia::new(federation.client.clone()));
        let sender = federation::sender::Sender::new(federation.clone());
        federation::remote::install(&federation, sender.clone());
        let services = plugins::Services {
            db: db.clone(),
            rooms: app.rooms.clone(),
            live: app.live.clone(),
            media: app.media.clone(),
            cache_dir: config.data_dir.join("plugin-cache"),
        };
        let plugin_settings = plugins::HostSettings {
            allow_private_destinations: config.testing.allow_private_destinations,
            ..config.plugin_settings.clone()
        };
        let plugins = plugins::PluginHost::start(services, &config.plugins, plugin_settings).await?;
        if let Some(host) = &plugins {
            info!(plugins = ?host.ids(), "loaded plugins");
        }
        let push = homeserver_push::PushSender::new(
            db.clone(),
            app.stream.clone(),
            app.live.clone(),
            homeserver_push::GatewayPolicy {
                allow_private: config.testing.allow_private_destinations,
                // The same trust as federation's: public roots, the test CA, or the test switch.
                tls: federation::client::tls::client_config(
                    (!config.federation.ca_file.is_empty()).then(|| config.federation.ca_file.as_ref()),
                    config.testing.insecure_federation_tls,
                )?,
            },
            homeserver_push::Backoff::default(),
        );
        Ok(Server { config, db, app, federation, sender, plugins, push })
    }

    /// The complete HTTP stack.
    pub fn router(&self) -> Router {
        let client = plugin_admin::routes(homeserver_client_api::routes(), self.plugins.clone());
        let client = plugin_webhooks::routes(client, self.plugins.clone()).with_state(self.app.clone());
        let cors = CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-requested-with"),
            ]);
        let trace = TraceLayer::new_for_http()
            .make_span_with(|req: &Request| {
                // The path only: query strings may carry access tokens.
                info_span!("request", method = %req.method(), path = %req.uri().path(), status = tracing::field::Empty)
            })
            .on_request(())
            .on_response(|res: &Response, latency: Duration, span: &Span| {
                span.record("status", res.status().as_u16());
                info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "handled");
            })
            .on_failure(());
        let routes = client.merge(federation::routes(self.federation.clone()));
        let router = catch_panics(homeserver_http::unrecognized_fallbacks(routes))
            .layer(axum::middleware::from_fn(homeserver_http::nul::refuse_nul))
            .layer(cors);
        let router = match self.config.listen.x_forwarded {
            true => router.layer(axum::middleware::from_fn(forwarded_client)),
            false => router,
        };
        router.layer(trace)
    }

    /// Binds the configured addresses (and loads the TLS certificate for the HTTPS one).
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        // Only a serving process binds: what its interrupted uploads left can go now.
        self.app.media.clear_interrupted_uploads();
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
        };
        let client = bind(self.config.listen.client).await?;
        let tls = match self.config.tls_address()? {
            Some(addr) => {
                let tls_config = tls::server_config(
                    std::path::Path::new(&self.config.tls.certificate),
                    std::path::Path::new(&self.config.tls.private_key),
                )?;
                Some((bind(addr).await?, tls_config))
            }
            None => None,
        };
        Ok(Listeners { client, tls })
    }

    /// Serves until `shutdown` resolves, then stops accepting, wakes long-polls so they answer at
    /// once, lets in-flight requests finish, and closes the database.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stream = self.app.stream.clone();
        self.sender.run();
        self.push.run();
        if let Some(plugins) = &self.plugins {
            plugins.run();
            tokio::spawn(reload_plugins_on_sighup(plugins.clone()));
        }
        // Guests left in rooms that no longer admit them (a check a crash interrupted).
        let rooms = self.app.rooms.clone();
        tokio::spawn(async move {
            if let Err(err) = rooms.sweep_guests().await {
                tracing::warn!(error = %err, "could not check the rooms guests are in");
            }
        });
        let router = self.router();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: finishing in-flight requests");
            stream.shutdown();
            let _ = stop_tx.send(true);
        });
        let tls = listeners.tls.map(|(listener, config)| {
            tokio::spawn(tls::serve(listener, config, router.clone(), stop_rx.clone()))
        });
        let mut plain_stop = stop_rx;
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        // No Nagle delay: a streamed answer (media) writes its headers and its first chunk
        // apart, and the second write would wait for the client's delayed ACK (40 ms).
        let client = axum::serve::ListenerExt::tap_io(listeners.client, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(client, service)
            .with_graceful_shutdown(async move {
                let _ = plain_stop.wait_for(|stop| *stop).await;
            })
            .await?;
        if let Some(tls) = tls {
            let _ = tls.await;
        }
        self.db.close().await;
        info!("stopped");
        Ok(())
    }
}

/// SIGHUP reloads every plugin (each keeps its running version if the new one fails to start).
async fn reload_plugins_on_sighup(plugins: plugins::PluginHost) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            info!("SIGHUP: reloading plugins");
            for err in plugins.reload_all().await {
                tracing::error!(error = %err, "plugin reload failed; the running version stays");
            }
        }
    }
    #[cfg(not(unix))]
    drop(plugins);
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request, routing::get};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_m_unknown() {
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let router = catch_panics(Router::new().route("/boom", get(boom)));
        let response = router.oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errcode"], "M_UNKNOWN");
        assert!(!json["error"].as_str().unwrap().contains("handler bug"), "details stay in the log");
    }

    #[tokio::test]
    async fn behind_a_proxy_the_client_is_the_last_forwarded_address() {
        async fn peer(axum::extract::ConnectInfo(addr): axum::extract::ConnectInfo<SocketAddr>) -> String {
            addr.ip().to_string()
        }
        let router =
            Router::new().route("/peer", get(peer)).layer(axum::middleware::from_fn(forwarded_client));
        let mut req = Request::get("/peer")
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.7")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
        let response = router.oneshot(req).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"198.51.100.7", "the proxy's own entry, not the client's claim");
    }
}
