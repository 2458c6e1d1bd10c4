//! [`PluginHost`]: the configured plugins, loaded, started and managed. Loading compiles (or
//! takes from the cache) the component, instantiates it, calls `init`, checks the plugin's
//! configuration against its declaration and, when its version changed, calls `migrate` — all
//! before the plugin serves. A reload does the same beside the running version and swaps only
//! if every step passed; otherwise the old version keeps serving and the error is returned.
//!
//! Everything here runs on the server's runtime; only guest code (instantiation, `init`,
//! `migrate` and the calls of [`crate::plugin::Plugin::call`]) runs on the plugin runtime.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use homeserver_core::{streams::StreamPos, time::now_millis};
use homeserver_live::Live;
use homeserver_rooms::Rooms;
use homeserver_storage::{Db, plugins::DeadLetterRow};
use ruma::UserId;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use wasmtime::{Engine, component::Linker};

use crate::{
    PluginError,
    breaker::Breaker,
    cache,
    coalesce::Coalescer,
    context::{Buckets, LogLine, PluginCtx},
    engine::{self, Engines},
    instance::{self, Instance, PluginState},
    plugin::{Health, Plugin, Slot, info},
    spec::{CheckedConfig, PluginSpec, check_config},
};

/// What plugins act through.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub rooms: Rooms,
    pub live: Live,
    /// The media repository (`media` imports).
    pub media: homeserver_media::MediaRepo,
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
}

/// Delivery and crash policy.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// The wait before the first retry of a failed delivery; it doubles with every attempt.
    pub retry_base: Duration,
    /// Attempts before an event goes to the dead-letter list.
    pub max_attempts: u32,
    /// Crashes within `breaker_window` that suspend a plugin, and for how long at first.
    pub breaker_threshold: u32,
    pub breaker_window: Duration,
    pub breaker_cooldown: Duration,
    /// Plain http and private or loopback destinations for plugin HTTP (`[testing]
    /// allow_private_destinations`).
    pub allow_private_destinations: bool,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            retry_base: Duration::from_secs(1),
            max_attempts: 5,
            breaker_threshold: 5,
            breaker_window: Duration::from_secs(300),
            breaker_cooldown: Duration::from_secs(60),
            allow_private_destinations: false,
        }
    }
}

/// What the admin sees of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub id: String,
    pub user_id: String,
    /// `running`, `disabled` or `suspended` (the crash breaker is open).
    pub state: String,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub last_error: Option<String>,
    pub cursor: i64,
    pub delivered: u64,
    pub crashes: u64,
    pub dead_letters: i64,
    /// Log lines dropped because the plugin logged faster than its log rate.
    pub dropped_log_lines: u64,
    pub counters: BTreeMap<String, u64>,
}

/// The runtime guest code runs on; dropped without waiting (it may be dropped in async code).
struct PluginRuntime(Option<tokio::runtime::Runtime>);

