//! [`PluginHost`]: the configured plugins, loaded, started and managed. Loading compiles (or
//! takes from the cache) the component, instantiates it, calls `init`, checks the plugin's
//! configuration against its declaration and, when its version changed, calls `migrate` — all
//! before the plugin serves. A reload does the same beside the running version and swaps only
//! if every step passed; otherwise the old version keeps serving and the error is returned.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use homeserver_core::{streams::StreamPos, time::now_millis};
use homeserver_live::Live;
use homeserver_rooms::Rooms;
use homeserver_storage::{Db, plugins::DeadLetterRow};
use ruma::{OwnedUserId, UserId};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use wasmtime::{Engine, component::Linker};

use crate::{
    PluginError,
    bindings::{BotPre, guest::Registration},
    breaker::Breaker,
    cache,
    coalesce::Coalescer,
    engine::{self, Engines},
    instance::{self, Instance, PluginState},
    spec::{CheckedConfig, Grants, PluginSpec, check_config},
};

/// Log lines kept per plugin for the admin.
const MAX_LOG_LINES: usize = 500;

/// What plugins act through.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub rooms: Rooms,
    pub live: Live,
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
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            retry_base: Duration::from_secs(1),
            max_attempts: 5,
            breaker_threshold: 5,
            breaker_window: Duration::from_secs(300),
            breaker_cooldown: Duration::from_secs(60),
        }
    }
}

/// One line a plugin logged (or the host logged about it).
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub ts: u64,
    pub level: String,
    pub message: String,
}

/// What the admin sees of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub id: String,
    pub user_id: String,
    /// `running`, `disabled`, `suspended` (the crash breaker is open) or `failed` (cannot start).
    pub state: String,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub last_error: Option<String>,
    pub cursor: i64,
    pub delivered: u64,
    pub crashes: u64,
    pub dead_letters: usize,
    pub counters: BTreeMap<String, u64>,
}

/// A token bucket: `rate` per second, bursts of twice that.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket { tokens: f64::from(rate) * 2.0, last: Instant::now(), rate: f64::from(rate) }
    }

    /// Takes a token, or says how many milliseconds until one is there.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), u32> {
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate * 2.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u32)
    }
}

/// A plugin's own state, shared by its instances and kept across reloads.
pub(crate) struct PluginCtx {
    pub id: String,
    pub user: OwnedUserId,
    pub services: Services,
    pub grants: Grants,
    pub config: Mutex<CheckedConfig>,
    pub sends: Mutex<Bucket>,
    pub logs: Mutex<VecDeque<LogLine>>,
    pub counters: Mutex<BTreeMap<String, u64>>,
    pub edits: Coalescer,
    /// Woken when the plugin's timers change.
    pub timers_changed: Notify,
}

impl PluginCtx {
    pub(crate) fn log(&self, level: &str, message: impl Into<String>) {
        let message = message.into();
        match level {
            "error" => tracing::error!(plugin = %self.id, "{message}"),
            "warn" => tracing::warn!(plugin = %self.id, "{message}"),
            "info" => tracing::info!(plugin = %self.id, "{message}"),
            _ => tracing::debug!(plugin = %self.id, "{message}"),
        }
        let mut logs = self.logs.lock().expect("plugin logs poisoned");
        if logs.len() >= MAX_LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(LogLine { ts: now_millis(), level: level.to_owned(), message });
    }
}

/// A loaded version of a plugin, and its live instance (rebuilt after a crash).
pub(crate) struct Slot {
    pub pre: BotPre<PluginState>,
    pub instance: Option<Instance>,
    pub registration: Registration,
    pub sha256: String,
}

/// Counters and flags the dispatcher and the admin share.
#[derive(Default)]
pub(crate) struct Health {
    pub disabled: bool,
    pub last_error: Option<String>,
    pub delivered: u64,
    pub crashes: u64,
    pub cursor: i64,
    /// Dead letters to deliver again, oldest first.
    pub replays: VecDeque<StreamPos>,
}

pub(crate) struct Plugin {
    pub ctx: Arc<PluginCtx>,
    pub spec: Mutex<PluginSpec>,
    /// The loaded version (None until the first load succeeds).
    pub slot: tokio::sync::Mutex<Option<Slot>>,
    pub health: Mutex<Health>,
    pub breaker: Mutex<Breaker>,
    /// Wakes the dispatcher: enabled, disabled, reloaded, replay asked.
    pub control: Notify,
    pub settings: HostSettings,
}

