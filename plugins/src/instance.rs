//! One instantiated plugin and the guarded calls into it. Every call gets a CPU budget in epoch
//! ticks (re-armed whenever a host call returns, so time spent waiting on the server does not
//! count), a wall-clock deadline, and the instance's memory cap. A trap, an exhausted budget or
//! a missed deadline leaves the instance's memory in an unknown state, so the caller discards
//! the instance ([`CallError::is_fatal`]) and builds a fresh one for the next call.

use std::{sync::Arc, time::Duration};

use wasmtime::{
    Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline,
    component::{Component, InstancePre, Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView, p2::pipe::MemoryOutputPipe};

use crate::{
    bindings::{Full, bridge_guest, guest, policy_guest, types, webhook_guest},
    context::PluginCtx,
    engine::{self, TICK},
};

/// What a guest's stderr (panic messages) may fill per instance.
const STDERR_CAPACITY: usize = 16 * 1024;

/// The store's data: WASI with nothing granted, limits, the CPU budget and the plugin.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// Ticks of guest execution since the call began or a host call last returned.
    ticks: u32,
    budget_ticks: u32,
    /// The last message the guest logged at error level during this call (a panic hook's).
    pub last_error_log: Option<String>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    hooks: crate::http::Hooks,
    pub ctx: Arc<PluginCtx>,
}

impl PluginState {
    /// Called by every host import: the guest's CPU budget starts again when it resumes.
    pub(crate) fn rearm(&mut self) {
        self.ticks = 0;
    }
}

impl wasmtime_wasi_http::WasiHttpView for PluginState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Why a call did not succeed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The guest returned an error; the instance is fine.
    Returned(types::Error),
    /// The guest trapped (panic, memory exhausted, budget exceeded); with what it printed.
    Trapped(String),
    /// The call ran past its wall-clock deadline.
    TimedOut,
    /// The plugin was busy with another call for longer than a policy check may wait.
    Busy,
}

impl CallError {
    /// Whether the instance must be discarded.
    pub(crate) fn is_fatal(&self) -> bool {
        !matches!(self, CallError::Returned(_) | CallError::Busy)
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            CallError::Returned(err) => format!("returned {err:?}"),
            CallError::Trapped(message) => format!("trapped: {message}"),
            CallError::TimedOut => "timed out".to_owned(),
            CallError::Busy => "busy with another call".to_owned(),
        }
    }
}

/// The imports a plugin can be linked against: the world's and WASI with nothing granted, and
/// the same plus `wasi:http` for plugins granted HTTP hosts. A component that imports what its
/// plugin was not granted fails to load, before it ever runs.
pub(crate) struct Linkers {
    plain: Linker<PluginState>,
    with_http: Linker<PluginState>,
}

impl Linkers {
    pub(crate) fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Linkers> {
        let mut plain = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut plain)?;
        Full::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut plain, |state| state)?;
        let mut with_http = plain.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut with_http)?;
        Ok(Linkers { plain, with_http })
    }

    pub(crate) fn for_plugin(&self, ctx: &PluginCtx) -> &Linker<PluginState> {
        match ctx.egress {
            Some(_) => &self.with_http,
            None => &self.plain,
        }
    }
}

/// A component ready to instantiate: its imports resolved and its exports found. `bridge` is
/// there when the component exports `bridge-guest` (the `bridge` world).
#[derive(Clone)]
pub(crate) struct Prepared {
    pre: InstancePre<PluginState>,
    guest: guest::GuestIndices,
    bridge: Option<bridge_guest::GuestIndices>,
    policy: Option<policy_guest::GuestIndices>,
    webhook: Option<webhook_guest::GuestIndices>,
}

impl Prepared {
    pub(crate) fn is_bridge(&self) -> bool {
        self.bridge.is_some()
    }

    pub(crate) fn is_policy(&self) -> bool {
        self.policy.is_some()
    }

    pub(crate) fn answers_webhooks(&self) -> bool {
        self.webhook.is_some()
    }
}

