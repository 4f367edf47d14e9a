//! One plugin instance in one store, owned by one thread, and the limits it runs under.
//!
//! Instantiating a component costs tens of microseconds; calling into a live instance costs a few.
//! So a normalizer thread keeps one session per plugin and reuses it call after call. A store is
//! never shared behind a lock: it belongs to the thread that made it. After a trap the instance
//! may hold broken state, so the session re-instantiates before its next call.
//!
//! Limits hold for every entry into guest code: instantiation (a component's start functions run
//! then) as much as `describe`, `normalize` and `subscribe` carry the epoch deadline of one call.
//! The memory cap is a budget of the whole instance: a component holds many core instances, each
//! with its own memories and tables, so [`Budget`] sums the linear memory and table elements of
//! all of them in one store, and caps how many instances, memories and tables the store may make.

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};

use super::bindings::{self, stayhook::plugin::types as wit, v0_1};
use super::compat::Convert;
use super::{PluginError, PluginLimits};
use std::sync::Arc;

/// Lines a plugin may log per call; further lines are dropped.
const LOG_LINES_PER_CALL: u32 = 32;
/// Longest log line kept, in bytes.
const LOG_LINE_BYTES: usize = 2048;
// What a Rust plugin built for `wasm32-wasip2` uses: three core instances (its module, the
// canonical ABI shim, the fixups), one memory, two tables of about a hundred elements. The caps
// leave room for other toolchains; the memory budget in bytes is what bounds the daemon's memory,
// the counts bound what each memory and table costs besides (address space, bookkeeping).

/// Core instances one plugin instance may create.
pub(crate) const MAX_CORE_INSTANCES: usize = 32;
/// Linear memories one plugin instance may create, over all its core instances.
pub(crate) const MAX_MEMORIES: usize = 8;
/// Tables one plugin instance may create, over all its core instances.
pub(crate) const MAX_TABLES: usize = 16;
/// Table elements one plugin instance may hold, summed over all its tables (a pointer each).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Why a call into a plugin failed. These are the plugin's failures, recorded against the event;
/// a plugin's own refusal (`plugin-error` in the contract) is not here: it is a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call ran past its time limit and was interrupted.
    #[error("plugin timed out after {0} ms")]
    Timeout(u128),
    /// The plugin tried to grow its memory past the cap (the sum over all its memories) and then failed.
    #[error("plugin exceeded its memory limit of {0} bytes (all its linear memories together)")]
    MemoryLimit(usize),
    /// The plugin trapped (a panic, an unreachable, a denied import).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The instance could not be created.
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
}

/// A compiled plugin ready to instantiate, by the contract version it was built against.
#[derive(Clone)]
pub(crate) enum ContractPre {
    /// Built against `wit/v0.1`: every call goes through `compat`.
    V0_1(v0_1::PluginPre<HostState>),
    /// Built against the current contract, `wit/v0.2`.
    V0_2(bindings::PluginPre<HostState>),
}

/// A live instance, by contract version.
enum ContractInstance {
    V0_1(v0_1::Plugin),
    V0_2(bindings::Plugin),
}

/// Everything needed to instantiate a compiled plugin; cheap to clone.
#[derive(Clone)]
pub(crate) struct PluginCode {
    pub(crate) pre: ContractPre,
    pub(crate) engine: Arc<Engine>,
    pub(crate) limits: PluginLimits,
}

/// What one store (one plugin instance) may allocate, and what it has so far. Wasmtime asks the
/// limiter about each memory and table on its own (at creation, `current` is 0, and at every
/// growth); the budget adds them up, so sixteen memories just under the cap are refused as surely
/// as one memory over it. Memories and tables never shrink, so the totals only grow with the store.
#[derive(Debug)]
pub(crate) struct Budget {
    memory_cap_bytes: usize,
    memory_bytes: usize,
    table_elements: usize,
    memory_cap_hit: bool,
}

impl Budget {
    pub(crate) fn new(memory_cap_bytes: usize) -> Self {
        Self { memory_cap_bytes, memory_bytes: 0, table_elements: 0, memory_cap_hit: false }
    }

    /// Linear memory granted so far, summed over every memory of every core instance.
    #[cfg(test)]
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Whether a memory growth was refused since the flag was last cleared.
    pub(crate) fn memory_cap_hit(&self) -> bool {
        self.memory_cap_hit
    }

    /// A memory asks to grow from `current` to `desired` bytes (from 0 when it is created).
    /// A growth that is granted here and then fails in wasmtime stays counted: the error errs on
    /// the side of refusing sooner.
    pub(crate) fn grow_memory(&mut self, current: usize, desired: usize) -> bool {
        let total = self.memory_bytes.saturating_add(desired.saturating_sub(current));
        if total > self.memory_cap_bytes {
            self.memory_cap_hit = true;
            return false;
        }
        self.memory_bytes = total;
        true
    }