impl Plugin {
    /// Runs `f` on the live instance, instantiating (and initialising) one first if needed;
    /// a fatal failure discards the instance and counts towards the breaker.
    pub(crate) async fn call<T>(
        &self,
        f: impl AsyncFnOnce(&mut Instance) -> Result<T, instance::CallError>,
    ) -> Result<T, instance::CallError> {
        let mut guard = self.slot.lock().await;
        let Some(slot) = guard.as_mut() else {
            return Err(instance::CallError::Trapped("not loaded".to_owned()));
        };
        if slot.instance.is_none() {
            let mut fresh =
                Instance::new(&slot.pre, self.ctx.clone()).await.map_err(instance::CallError::Trapped)?;
            match fresh.init(&info(&self.ctx)).await {
                Ok(Ok(_)) => slot.instance = Some(fresh),
                Ok(Err(message)) => {
                    return Err(instance::CallError::Trapped(format!("init failed: {message}")));
                }
                Err(err) => {
                    self.crashed(&err);
                    return Err(err);
                }
            }
        }
        let instance = slot.instance.as_mut().expect("instantiated above");
        let result = f(instance).await;
        match &result {
            Err(err) if err.is_fatal() => {
                slot.instance = None;
                self.crashed(err);
            }
            Err(_) => {}
            Ok(_) => self.breaker.lock().expect("breaker poisoned").succeeded(),
        }
        result
    }

    fn crashed(&self, err: &instance::CallError) {
        let message = err.describe();
        self.ctx.log("error", format!("instance discarded: {message}"));
        let mut health = self.health.lock().expect("health poisoned");
        health.crashes += 1;
        health.last_error = Some(message);
        if self.breaker.lock().expect("breaker poisoned").crashed(Instant::now()) {
            self.ctx.log("error", "crashing repeatedly: suspended for a while");
        }
    }
}

/// What `init` is told.
fn info(ctx: &PluginCtx) -> String {
    json!({
        "server_name": ctx.user.server_name().as_str(),
        "user_id": ctx.user.as_str(),
        "plugin_id": ctx.id,
    })
    .to_string()
}

/// The host: every configured plugin, on a runtime of its own.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    runtime: Option<tokio::runtime::Runtime>,
    engines: Engines,
    linker: Linker<PluginState>,
    plugins: BTreeMap<String, Arc<Plugin>>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PluginHost {
    /// Loads every plugin (None when there are none). A plugin that cannot start is an error:
    /// a server does not come up without a plugin its admin configured.
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
        let linker = instance::linker(&engines.engine)
            .map_err(|e| PluginError::Load { id: "*".into(), message: format!("{e:#}") })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lattice-plugins")
            .enable_all()
            .build()
            .map_err(|e| PluginError::Load { id: "*".into(), message: e.to_string() })?;
        let mut plugins = BTreeMap::new();
        for (id, spec) in specs {
            let plugin = new_plugin(&services, id, spec, &settings)?;
            ensure_bot_user(&services.db, &plugin.ctx.user).await?;
            plugins.insert(id.clone(), plugin);
        }
        let mut inner = HostInner { runtime: Some(runtime), engines, linker, plugins: BTreeMap::new() };
        for (id, plugin) in plugins {
            let engine = inner.engines.engine.clone();
            let linker = inner.linker.clone();
            let loading = plugin.clone();
            let handle = inner
                .runtime
                .as_ref()
                .expect("runtime")
                .spawn(async move { load(&engine, &linker, &loading).await });
            let slot =
                handle.await.map_err(|e| PluginError::Load { id: id.clone(), message: e.to_string() })??;
            *plugin.slot.lock().await = Some(slot);
            inner.plugins.insert(id, plugin);
        }
        Ok(Some(PluginHost { inner: Arc::new(inner) }))
    }

    /// Starts delivering to every plugin; dispatchers stop when the event stream shuts down.
    pub fn run(&self) {
        let runtime = self.inner.runtime.as_ref().expect("runtime");
        for plugin in self.inner.plugins.values() {
            runtime.spawn(crate::delivery::dispatch(plugin.clone()));
        }
    }

    fn plugin(&self, id: &str) -> Result<&Arc<Plugin>, PluginError> {
        self.inner.plugins.get(id).ok_or_else(|| PluginError::Unknown(id.to_owned()))
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

    /// One plugin's status.
    pub async fn status(&self, id: &str) -> Result<PluginStatus, PluginError> {
        let plugin = self.plugin(id)?;
        let (version, sha256) = {
            let slot = plugin.slot.lock().await;
            (slot.as_ref().map(|s| s.registration.version.clone()), slot.as_ref().map(|s| s.sha256.clone()))
        };
        let dead_letters = plugin.ctx.services.db.dead_letters(id, 10_000).await?.len();
        let suspended = plugin.breaker.lock().expect("breaker poisoned").open_until(Instant::now()).is_some();
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
            version,
            sha256,
            last_error: health.last_error.clone(),
            cursor: health.cursor,
            delivered: health.delivered,
            crashes: health.crashes,
            dead_letters,
            counters: plugin.ctx.counters.lock().expect("counters poisoned").clone(),
        })
    }

    /// Loads the plugin's component again (from its path) beside the running version and
    /// swaps if it starts; otherwise the running version stays and the error is returned.
    pub async fn reload(&self, id: &str) -> Result<(), PluginError> {
        let plugin = self.plugin(id)?.clone();
        let engine = self.inner.engines.engine.clone();
        let linker = self.inner.linker.clone();
        let runtime = self.inner.runtime.as_ref().expect("runtime");
        let loading = plugin.clone();
        let slot = runtime
            .spawn(async move { load(&engine, &linker, &loading).await })
            .await
            .map_err(|e| PluginError::Load { id: id.to_owned(), message: e.to_string() })?;
        let slot = match slot {
            Ok(slot) => slot,
            Err(err) => {
                plugin.ctx.log("error", format!("reload refused, the running version stays: {err}"));
                return Err(err);
            }
        };
        let version = slot.registration.version.clone();
        *plugin.slot.lock().await = Some(slot);
        plugin.breaker.lock().expect("breaker poisoned").reset();
        plugin.ctx.log("info", format!("reloaded: version {version}"));
        plugin.control.notify_one();
        Ok(())
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
        plugin.control.notify_one();
        Ok(())
    }

    /// The plugin's recent log lines, oldest first.
    pub fn logs(&self, id: &str) -> Result<Vec<LogLine>, PluginError> {
        Ok(self.plugin(id)?.ctx.logs.lock().expect("plugin logs poisoned").iter().cloned().collect())
    }

    /// The events the plugin failed to take.
    pub async fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetterRow>, PluginError> {
        Ok(self.plugin(id)?.ctx.services.db.dead_letters(id, 10_000).await?)
    }

    /// Delivers dead letters again (one, or all); how many were queued.
    pub async fn replay(&self, id: &str, only: Option<i64>) -> Result<usize, PluginError> {
        let plugin = self.plugin(id)?;
        let letters = plugin.ctx.services.db.take_dead_letters(id, only.map(StreamPos::new)).await?;
        plugin.health.lock().expect("health poisoned").replays.extend(letters.iter().map(|l| l.stream_pos));
        plugin.control.notify_one();
        Ok(letters.len())
    }
}

