//! The engine: compiles contract code once per code hash (a bounded
//! cache) and runs calls with fuel, memory and call-depth limits.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmi::{Config, Module, Store, StoreLimitsBuilder};

use crate::abi::{HOST_FUNCTIONS, IMPORT_MODULE, MEMORY_EXPORT};
use crate::host::{linker, CallState};
use crate::outcome::{Call, Outcome, Write};
use crate::state::ContractState;
use crate::{CompileError, Failure};

/// Nested calls a contract may make before its call traps.
pub const MAX_RECURSION_DEPTH: usize = 1024;

/// SHA-256 of a contract's code: how it is installed and approved.
pub type CodeHash = [u8; 32];

pub fn code_hash(code: &[u8]) -> CodeHash {
    Sha256::digest(code).into()
}

/// What one call may use. Every replica must run with the same limits, so
/// the ledger takes them from the chain's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    pub max_code_bytes: usize,
    pub max_memory_bytes: usize,
    pub max_input_bytes: usize,
    pub max_output_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_writes: usize,
    pub max_events: usize,
    pub max_event_bytes: usize,
    /// Compiled modules kept, by code hash.
    pub cached_modules: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            max_code_bytes: 512 * 1024,
            max_memory_bytes: 16 << 20,
            max_input_bytes: 64 * 1024,
            max_output_bytes: 64 * 1024,
            max_key_bytes: 1024,
            max_value_bytes: 128 * 1024,
            max_writes: 1024,
            max_events: 256,
            max_event_bytes: 8 * 1024,
            cached_modules: 64,
        }
    }
}

/// Code checked and compiled for this engine.
#[derive(Clone)]
pub struct Compiled {
    pub hash: CodeHash,
    module: Module,
    /// The entry points it exports (functions `() -> ()`).
    pub entry_points: Vec<String>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("hash", &self.hash)
            .field("entry_points", &self.entry_points)
            .finish()
    }
}

struct Cache {
    modules: HashMap<CodeHash, Compiled>,
    order: VecDeque<CodeHash>,
}