    /// A table asks to grow from `current` to `desired` elements (from 0 when it is created).
    pub(crate) fn grow_table(&mut self, current: usize, desired: usize) -> bool {
        let total = self.table_elements.saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            return false;
        }
        self.table_elements = total;
        true
    }
}

/// The store's data: the resource budget and the log budget of the current call.
pub(crate) struct HostState {
    plugin_name: String,
    budget: Budget,
    log_lines_left: u32,
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.budget.grow_memory(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.budget.grow_table(current, desired))
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

impl bindings::stayhook::plugin::types::Host for HostState {}
impl v0_1::stayhook::plugin::types::Host for HostState {}

impl v0_1::stayhook::plugin::host::Host for HostState {
    fn log(&mut self, level: v0_1::stayhook::plugin::types::LogLevel, message: String) {
        bindings::stayhook::plugin::host::Host::log(self, level.convert(), message);
    }
}

impl bindings::stayhook::plugin::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        if self.log_lines_left == 0 {
            return;
        }
        self.log_lines_left -= 1;
        let mut message = message;
        if message.len() > LOG_LINE_BYTES {
            let mut end = LOG_LINE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let plugin = self.plugin_name.as_str();
        match level {
            wit::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            wit::LogLevel::Info => tracing::info!(plugin, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            wit::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// The linker every plugin is instantiated with: the `host` interface of every contract version
/// (their names carry the version, so they do not collide), and traps for every other import.
pub(crate) fn new_linker(engine: &Engine) -> Result<Linker<HostState>, PluginError> {
    let mut linker = Linker::new(engine);
    bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(|error| PluginError::Engine(format!("{error:#}")))?;
    v0_1::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(|error| PluginError::Engine(format!("{error:#}")))?;
    Ok(linker)
}

/// A live instance of one plugin.
pub struct PluginSession {
    code: PluginCode,
    plugin_name: String,
    live: Option<(Store<HostState>, ContractInstance)>,
}

impl PluginSession {
    pub(crate) fn new(code: PluginCode, plugin_name: String) -> Result<Self, CallError> {
        let mut session = Self { code, plugin_name, live: None };
        session.instantiate()?;
        Ok(session)
    }

    /// Call `describe`.
    pub fn describe(&mut self) -> Result<wit::PluginInfo, CallError> {
        self.call(|store, plugin| match plugin {
            ContractInstance::V0_2(plugin) => plugin.call_describe(store),
            ContractInstance::V0_1(plugin) => plugin.call_describe(store).map(Convert::convert),
        })
    }

    /// Call `normalize` once (one round of the continuation).
    pub fn normalize(
        &mut self,
        inbound: &wit::Inbound,
        responses: &[wit::ApiResponse],
    ) -> Result<Result<wit::Outcome, wit::PluginError>, CallError> {
        self.call(|store, plugin| match plugin {
            ContractInstance::V0_2(plugin) => plugin.call_normalize(store, inbound, responses),
            ContractInstance::V0_1(plugin) => {
                let inbound: v0_1::stayhook::plugin::types::Inbound = inbound.clone().convert();
                let responses: Vec<v0_1::stayhook::plugin::types::ApiResponse> = responses.to_vec().convert();
                plugin.call_normalize(store, &inbound, &responses).map(Convert::convert)
            }
        })
    }

    /// Call `subscribe` once (one step of a registration).
    pub fn subscribe(&mut self, request: &wit::RegistrationRequest) -> Result<Result<wit::RegistrationStep, wit::PluginError>, CallError> {
        self.call(|store, plugin| match plugin {
            ContractInstance::V0_2(plugin) => plugin.call_subscribe(store, request),
            ContractInstance::V0_1(plugin) => {
                let request: v0_1::stayhook::plugin::types::RegistrationRequest = request.clone().convert();
                plugin.call_subscribe(store, &request).map(Convert::convert)
            }
        })
    }

    /// Call `sync` once (one round of one page). A plugin built against contract 0.1 has no
    /// `sync`: it is refused as unsupported without entering guest code.
    pub fn sync(
        &mut self,
        request: &wit::SyncRequest,
        responses: &[wit::ApiResponse],
    ) -> Result<Result<wit::SyncOutcome, wit::PluginError>, CallError> {
        self.call(|store, plugin| match plugin {
            ContractInstance::V0_2(plugin) => plugin.call_sync(store, request, responses),
            ContractInstance::V0_1(_) => {
                Ok(Err(wit::PluginError::UnsupportedEvent("this plugin implements contract 0.1, which has no sync".into())))
            }
        })
    }

    /// Instantiate under the same limits as a call: a component's start functions are guest code,
    /// and one that never returns must be interrupted like a `normalize` that never returns.
    fn instantiate(&mut self) -> Result<(), CallError> {
        let limits = self.code.limits;
        let state = HostState {
            plugin_name: self.plugin_name.clone(),
            budget: Budget::new(limits.memory_bytes),
            log_lines_left: LOG_LINES_PER_CALL,
        };
        let mut store = Store::new(&self.code.engine, state);
        store.limiter(|state| state);
        store.set_epoch_deadline(deadline_ticks(limits));
        let instantiated = match &self.code.pre {
            ContractPre::V0_2(pre) => pre.instantiate(&mut store).map(ContractInstance::V0_2),
            ContractPre::V0_1(pre) => pre.instantiate(&mut store).map(ContractInstance::V0_1),
        };
        match instantiated {
            Ok(plugin) => {
                store.set_epoch_deadline(PARKED_DEADLINE);
                self.live = Some((store, plugin));
                Ok(())
            }
            Err(error) => {
                let memory_cap_hit = store.data().budget.memory_cap_hit();
                Err(match classify(error, memory_cap_hit, limits) {
                    CallError::Trap(message) => CallError::Instantiate(message),
                    limit => limit,
                })
            }
        }
    }

    fn call<R>(&mut self, body: impl FnOnce(&mut Store<HostState>, &ContractInstance) -> wasmtime::Result<R>) -> Result<R, CallError> {
        if self.live.is_none() {
            self.instantiate()?;
        }
        let limits = self.code.limits;
        let (store, plugin) = self.live.as_mut().expect("instantiated just above");
        store.set_epoch_deadline(deadline_ticks(limits));
        store.data_mut().log_lines_left = LOG_LINES_PER_CALL;
        store.data_mut().budget.memory_cap_hit = false;
        let result = body(store, plugin);
        // Park the deadline far away so nothing fires between calls.
        store.set_epoch_deadline(PARKED_DEADLINE);
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                let memory_cap_hit = store.data().budget.memory_cap_hit();
                // The instance may be in any state after a trap: start afresh next time.
                self.live = None;
                Err(classify(error, memory_cap_hit, limits))
            }
        }
    }
}

/// The epoch deadline of a store between calls: far enough never to fire.
const PARKED_DEADLINE: u64 = u64::MAX / 2;

/// One call's time limit in epoch ticks, rounded up, at least one.
fn deadline_ticks(limits: PluginLimits) -> u64 {
    let tick_ms = limits.epoch_tick.as_millis().max(1);
    let ticks = limits.timeout.as_millis().div_ceil(tick_ms).max(1);
    u64::try_from(ticks).unwrap_or(PARKED_DEADLINE)
}

fn classify(error: wasmtime::Error, memory_cap_hit: bool, limits: PluginLimits) -> CallError {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return CallError::Timeout(limits.timeout.as_millis());
    }
    if memory_cap_hit {
        return CallError::MemoryLimit(limits.memory_bytes);
    }
    CallError::Trap(format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_budget_sums_every_memory_of_the_instance() {
        let mut budget = Budget::new(64 * MIB);
        // Two memories created at 30 MiB each: 60 MiB, within the cap.
        assert!(budget.grow_memory(0, 30 * MIB));
        assert!(budget.grow_memory(0, 30 * MIB));
        assert_eq!(budget.memory_bytes(), 60 * MIB);
        assert!(!budget.memory_cap_hit());
        // A third memory of 30 MiB, each under the cap on its own, is refused: 90 MiB in all.
        assert!(!budget.grow_memory(0, 30 * MIB));
        assert!(budget.memory_cap_hit());
        assert_eq!(budget.memory_bytes(), 60 * MIB, "a refused growth is not counted");
        // Growing one of them counts only the difference: 30 -> 34 MiB brings the total to 64 MiB.
        assert!(budget.grow_memory(30 * MIB, 34 * MIB));
        assert_eq!(budget.memory_bytes(), 64 * MIB);
        assert!(!budget.grow_memory(34 * MIB, 34 * MIB + 64 * 1024));
        // A memory whose minimum overflows the address space (wasmtime passes `usize::MAX - page`).
        assert!(!Budget::new(64 * MIB).grow_memory(0, usize::MAX - 65_535));
    }

    #[test]
    fn the_table_budget_sums_every_table_of_the_instance() {
        let mut budget = Budget::new(64 * MIB);
        assert!(budget.grow_table(0, MAX_TABLE_ELEMENTS / 2));
        assert!(budget.grow_table(0, MAX_TABLE_ELEMENTS / 2));
        assert!(!budget.grow_table(0, 1));
        assert!(!budget.grow_table(MAX_TABLE_ELEMENTS / 2, MAX_TABLE_ELEMENTS / 2 + 1));
        assert!(!budget.memory_cap_hit(), "tables are not memory");
    }
}