impl PluginRuntime {
    fn new() -> Result<PluginRuntime, PluginError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lattice-plugins")
            .enable_all()
            .build()
            .map_err(|e| PluginError::Load { id: "*".into(), message: e.to_string() })?;
        Ok(PluginRuntime(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("runtime").handle().clone()
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The host: every configured plugin, guest code on a runtime of its own.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    plugins: BTreeMap<String, Arc<Plugin>>,
    engines: Engines,
    linkers: instance::Linkers,
    // Dropped last: plugins' tasks may still be finishing on it.
    _runtime: PluginRuntime,
}

impl PluginHost {
    /// Loads every plugin (None when there are none). A plugin that cannot start is an error:
    /// a server does not come up without a plugin its admin configured. Called on the server's
    /// runtime.
    pub async fn start(
        services: Services,
        specs: &BTreeMap<String, PluginSpec>,
        settings: HostSettings,
    ) -> Result<Option<PluginHost>, PluginError> {
        if specs.is_empty() {
            return Ok(None);
        }
        let max_memory = specs.values().map(|s| s.grants.memory_mb).max().unwrap_or(64);
        let engines = engine::build(specs.len(), max_memory)
            .map_err(|message| PluginError::Load { id: "*".into(), message })?;
        let linkers = instance::Linkers::new(&engines.engine)
            .map_err(|e| PluginError::Load { id: "*".into(), message: format!("{e:#}") })?;
        let runtime = PluginRuntime::new()?;
        let mut plugins = BTreeMap::new();
        for (id, spec) in specs {
            let scope = resolve_scope(&services, id, spec).await?;
            let plugin = new_plugin(&services, id, spec, scope, &settings, runtime.handle())?;
            ensure_bot_user(&services.db, &plugin.ctx).await?;
            for puppet in services.db.plugin_users(id).await? {
                plugin.ctx.remember_puppet_id(puppet);
            }
            plugins.insert(id.clone(), plugin);
        }
        // Every bot exists before any plugin's code runs, so none can take another's id.
        for plugin in plugins.values() {
            let slot = load(&engines.engine, linkers.for_plugin(&plugin.ctx), plugin).await?;
            plugin.install(slot).await;
        }
        let policies: Vec<std::sync::Weak<Plugin>> =
            plugins.values().filter(|p| p.ctx.grants.policy).map(Arc::downgrade).collect();
        if !policies.is_empty() {
            services.rooms.set_event_policy(Arc::new(crate::policy::Policies { plugins: policies }));
        }
        Ok(Some(PluginHost { inner: Arc::new(HostInner { plugins, engines, linkers, _runtime: runtime }) }))
    }

    /// Starts delivering to every plugin (dispatchers on the server's runtime; they stop when
    /// the event stream shuts down).
    pub fn run(&self) {
        for plugin in self.inner.plugins.values() {
            tokio::spawn(crate::delivery::dispatch(plugin.clone()));
            tokio::spawn(crate::net::pump(plugin.clone()));
            tokio::spawn(crate::ephemeral::typing(plugin.clone()));
        }
    }

    pub(crate) fn plugin(&self, id: &str) -> Result<&Arc<Plugin>, PluginError> {
        self.inner.plugins.get(id).ok_or_else(|| PluginError::Unknown(id.to_owned()))
    }

    /// Calls the plugin's `on-event` `calls` times with a synthetic message, back to back on
    /// the live instance, and returns the time taken: the per-call cost of the host's guarded
    /// call path, for the benchmark (`examples/plugin_bench.rs` of the homeserver).
    pub async fn measure_calls(&self, id: &str, calls: u32) -> Result<Duration, PluginError> {
        let event = crate::bindings::types::Event {
            event_id: "$bench".into(),
            room_id: "!bench:localhost".into(),
            sender: "@bench:localhost".into(),
            event_type: "m.room.message".into(),
            state_key: None,
            origin_server_ts: 0,
            content_json: r#"{"msgtype":"m.text","body":"hello"}"#.into(),
            relation: None,
            thread_root: None,
        };
        let plugin = self.plugin(id)?;
        plugin
            .measure(event, calls)
            .await
            .map_err(|e| PluginError::Load { id: id.to_owned(), message: e.describe() })
    }

    /// The ids of the configured plugins.
    pub fn ids(&self) -> Vec<String> {
        self.inner.plugins.keys().cloned().collect()
    }

    /// Every plugin's status.
    pub async fn list(&self) -> Result<Vec<PluginStatus>, PluginError> {
        let mut out = Vec::new();
        for id in self.inner.plugins.keys() {
            out.push(self.status(id).await?);
        }
        Ok(out)
    }

    /// One plugin's status (never waits for a call in progress).
    pub async fn status(&self, id: &str) -> Result<PluginStatus, PluginError> {
        let plugin = self.plugin(id)?;
        let dead_letters = plugin.ctx.services.db.dead_letter_count(id).await?;
        let suspended = plugin.suspended_until().is_some();
        let health = plugin.health.lock().expect("health poisoned");
        let state = match (health.disabled, suspended) {
            (true, _) => "disabled",
            (false, true) => "suspended",
            (false, false) => "running",
        };
        Ok(PluginStatus {
            id: id.to_owned(),
            user_id: plugin.ctx.user.to_string(),
            state: state.to_owned(),
            version: health.version.clone(),
            sha256: health.sha256.clone(),
            last_error: health.last_error.clone(),
            cursor: health.cursor,
            delivered: health.delivered,
            crashes: health.crashes,
            dead_letters,
            dropped_log_lines: plugin.ctx.dropped_logs.load(std::sync::atomic::Ordering::Relaxed),
            counters: plugin.ctx.counters.lock().expect("counters poisoned").clone(),
        })
    }

    /// Loads the plugin's component again (from its path) beside the running version and
    /// swaps if it starts; otherwise the running version stays and the error is returned.
    /// The swap happens in a task of its own, so a caller that goes away cannot leave a
    /// migrated store behind an old version.
    pub async fn reload(&self, id: &str) -> Result<(), PluginError> {
        let plugin = self.plugin(id)?.clone();
        let engine = self.inner.engines.engine.clone();
        let linker = self.inner.linkers.for_plugin(&plugin.ctx).clone();
        let task = tokio::spawn(async move {
            let _one_at_a_time = plugin.reloading.lock().await;
            let slot = match load(&engine, &linker, &plugin).await {
                Ok(slot) => slot,
                Err(err) => {
                    plugin.ctx.log("error", format!("reload refused, the running version stays: {err}"));
                    return Err(err);
                }
            };
            let version = slot.registration.version.clone();
            plugin.install(slot).await;
            plugin.breaker.lock().expect("breaker poisoned").reset();
            plugin.ctx.log("info", format!("reloaded: version {version}"));
            plugin.wake();
            Ok(())
        });
        task.await.map_err(|e| PluginError::Load { id: id.to_owned(), message: e.to_string() })?
    }

    /// Reloads every plugin; the errors of those that kept their running version.
    pub async fn reload_all(&self) -> Vec<PluginError> {
        let mut errors = Vec::new();
        for id in self.ids() {
            if let Err(err) = self.reload(&id).await {
                errors.push(err);
            }
        }
        errors
    }

    /// Enables or disables a plugin (kept across restarts). Enabling also closes the breaker.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), PluginError> {
        let plugin = self.plugin(id)?;
        plugin.ctx.services.db.set_plugin_disabled(id, !enabled).await?;
        plugin.health.lock().expect("health poisoned").disabled = !enabled;
        if enabled {
            plugin.breaker.lock().expect("breaker poisoned").reset();
        }
        plugin.ctx.log("info", if enabled { "enabled" } else { "disabled" });
        plugin.wake();
        Ok(())
    }

    /// The plugin's recent log lines, oldest first.
    pub fn logs(&self, id: &str) -> Result<Vec<LogLine>, PluginError> {
        Ok(self.plugin(id)?.ctx.logs.lock().expect("plugin logs poisoned").iter().cloned().collect())
    }

    /// The events the plugin failed to take.
    pub async fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetterRow>, PluginError> {
        Ok(self.plugin(id)?.ctx.services.db.dead_letters(id, 1_000).await?)
    }

    /// Delivers dead letters again (one, or all); how many were queued. They stay filed until
    /// delivered (a failed one is filed again with its new error).
    pub async fn replay(&self, id: &str, only: Option<i64>) -> Result<usize, PluginError> {
        let plugin = self.plugin(id)?;
        let letters = plugin.ctx.services.db.dead_letters(id, 10_000).await?;
        let positions: Vec<StreamPos> = letters
            .iter()
            .map(|l| l.stream_pos)
            .filter(|pos| only.is_none_or(|only| pos.get() == only))
            .collect();
        let mut health = plugin.health.lock().expect("health poisoned");
        let mut queued = 0;
        for pos in positions {
            if !health.replays.contains(&pos) {
                health.replays.push_back(pos);
                queued += 1;
            }
        }
        drop(health);
        plugin.wake();
        Ok(queued)
    }
}

/// The rooms of `grants.rooms`, aliases resolved; `None` if the grant lists none. An alias that
/// does not resolve refuses the start.
async fn resolve_scope(
    services: &Services,
    id: &str,
    spec: &PluginSpec,
) -> Result<Option<std::collections::HashSet<ruma::OwnedRoomId>>, PluginError> {
    if spec.grants.rooms.is_empty() {
        return Ok(None);
    }
    let mut rooms = std::collections::HashSet::new();
    for entry in &spec.grants.rooms {
        let config_error = |message: String| PluginError::Config { id: id.to_owned(), message };
        match ruma::RoomId::parse(entry) {
            Ok(room) => {
                rooms.insert(room);
            }
            Err(_) => {
                let alias = ruma::RoomAliasId::parse(entry).map_err(|_| {
                    config_error(format!("grants.rooms: `{entry}` is not a room id or alias"))
                })?;
                let (room, _) = services
                    .rooms
                    .resolve_alias(&alias)
                    .await
                    .map_err(|e| config_error(format!("grants.rooms: {alias}: {}", e.message)))?;
                rooms.insert(room);
            }
        }
    }
    Ok(Some(rooms))
}

fn new_plugin(
    services: &Services,
    id: &str,
    spec: &PluginSpec,
    scope: Option<std::collections::HashSet<ruma::OwnedRoomId>>,
    settings: &HostSettings,
    runtime: tokio::runtime::Handle,
) -> Result<Arc<Plugin>, PluginError> {
    let config_error = |message: String| PluginError::Config { id: id.to_owned(), message };
    spec.grants.validate().map_err(config_error)?;
    let egress = match spec.grants.http_hosts.is_empty() {
        true => None,
        false => Some(
            crate::http::Egress::new(&spec.grants.http_hosts, settings.allow_private_destinations)
                .map_err(config_error)?,
        ),
    };
    let localpart = spec.localpart(id).to_owned();
    let server = services.rooms.server_name();
    let net = crate::net::NetConns::new(
        &spec.grants.net,
        spec.grants.max_connections,
        settings.allow_private_destinations,
    )
    .map_err(config_error)?;
    let claim = spec.claim(id, server.as_str()).map_err(config_error)?;
    let user = UserId::parse(format!("@{localpart}:{server}"))
        .map_err(|e| config_error(format!("bot user @{localpart}:{server}: {e}")))?;
    let ctx = Arc::new(PluginCtx {
        id: id.to_owned(),
        user,
        services: services.clone(),
        grants: spec.grants.clone(),
        config: Mutex::new(CheckedConfig {
            visible: provisional_config(&spec.config),
            ..CheckedConfig::default()
        }),
        buckets: Mutex::new(Buckets::new(&spec.grants)),
        logs: Mutex::new(VecDeque::new()),
        dropped_logs: AtomicU64::new(0),
        counters: Mutex::new(BTreeMap::new()),
        edits: Coalescer::default(),
        timers_changed: Notify::new(),
        main: tokio::runtime::Handle::current(),
        egress,
        net,
        claim,
        scope,
        puppets: Mutex::new(Default::default()),
    });
    Ok(Arc::new(Plugin {
        ctx,
        spec: Mutex::new(spec.clone()),
        slot: tokio::sync::Mutex::new(None),
        loaded: Mutex::new(None),
        side: tokio::sync::Mutex::new(Default::default()),
        reloading: tokio::sync::Mutex::new(()),
        health: Mutex::new(Health::default()),
        breaker: Mutex::new(Breaker::new(
            settings.breaker_threshold,
            settings.breaker_window,
            settings.breaker_cooldown,
        )),
        control: Notify::new(),
        net_control: Notify::new(),
        settings: settings.clone(),
        runtime,
    }))
}

/// Runs guest work on the plugin runtime.
async fn on_plugin_runtime<T: Send + 'static>(
    plugin: &Plugin,
    work: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    plugin.runtime.spawn(work).await.map_err(|e| e.to_string())?
}

