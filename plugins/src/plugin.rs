//! One configured plugin: its loaded version (`Slot`), the health the admin sees, its crash
//! breaker, and [`Plugin::call`], the one way into guest code. A call runs on the plugin
//! runtime; it instantiates (and initialises) a fresh instance when there is none, and a
//! fatal outcome — a trap, an exhausted budget, a missed deadline, a failed instantiation or
//! `init` — discards the instance and counts towards the breaker.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use homeserver_core::streams::StreamPos;
use serde_json::json;
use tokio::sync::Notify;

use crate::{
    bindings::{bridge_guest, guest, policy_guest, types, webhook_guest},
    breaker::Breaker,
    context::PluginCtx,
    instance::{CallError, Instance, Prepared},
    manager::HostSettings,
    spec::PluginSpec,
};

/// Longest error text kept (in the status and the dead letters).
pub(crate) const MAX_ERROR: usize = 2048;

/// A loaded version of a plugin, and its live instance (rebuilt after a crash).
pub(crate) struct Slot {
    pub pre: Prepared,
    pub instance: Option<Instance>,
    pub registration: guest::Registration,
}

/// The side instance and the load it was built from.
#[derive(Default)]
pub(crate) struct SideLane {
    generation: u64,
    instance: Option<Instance>,
}

/// Counters and flags the dispatcher and the admin share.
#[derive(Default)]
pub(crate) struct Health {
    pub disabled: bool,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub last_error: Option<String>,
    pub delivered: u64,
    pub crashes: u64,
    pub cursor: i64,
    /// Dead letters to deliver again, oldest first (they stay filed until delivered).
    pub replays: VecDeque<StreamPos>,
}

/// A call someone waits for the answer of.
enum Ask {
    Check(policy_guest::ProposedEvent),
    Webhook(webhook_guest::HttpRequest),
}

enum Answer {
    Verdict(policy_guest::Verdict),
    Response(webhook_guest::HttpResponse),
}

/// A call into the guest.
pub(crate) enum Call {
    Event(types::Event, types::Delivery),
    Command(guest::Invocation, types::Delivery),
    Timer(String),
    /// `on-net`: something happened on one of the plugin's connections.
    Net(String, bridge_guest::NetEvent),
    /// `on-ephemeral`: typing or a receipt.
    Ephemeral(bridge_guest::Ephemeral),
    /// `on-event` with the same event this many times (the benchmark); returns nothing else.
    Repeat(types::Event, u32),
}

pub(crate) struct Plugin {
    pub ctx: Arc<PluginCtx>,
    pub spec: Mutex<PluginSpec>,
    /// The loaded version (None until the first load succeeds).
    pub slot: tokio::sync::Mutex<Option<Slot>>,
    /// The loaded version's component and a number that changes with every load: what the
    /// side instance is built from, readable without waiting for the slot.
    pub loaded: Mutex<Option<(u64, Prepared)>>,
    /// An instance of its own for calls someone waits for (policy checks, webhooks), so they
    /// never queue behind event handling.
    pub side: tokio::sync::Mutex<SideLane>,
    /// Held while a reload runs, so reloads of one plugin never overlap.
    pub reloading: tokio::sync::Mutex<()>,
    pub health: Mutex<Health>,
    pub breaker: Mutex<Breaker>,
    /// Wakes the dispatcher: enabled, disabled, reloaded, replay asked.
    pub control: Notify,
    /// The net pump's wake-up, rung with `control` (each waiter has its own: `notify_one`
    /// wakes one task).
    pub net_control: Notify,
    pub settings: HostSettings,
    /// The runtime guest code runs on.
    pub runtime: tokio::runtime::Handle,
}

/// What `init` is told.
pub(crate) fn info(ctx: &PluginCtx) -> String {
    json!({
        "server_name": ctx.user.server_name().as_str(),
        "user_id": ctx.user.as_str(),
        "plugin_id": ctx.id,
    })
    .to_string()
}

