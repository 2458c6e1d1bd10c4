//! The wasmtime engine plugins share: component model, async calls (host imports are async),
//! epoch interruption driven by a ticker thread every [`TICK`], and the pooling allocator sized
//! for the configured plugins (four instances each: the one that takes events and the side
//! instance for calls someone waits for, each twice so a reload can run beside the old one).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of CPU budgets.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Per instance: core instances, tables and linear memories (the memory cap applies to each
/// memory, so a plugin gets one). Rust and C guests use one memory and a handful of instances.
pub(crate) const CORE_INSTANCES_PER_PLUGIN: u32 = 16;
pub(crate) const TABLES_PER_PLUGIN: u32 = 8;
pub(crate) const MEMORIES_PER_PLUGIN: u32 = 1;

/// The engine and the ticker that stops when the last handle is dropped.
pub(crate) struct Engines {
    pub engine: Engine,
    _alive: Arc<()>,
}

/// Builds the engine for `plugins` plugins whose largest memory grant is `max_memory_mb`.
pub(crate) fn build(plugins: usize, max_memory_mb: u32) -> Result<Engines, String> {
    let slots = (plugins.max(1) * 4 + 2) as u32;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_PLUGIN)
        .total_memories(slots * MEMORIES_PER_PLUGIN)
        .total_tables(slots * TABLES_PER_PLUGIN)
        .max_core_instances_per_component(CORE_INSTANCES_PER_PLUGIN)
        .max_tables_per_component(TABLES_PER_PLUGIN)
        .max_memories_per_component(MEMORIES_PER_PLUGIN)
        .max_memory_size((max_memory_mb as usize) << 20)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| format!("cannot start the plugin engine: {e:#}"))?;
    let alive = Arc::new(());
    spawn_ticker(engine.clone(), Arc::downgrade(&alive));
    Ok(Engines { engine, _alive: alive })
}

/// Advances the epoch every tick on a thread of its own (a tokio task could be starved by the
/// very guest code it must interrupt), until the engine's owner is gone.
fn spawn_ticker(engine: Engine, alive: Weak<()>) {
    std::thread::Builder::new()
        .name("plugin-epochs".into())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })
        .expect("cannot start the plugin epoch thread");
}