/// Loads the plugin's component and starts it: compile (or the cache), instantiate, `init`,
/// the configuration check, and `migrate` when the version changed. Nothing the plugin sees
/// changes unless every step passed.
async fn load(
    engine: &Engine,
    linker: &Linker<PluginState>,
    plugin: &Arc<Plugin>,
) -> Result<Slot, PluginError> {
    let ctx = &plugin.ctx;
    let id = ctx.id.clone();
    let load_error = |message: String| PluginError::Load { id: id.clone(), message };
    let init_error = |message: String| PluginError::Init { id: id.clone(), message };
    let spec = plugin.spec.lock().expect("spec poisoned").clone();
    let wasm = tokio::fs::read(&spec.path).await.map_err(|source| PluginError::Read {
        id: id.clone(),
        path: spec.path.display().to_string(),
        source,
    })?;
    let (compile_engine, dir) = (engine.clone(), ctx.services.cache_dir.clone());
    let compiled = tokio::task::spawn_blocking(move || cache::compile(&compile_engine, &dir, &wasm))
        .await
        .map_err(|e| load_error(e.to_string()))?
        .map_err(load_error)?;
    let pre = instance::prepare(linker, &compiled.component).map_err(load_error)?;
    if !pre.is_policy() && spec.grants.policy {
        return Err(load_error(
            "granted policy, but the component does not export policy-guest (the policy world)".into(),
        ));
    }
    if !pre.answers_webhooks() && spec.grants.webhooks {
        return Err(load_error(
            "granted webhooks, but the component does not export webhook-guest (the webhooks world)".into(),
        ));
    }
    if !pre.is_bridge() && !spec.grants.net.is_empty() {
        return Err(load_error(
            "granted connections (grants.net), but the component does not export bridge-guest (the bridge world)"
                .into(),
        ));
    }

    let (pre_for_init, init_ctx) = (pre.clone(), ctx.clone());
    let (instance, registration) = on_plugin_runtime(plugin, async move {
        let mut instance = Instance::new(&pre_for_init, init_ctx.clone()).await?;
        match instance.init(&info(&init_ctx)).await {
            Ok(Ok(registration)) => Ok((instance, registration)),
            Ok(Err(message)) => Err(message),
            Err(err) => Err(err.describe()),
        }
    })
    .await
    .map_err(init_error)?;
    let checked = check_config(&registration.config, &spec.config, |var| std::env::var(var).ok())
        .map_err(|message| PluginError::Config { id: id.clone(), message })?;

    let db = &ctx.services.db;
    let stream = ctx.services.rooms.stream();
    let state = db.plugin_state(&id, StreamPos::live(stream.current())).await?;
    plugin.health.lock().expect("health poisoned").disabled = state.disabled;
    let stored = state.version;
    let instance = match stored.as_deref() == Some(registration.version.as_str()) {
        true => instance,
        false => {
            let from = stored.clone();
            let (mut instance, label) = (instance, from.clone().unwrap_or_else(|| "nothing".into()));
            let instance = on_plugin_runtime(plugin, async move {
                match instance.migrate(from.as_deref()).await {
                    Ok(Ok(())) => Ok(instance),
                    Ok(Err(message)) => Err(message),
                    Err(err) => Err(err.describe()),
                }
            })
            .await
            .map_err(|message| init_error(format!("migrate from {label}: {message}")))?;
            db.set_plugin_version(&id, &registration.version).await?;
            instance
        }
    };
    *ctx.config.lock().expect("config poisoned") = checked;
    {
        let mut health = plugin.health.lock().expect("health poisoned");
        health.version = Some(registration.version.clone());
        health.sha256 = Some(compiled.sha256.clone());
    }
    ctx.log("info", format!("started version {} ({})", registration.version, &compiled.sha256[..12]));
    Ok(Slot { pre, instance: Some(instance), registration })
}

/// What `config.get` shows before `init` declared the keys: the table without the values
/// written as secrets.
fn provisional_config(config: &Map<String, Value>) -> Map<String, Value> {
    config.iter().filter(|(_, v)| v.get("env").is_none()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Creates the bot's account the first time; refuses an id that is someone else's account.
async fn ensure_bot_user(db: &Db, ctx: &PluginCtx) -> Result<(), PluginError> {
    let user = &ctx.user;
    match db.ensure_plugin_user(user.as_str(), &ctx.id, user.localpart(), now_millis() as i64).await? {
        true => Ok(()),
        false => Err(PluginError::Config {
            id: ctx.id.clone(),
            message: format!("{user} is an account that is not this plugin's bot; choose another `user`"),
        }),
    }
}