/// Cuts an error message to [`MAX_ERROR`] bytes.
pub(crate) fn truncate(mut message: String) -> String {
    if message.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

impl Plugin {
    /// Calls the guest on the plugin runtime and waits for the outcome.
    pub(crate) async fn call(self: &Arc<Self>, call: Call) -> Result<(), CallError> {
        let plugin = self.clone();
        match self.runtime.spawn(async move { plugin.call_here(call).await }).await {
            Ok(result) => result,
            Err(err) => Err(CallError::Trapped(format!("the call's task failed: {err}"))),
        }
    }

    /// The slot's live instance, built (and initialised) if there is none.
    async fn ready<'a>(&self, slot: &'a mut Option<Slot>) -> Result<&'a mut Slot, CallError> {
        let Some(slot) = slot.as_mut() else {
            return Err(CallError::Trapped("not loaded".to_owned()));
        };
        if slot.instance.is_none() {
            let pre = slot.pre.clone();
            match self.fresh_instance(pre).await {
                Ok(instance) => slot.instance = Some(instance),
                Err(err) => {
                    self.crashed(&err);
                    return Err(err);
                }
            }
        }
        Ok(slot)
    }

    /// Accounts for a call's outcome: a fatal one discards the instance and counts a crash.
    fn settle<T>(&self, slot: &mut Slot, result: &Result<T, CallError>) {
        match result {
            Err(err) if err.is_fatal() => {
                slot.instance = None;
                self.crashed(err);
            }
            Err(_) => {}
            Ok(_) => self.breaker.lock().expect("breaker poisoned").succeeded(),
        }
    }

    /// Asks a policy plugin about an event: waits at most `grants.policy_ms` for the plugin to
    /// be free, and as long again for its answer.
    pub(crate) async fn check(
        self: &Arc<Self>,
        event: policy_guest::ProposedEvent,
    ) -> Result<policy_guest::Verdict, CallError> {
        let deadline = Duration::from_millis(self.ctx.grants.policy_ms.into());
        match self.ask(Ask::Check(event), deadline, deadline).await? {
            Answer::Verdict(verdict) => Ok(verdict),
            Answer::Response(_) => unreachable!("a check is answered with a verdict"),
        }
    }

    /// Hands a webhook request to the plugin: waits for it to be free and for its answer, each
    /// at most the plugin's wall-clock budget per call.
    pub(crate) async fn webhook(
        self: &Arc<Self>,
        request: webhook_guest::HttpRequest,
    ) -> Result<webhook_guest::HttpResponse, CallError> {
        let wall = Duration::from_millis(self.ctx.grants.wall_ms_per_call.into());
        match self.ask(Ask::Webhook(request), wall, wall).await? {
            Answer::Response(response) => Ok(response),
            Answer::Verdict(_) => unreachable!("a webhook is answered with a response"),
        }
    }

    /// Makes `slot` the loaded version (the side instance follows at its next call).
    pub(crate) async fn install(&self, slot: Slot) {
        {
            let mut loaded = self.loaded.lock().expect("loaded poisoned");
            let generation = loaded.as_ref().map_or(1, |(g, _)| g + 1);
            *loaded = Some((generation, slot.pre.clone()));
        }
        *self.slot.lock().await = Some(slot);
    }

    /// A call someone waits for (a client's request), on the side instance, bounded: at most
    /// `wait` for it to be free, at most `deadline` for the answer (building the instance
    /// included).
    async fn ask(
        self: &Arc<Self>,
        ask: Ask,
        wait: Duration,
        deadline: Duration,
    ) -> Result<Answer, CallError> {
        let plugin = self.clone();
        let task = self.runtime.spawn(async move {
            let Ok(mut side) = tokio::time::timeout(wait, plugin.side.lock()).await else {
                plugin.ctx.count("calls_busy", 1);
                return Err(CallError::Busy);
            };
            let answer = tokio::time::timeout(deadline, plugin.ask_on(&mut side, ask, deadline)).await;
            let result = answer.unwrap_or(Err(CallError::TimedOut));
            match &result {
                Err(err) if err.is_fatal() => {
                    side.instance = None;
                    plugin.crashed(err);
                }
                Err(_) => {}
                Ok(_) => plugin.breaker.lock().expect("breaker poisoned").succeeded(),
            }
            result
        });
        task.await.map_err(|e| CallError::Trapped(format!("the call's task failed: {e}")))?
    }

    async fn ask_on(&self, side: &mut SideLane, ask: Ask, deadline: Duration) -> Result<Answer, CallError> {
        let (generation, pre) = self
            .loaded
            .lock()
            .expect("loaded poisoned")
            .clone()
            .ok_or(CallError::Trapped("not loaded".into()))?;
        if side.generation != generation || side.instance.is_none() {
            side.instance = None;
            side.instance = Some(self.fresh_instance(pre).await?);
            side.generation = generation;
        }
        let instance = side.instance.as_mut().expect("built above");
        match ask {
            Ask::Check(event) => instance.check_event(&event, deadline).await.map(Answer::Verdict),
            Ask::Webhook(request) => instance.on_http_request(&request, deadline).await.map(Answer::Response),
        }
    }

    async fn call_here(&self, call: Call) -> Result<(), CallError> {
        let mut guard = self.slot.lock().await;
        let slot = self.ready(&mut guard).await?;
        let instance = slot.instance.as_mut().expect("ready");
        let result = match call {
            Call::Event(event, delivery) => instance.on_event(&event, delivery).await,
            Call::Command(invocation, delivery) => instance.on_command(&invocation, delivery).await,
            Call::Timer(tag) => instance.on_timer(&tag).await,
            Call::Net(name, event) => instance.on_net(&name, &event).await,
            Call::Ephemeral(event) => instance.on_ephemeral(&event).await,
            Call::Repeat(event, times) => {
                let mut result = Ok(());
                for id in 0..times {
                    result =
                        instance.on_event(&event, types::Delivery { id: u64::from(id), attempt: 1 }).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
        };
        self.settle(slot, &result);
        result
    }

    /// A new instance of the loaded version, initialised.
    async fn fresh_instance(&self, pre: Prepared) -> Result<Instance, CallError> {
        let mut fresh = Instance::new(&pre, self.ctx.clone()).await.map_err(CallError::Trapped)?;
        match fresh.init(&info(&self.ctx)).await? {
            Ok(_) => Ok(fresh),
            Err(message) => Err(CallError::Trapped(format!("init failed: {message}"))),
        }
    }

    fn crashed(&self, err: &CallError) {
        let message = truncate(err.describe());
        self.ctx.log("error", format!("instance discarded: {message}"));
        let mut health = self.health.lock().expect("health poisoned");
        health.crashes += 1;
        health.last_error = Some(message);
        if self.breaker.lock().expect("breaker poisoned").crashed(Instant::now()) {
            self.ctx.log("error", "crashing repeatedly: suspended for a while");
        }
    }

    /// Wakes the dispatcher and the net pump: enabled, disabled, reloaded, replay asked.
    pub(crate) fn wake(&self) {
        self.control.notify_one();
        self.net_control.notify_one();
    }

    /// Whether the plugin is a bridge: granted connections or puppets, and its loaded version
    /// exports `bridge-guest` (every plugin built with the SDK does; the grant decides).
    pub(crate) fn is_bridge(&self) -> bool {
        let grants = &self.ctx.grants;
        (!grants.net.is_empty() || !grants.namespaces.users.is_empty())
            && self.loaded.lock().expect("loaded poisoned").as_ref().is_some_and(|(_, pre)| pre.is_bridge())
    }

    /// Until when the breaker keeps the plugin suspended, if it does.
    pub(crate) fn suspended_until(&self) -> Option<Instant> {
        self.breaker.lock().expect("breaker poisoned").open_until(Instant::now())
    }

    /// Runs the per-call benchmark: `times` no-op calls in one task, timed there.
    pub(crate) async fn measure(
        self: &Arc<Self>,
        event: types::Event,
        times: u32,
    ) -> Result<Duration, CallError> {
        let plugin = self.clone();
        let task = self.runtime.spawn(async move {
            let started = Instant::now();
            plugin.call_here(Call::Repeat(event, times)).await.map(|()| started.elapsed())
        });
        task.await.map_err(|e| CallError::Trapped(e.to_string()))?
    }
}