/// Compiles and runs contracts deterministically.
pub struct Engine {
    engine: wasmi::Engine,
    limits: EngineLimits,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Engine {
    pub fn new(limits: EngineLimits) -> Self {
        let mut config = Config::default();
        config.consume_fuel(true);
        // Floating point results can differ in NaN bits between hosts:
        // code using it does not compile.
        config.floats(false);
        // Translated at compile, not on first use: lazy translation charges
        // fuel to the first call of each function, so a replica with the
        // module cached would use less fuel than one just restarted.
        config.compilation_mode(wasmi::CompilationMode::Eager);
        // Recursion ends in a trap, not in the host's stack.
        config.set_max_recursion_depth(MAX_RECURSION_DEPTH);
        let engine = wasmi::Engine::new(&config);
        Self {
            engine,
            limits,
            cache: Mutex::new(Cache {
                modules: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// Checks `code` is a contract this engine runs: valid WebAssembly
    /// without floating point, importing only host functions, exporting
    /// its memory, no start function. Cached by code hash.
    pub fn compile(&self, code: &[u8]) -> Result<Compiled, CompileError> {
        let hash = code_hash(code);
        if let Some(found) = self.cached(&hash) {
            return Ok(found);
        }
        if code.len() > self.limits.max_code_bytes {
            return Err(CompileError::TooLarge {
                size: code.len(),
                max: self.limits.max_code_bytes,
            });
        }
        let module =
            Module::new(&self.engine, code).map_err(|e| CompileError::Invalid(e.to_string()))?;
        // A start function would run at instantiation, before `init` and
        // on every call: contracts begin in `init`.
        for payload in wasmparser::Parser::new(0).parse_all(code) {
            if let Ok(wasmparser::Payload::StartSection { .. }) = payload {
                return Err(CompileError::StartFunction);
            }
        }
        for import in module.imports() {
            let known = import.module() == IMPORT_MODULE
                && HOST_FUNCTIONS.contains(&import.name())
                && matches!(import.ty(), wasmi::ExternType::Func(_));
            if !known {
                return Err(CompileError::UnknownImport {
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                });
            }
        }
        let mut has_memory = false;
        let mut entry_points = Vec::new();
        for export in module.exports() {
            match export.ty() {
                wasmi::ExternType::Memory(_) if export.name() == MEMORY_EXPORT => has_memory = true,
                wasmi::ExternType::Func(f) if f.params().is_empty() && f.results().is_empty() => {
                    entry_points.push(export.name().to_string())
                }
                _ => {}
            }
        }
        if !has_memory {
            return Err(CompileError::NoMemory);
        }
        let compiled = Compiled {
            hash,
            module,
            entry_points,
        };
        self.remember(compiled.clone());
        Ok(compiled)
    }

    fn cached(&self, hash: &CodeHash) -> Option<Compiled> {
        let cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.modules.get(hash).cloned()
    }

    fn remember(&self, compiled: Compiled) {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cache.modules.contains_key(&compiled.hash) {
            return;
        }
        while cache.modules.len() >= self.limits.cached_modules.max(1) {
            match cache.order.pop_front() {
                Some(old) => {
                    cache.modules.remove(&old);
                }
                None => break,
            }
        }
        cache.order.push_back(compiled.hash);
        cache.modules.insert(compiled.hash, compiled);
    }

    /// Runs `call` on `compiled` over `state`. Never panics on anything the
    /// code does: every failure is in the outcome, with no writes.
    pub fn execute(&self, compiled: &Compiled, call: Call, state: &dyn ContractState) -> Outcome {
        let fuel = call.fuel;
        let failed = |failure: Failure, fuel_used: u64| Outcome {
            result: Err(failure),
            writes: Vec::new(),
            events: Vec::new(),
            fuel_used,
        };
        // Code compiled by another engine cannot run on this one.
        if !wasmi::Engine::same(compiled.module.engine(), &self.engine) {
            return failed(
                Failure::Instantiate("the code was compiled by another engine".into()),
                0,
            );
        }
        if call.input.len() > self.limits.max_input_bytes {
            return failed(
                Failure::TooLarge {
                    what: "the input",
                    size: call.input.len(),
                    max: self.limits.max_input_bytes,
                },
                0,
            );
        }
        if !compiled.entry_points.contains(&call.function) {
            return failed(Failure::UnknownFunction(call.function.clone()), 0);
        }
        let function = call.function.clone();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_memory_bytes)
            .memories(1)
            .tables(1)
            .instances(1)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            CallState {
                call,
                limits: self.limits,
                state,
                writes: Default::default(),
                events: Vec::new(),
                event_bytes: 0,
                output: Vec::new(),
                failure: None,
                store_limits,
            },
        );
        store.limiter(|s| &mut s.store_limits);
        if store.set_fuel(fuel).is_err() {
            return failed(Failure::OutOfFuel { limit: fuel }, 0);
        }
        let used =
            |store: &Store<CallState<'_>>| fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        // The host functions borrow this call's state view, so the linker
        // is built per call (a few microseconds; see the README's figures).
        let linker = match linker(&self.engine) {
            Ok(l) => l,
            Err(e) => return failed(Failure::Instantiate(e.to_string()), 0),
        };
        // Compiled code has no start function (checked at compile).
        let instance = match linker.instantiate_and_start(&mut store, &compiled.module) {
            Ok(i) => i,
            Err(e) => {
                let f = failure_of(&mut store, &e, fuel);
                let u = used(&store);
                return failed(f, u);
            }
        };
        let entry = match instance.get_typed_func::<(), ()>(&store, &function) {
            Ok(f) => f,
            Err(_) => return failed(Failure::UnknownFunction(function), used(&store)),
        };
        let ran = entry.call(&mut store, ());
        let fuel_used = used(&store);
        if let Err(e) = ran {
            let f = failure_of(&mut store, &e, fuel);
            // Out of fuel, the call used all it was given (the engine stops
            // before an instruction block it cannot pay for in full).
            let charged = if matches!(f, Failure::OutOfFuel { .. }) {
                fuel
            } else {
                fuel_used
            };
            return failed(f, charged);
        }
        let data = store.into_data();
        Outcome {
            result: Ok(data.output),
            writes: data
                .writes
                .into_iter()
                .map(|(key, value)| Write { key, value })
                .collect(),
            events: data.events,
            fuel_used,
        }
    }
}

/// What an engine error means for the call: a host function's recorded
/// refusal first, then fuel, then any other trap.
fn failure_of(store: &mut Store<CallState<'_>>, e: &wasmi::Error, fuel: u64) -> Failure {
    if let Some(f) = store.data_mut().failure.take() {
        return f;
    }
    if matches!(e.as_trap_code(), Some(wasmi::TrapCode::OutOfFuel)) {
        return Failure::OutOfFuel { limit: fuel };
    }
    // Keep messages short and free of host paths.
    let mut text = e.to_string();
    text.truncate(200);
    Failure::Trap(text)
}