/// Resolves a component's imports against the linker (fails for a component of another world,
/// or one importing what its plugin was not granted).
pub(crate) fn prepare(linker: &Linker<PluginState>, component: &Component) -> Result<Prepared, String> {
    let pre = linker.instantiate_pre(component).map_err(|e| {
        let message = format!("{e:#}");
        match message.contains("wasi:http") {
            true => format!(
                "the component makes HTTP requests, but the plugin is granted no hosts (grants.http_hosts): {message}"
            ),
            false => message,
        }
    })?;
    let guest = guest::GuestIndices::new(&pre)
        .map_err(|e| format!("not a lattice:plugin/bot or bridge component: {e:#}"))?;
    let bridge = bridge_guest::GuestIndices::new(&pre).ok();
    let policy = policy_guest::GuestIndices::new(&pre).ok();
    let webhook = webhook_guest::GuestIndices::new(&pre).ok();
    Ok(Prepared { pre, guest, bridge, policy, webhook })
}

/// A live instance.
pub(crate) struct Instance {
    store: Store<PluginState>,
    guest: guest::Guest,
    bridge: Option<bridge_guest::Guest>,
    policy: Option<policy_guest::Guest>,
    webhook: Option<webhook_guest::Guest>,
    stderr: MemoryOutputPipe,
    wall: Duration,
}

impl Instance {
    /// Instantiates the component with the plugin's memory cap.
    pub(crate) async fn new(prepared: &Prepared, ctx: Arc<PluginCtx>) -> Result<Instance, String> {
        let pre = &prepared.pre;
        let grants = &ctx.grants;
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let limits = StoreLimitsBuilder::new()
            .memory_size((grants.memory_mb as usize) << 20)
            .instances(engine::CORE_INSTANCES_PER_PLUGIN as usize)
            .tables(engine::TABLES_PER_PLUGIN as usize)
            .memories(engine::MEMORIES_PER_PLUGIN as usize)
            .trap_on_grow_failure(true)
            .build();
        let budget_ticks = (grants.cpu_ms_per_call / TICK.as_millis() as u32).max(1);
        let wall = Duration::from_millis(grants.wall_ms_per_call.into());
        let state = PluginState {
            wasi,
            table: ResourceTable::new(),
            limits,
            ticks: 0,
            budget_ticks,
            last_error_log: None,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: crate::http::Hooks { ctx: ctx.clone() },
            ctx,
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            state.ticks += 1;
            if state.ticks > state.budget_ticks {
                return Err(wasmtime::Error::msg("CPU budget per call exceeded"));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let instantiate = pre.instantiate_async(&mut store);
        let instance = match tokio::time::timeout(wall, instantiate).await {
            Ok(Ok(instance)) => instance,
            Ok(Err(err)) => return Err(format!("cannot instantiate: {err:#}")),
            Err(_) => return Err("instantiation timed out".to_owned()),
        };
        let loaded = |e: wasmtime::Error| format!("{e:#}");
        let guest = prepared.guest.load(&mut store, &instance).map_err(loaded)?;
        // The exports beyond `guest` that the component has.
        let bridge =
            prepared.bridge.as_ref().map(|i| i.load(&mut store, &instance)).transpose().map_err(loaded)?;
        let policy =
            prepared.policy.as_ref().map(|i| i.load(&mut store, &instance)).transpose().map_err(loaded)?;
        let webhook =
            prepared.webhook.as_ref().map(|i| i.load(&mut store, &instance)).transpose().map_err(loaded)?;
        Ok(Instance { store, guest, bridge, policy, webhook, stderr, wall })
    }

    /// Prepares a call: a full CPU budget.
    fn arm(&mut self) {
        self.store.data_mut().ticks = 0;
        self.store.data_mut().last_error_log = None;
        self.store.set_epoch_deadline(1);
    }

    /// Turns the outcome of a guest call into our terms, with the guest's last words on a trap.
    fn outcome<T>(
        &self,
        result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(trap)) => {
                // The cause without wasmtime's backtrace, then what the guest said last.
                let cause = match trap.downcast_ref::<wasmtime::Trap>() {
                    Some(trap) => trap.to_string(),
                    None => trap.chain().last().map(ToString::to_string).unwrap_or_default(),
                };
                let mut said: Vec<String> = self.store.data().last_error_log.iter().cloned().collect();
                let printed = String::from_utf8_lossy(&self.stderr.contents()).trim().to_owned();
                said.extend(
                    printed.lines().rev().take(3).map(str::to_owned).collect::<Vec<_>>().into_iter().rev(),
                );
                Err(CallError::Trapped(match said.is_empty() {
                    true => cause,
                    false => format!("{cause}; the plugin said: {}", said.join(" | ")),
                }))
            }
            Err(_) => Err(CallError::TimedOut),
        }
    }