fn new_plugin(
    services: &Services,
    id: &str,
    spec: &PluginSpec,
    settings: &HostSettings,
) -> Result<Arc<Plugin>, PluginError> {
    let config_error = |message: String| PluginError::Config { id: id.to_owned(), message };
    spec.grants.validate().map_err(config_error)?;
    let localpart = spec.user.clone().unwrap_or_else(|| id.to_owned());
    let server = services.rooms.server_name();
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
        sends: Mutex::new(Bucket::new(spec.grants.sends_per_second)),
        logs: Mutex::new(VecDeque::new()),
        counters: Mutex::new(BTreeMap::new()),
        edits: Coalescer::default(),
        timers_changed: Notify::new(),
    });
    Ok(Arc::new(Plugin {
        ctx,
        spec: Mutex::new(spec.clone()),
        slot: tokio::sync::Mutex::new(None),
        health: Mutex::new(Health::default()),
        breaker: Mutex::new(Breaker::new(
            settings.breaker_threshold,
            settings.breaker_window,
            settings.breaker_cooldown,
        )),
        control: Notify::new(),
        settings: settings.clone(),
    }))
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
    let mut instance = Instance::new(&pre, ctx.clone()).await.map_err(load_error)?;
    let init_error = |message: String| PluginError::Init { id: id.clone(), message };
    let registration = match instance.init(&info(ctx)).await {
        Ok(Ok(registration)) => registration,
        Ok(Err(message)) => return Err(init_error(message)),
        Err(err) => return Err(init_error(err.describe())),
    };
    let checked = check_config(&registration.config, &spec.config, |var| std::env::var(var).ok())
        .map_err(|message| PluginError::Config { id: id.clone(), message })?;
    let db = &ctx.services.db;
    let stream = ctx.services.rooms.stream();
    let stored = db.plugin_state(&id, StreamPos::live(stream.current())).await?.version;
    if stored.as_deref() != Some(registration.version.as_str()) {
        let from = stored.as_deref().unwrap_or("nothing");
        match instance.migrate(stored.as_deref()).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(init_error(format!("migrate from {from}: {message}"))),
            Err(err) => return Err(init_error(format!("migrate from {from}: {}", err.describe()))),
        }
        db.set_plugin_version(&id, &registration.version).await?;
    }
    *ctx.config.lock().expect("config poisoned") = checked;
    ctx.log("info", format!("started version {} ({})", registration.version, &compiled.sha256[..12]));
    Ok(Slot { pre, instance: Some(instance), registration, sha256: compiled.sha256 })
}

/// What `config.get` shows before `init` declared the keys: the table without the values
/// written as secrets.
fn provisional_config(config: &Map<String, Value>) -> Map<String, Value> {
    config.iter().filter(|(_, v)| v.get("env").is_none()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Creates the bot's account the first time (no password: nobody logs in as it).
async fn ensure_bot_user(db: &Db, user: &UserId) -> Result<(), PluginError> {
    match db.create_user(user.as_str(), None, false, Some(user.localpart()), now_millis() as i64).await {
        Ok(()) | Err(homeserver_storage::StorageError::Conflict) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