    pub(crate) async fn init(
        &mut self,
        info: &str,
    ) -> Result<Result<guest::Registration, String>, CallError> {
        self.arm();
        let call = self.guest.call_init(&mut self.store, info);
        let result = tokio::time::timeout(self.wall, call).await;
        self.outcome(result)
    }

    pub(crate) async fn migrate(&mut self, from: Option<&str>) -> Result<Result<(), String>, CallError> {
        self.arm();
        let call = self.guest.call_migrate(&mut self.store, from);
        let result = tokio::time::timeout(self.wall, call).await;
        self.outcome(result)
    }

    pub(crate) async fn on_event(
        &mut self,
        event: &types::Event,
        delivery: types::Delivery,
    ) -> Result<(), CallError> {
        self.arm();
        let call = self.guest.call_on_event(&mut self.store, event, delivery);
        let result = tokio::time::timeout(self.wall, call).await;
        self.outcome(result)?.map_err(CallError::Returned)
    }

    pub(crate) async fn on_command(
        &mut self,
        invocation: &guest::Invocation,
        delivery: types::Delivery,
    ) -> Result<(), CallError> {
        self.arm();
        let call = self.guest.call_on_command(&mut self.store, invocation, delivery);
        let result = tokio::time::timeout(self.wall, call).await;
        self.outcome(result)?.map_err(CallError::Returned)
    }

    pub(crate) async fn on_timer(&mut self, tag: &str) -> Result<(), CallError> {
        self.arm();
        let call = self.guest.call_on_timer(&mut self.store, tag);
        let result = tokio::time::timeout(self.wall, call).await;
        self.outcome(result)?.map_err(CallError::Returned)
    }

    /// `on-net`, for a bridge (a bot has no connections to hear of).
    pub(crate) async fn on_net(
        &mut self,
        name: &str,
        event: &bridge_guest::NetEvent,
    ) -> Result<(), CallError> {
        self.arm();
        let Some(bridge) = self.bridge.as_ref() else { return Ok(()) };
        let call = bridge.call_on_net(&mut self.store, name, event);
        let result = tokio::time::timeout(self.wall, call).await;
        self.outcome(result)?.map_err(CallError::Returned)
    }

    /// `on-ephemeral`, for a bridge.
    pub(crate) async fn on_ephemeral(&mut self, event: &bridge_guest::Ephemeral) -> Result<(), CallError> {
        self.arm();
        let Some(bridge) = self.bridge.as_ref() else { return Ok(()) };
        let call = bridge.call_on_ephemeral(&mut self.store, event);
        let result = tokio::time::timeout(self.wall, call).await;
        self.outcome(result)?.map_err(CallError::Returned)
    }

    /// `check-event`, for a policy, cut off after `deadline` (a plugin without the export
    /// allows everything).
    pub(crate) async fn check_event(
        &mut self,
        event: &policy_guest::ProposedEvent,
        deadline: Duration,
    ) -> Result<policy_guest::Verdict, CallError> {
        self.arm();
        let Some(policy) = self.policy.as_ref() else { return Ok(policy_guest::Verdict::Allow) };
        let call = policy.call_check_event(&mut self.store, event);
        let result = tokio::time::timeout(deadline.min(self.wall), call).await;
        self.outcome(result)
    }

    /// `on-http-request`, cut off after `deadline` (a plugin without the export answers 404).
    pub(crate) async fn on_http_request(
        &mut self,
        request: &webhook_guest::HttpRequest,
        deadline: Duration,
    ) -> Result<webhook_guest::HttpResponse, CallError> {
        self.arm();
        let Some(webhook) = self.webhook.as_ref() else {
            return Ok(webhook_guest::HttpResponse { status: 404, headers: Vec::new(), body: Vec::new() });
        };
        let call = webhook.call_on_http_request(&mut self.store, request);
        let result = tokio::time::timeout(deadline.min(self.wall), call).await;
        self.outcome(result)
    }
}
