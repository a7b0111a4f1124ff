//! The host functions of [`crate::abi`], over the call's state: the
//! read-only view of the ledger, the writes so far, events, input and
//! output. A host function that refuses records why in the call's state
//! and traps, so the call fails with that reason.

use std::collections::BTreeMap;

use wasmi::{Caller, Extern, Linker, Memory};

use crate::abi::{fuel, IMPORT_MODULE, MEMORY_EXPORT};
use crate::compile::EngineLimits;
use crate::outcome::{Call, Event};
use crate::state::{namespaced, ContractState};
use crate::Failure;

/// Everything a running call can reach.
pub(crate) struct CallState<'a> {
    pub(crate) call: Call,
    pub(crate) limits: EngineLimits,
    pub(crate) state: &'a dyn ContractState,
    /// Writes so far, by full key; `None` deletes.
    pub(crate) writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub(crate) events: Vec<Event>,
    pub(crate) event_bytes: usize,
    pub(crate) output: Vec<u8>,
    /// Set by a host function that refused; the call fails with it.
    pub(crate) failure: Option<Failure>,
    pub(crate) store_limits: wasmi::StoreLimits,
}

type HostResult<T> = Result<T, wasmi::Error>;

/// Records `failure` and traps.
fn refuse<T>(caller: &mut Caller<'_, CallState<'_>>, failure: Failure) -> HostResult<T> {
    let message = failure.to_string();
    caller.data_mut().failure.get_or_insert(failure);
    Err(wasmi::Error::new(message))
}

/// Takes `amount` fuel for host work; traps when there is not enough.
fn charge(caller: &mut Caller<'_, CallState<'_>>, amount: u64) -> HostResult<()> {
    let left = caller.get_fuel()?;
    match left.checked_sub(amount) {
        Some(rest) => {
            caller.set_fuel(rest)?;
            Ok(())
        }
        None => {
            caller.set_fuel(0)?;
            let limit = caller.data().call.fuel;
            refuse(caller, Failure::OutOfFuel { limit })
        }
    }
}

fn memory(caller: &mut Caller<'_, CallState<'_>>) -> HostResult<Memory> {
    match caller
        .get_export(MEMORY_EXPORT)
        .and_then(Extern::into_memory)
    {
        Some(m) => Ok(m),
        None => refuse(
            caller,
            Failure::Trap("the contract exports no memory".into()),
        ),
    }
}

/// Reads `len` bytes at `ptr`, at most `max` (named `what` in the failure).
fn read_bytes(
    caller: &mut Caller<'_, CallState<'_>>,
    ptr: i32,
    len: i32,
    what: &'static str,
    max: usize,
) -> HostResult<Vec<u8>> {
    let (Ok(start), Ok(size)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return refuse(
            caller,
            Failure::OutOfBounds {
                ptr: ptr.into(),
                len: len.into(),
            },
        );
    };
    if size > max {
        return refuse(caller, Failure::TooLarge { what, size, max });
    }
    charge(caller, fuel::PER_BYTE.saturating_mul(size as u64))?;
    let mem = memory(caller)?;
    let mut buf = vec![0u8; size];
    if mem.read(&*caller, start, &mut buf).is_err() {
        return refuse(
            caller,
            Failure::OutOfBounds {
                ptr: ptr.into(),
                len: len.into(),
            },
        );
    }
    Ok(buf)
}

/// Writes `bytes` at `ptr`.
fn write_bytes(caller: &mut Caller<'_, CallState<'_>>, ptr: i32, bytes: &[u8]) -> HostResult<()> {
    charge(caller, fuel::PER_BYTE.saturating_mul(bytes.len() as u64))?;
    let Ok(start) = usize::try_from(ptr) else {
        return refuse(
            caller,
            Failure::OutOfBounds {
                ptr: ptr.into(),
                len: bytes.len() as i64,
            },
        );
    };
    let mem = memory(caller)?;
    if mem.write(&mut *caller, start, bytes).is_err() {
        return refuse(
            caller,
            Failure::OutOfBounds {
                ptr: ptr.into(),
                len: bytes.len() as i64,
            },
        );
    }
    Ok(())
}

/// Copies at most `cap` bytes of `bytes` to `ptr`; answers the full length.
fn copy_out(
    caller: &mut Caller<'_, CallState<'_>>,
    bytes: &[u8],
    ptr: i32,
    cap: i32,
) -> HostResult<i32> {
    let cap = usize::try_from(cap).unwrap_or(0);
    let n = bytes.len().min(cap);
    write_bytes(caller, ptr, &bytes[..n])?;
    Ok(i32::try_from(bytes.len()).unwrap_or(i32::MAX))
}

fn key_arg(caller: &mut Caller<'_, CallState<'_>>, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
    let max = caller.data().limits.max_key_bytes;
    let relative = read_bytes(caller, ptr, len, "a key", max)?;
    Ok(namespaced(&caller.data().call.contract, &relative))
}

/// The value of full key `key` as the call sees it: its own writes first.
fn current(data: &CallState<'_>, key: &[u8]) -> Option<Vec<u8>> {
    match data.writes.get(key) {
        Some(w) => w.clone(),
        None => data.state.get(key),
    }
}

/// The first key in `[from, to)` as the call sees it, merging its writes.
fn first_key(data: &CallState<'_>, from: &[u8], to: Option<&[u8]>) -> Option<Vec<u8>> {
    use std::ops::Bound;
    let upper = match to {
        Some(t) => Bound::Excluded(t.to_vec()),
        None => Bound::Unbounded,
    };
    let mut start = from.to_vec();
    // Skip keys the call deleted; each skip moves past one deleted key, so
    // this ends within the number of writes.
    loop {
        let base = data.state.first_key(&start, to);
        let written = data
            .writes
            .range((Bound::Included(start.clone()), upper.clone()))
            .find(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone());
        let candidate = match (base, written) {
            (Some(b), Some(w)) => Some(b.min(w)),
            (b, w) => b.or(w),
        };
        let key = candidate?;
        if matches!(data.writes.get(&key), Some(None)) {
            start = key;
            start.push(0);
            continue;
        }
        return Some(key);
    }
}

fn strip_namespace(data: &CallState<'_>, full: &[u8]) -> Vec<u8> {
    let prefix = namespaced(&data.call.contract, b"");
    full.strip_prefix(prefix.as_slice())
        .unwrap_or(full)
        .to_vec()
}

fn write(
    caller: &mut Caller<'_, CallState<'_>>,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
) -> HostResult<()> {
    if caller.data().call.read_only {
        return refuse(caller, Failure::ReadOnly);
    }
    charge(caller, fuel::CALL + fuel::WRITE)?;
    let data = caller.data_mut();
    let max = data.limits.max_writes;
    if data.writes.len() >= max && !data.writes.contains_key(&key) {
        return refuse(
            caller,
            Failure::TooMany {
                what: "written keys",
                max,
            },
        );
    }
    data.writes.insert(key, value);
    Ok(())
}

/// The linker holding every host function.
pub(crate) fn linker<'a>(engine: &wasmi::Engine) -> Result<Linker<CallState<'a>>, wasmi::Error> {
    let mut l = Linker::<CallState<'a>>::new(engine);
    let m = IMPORT_MODULE;
    l.func_wrap(
        m,
        "input_len",
        |mut c: Caller<'_, CallState<'_>>| -> HostResult<i32> {
            charge(&mut c, fuel::CALL)?;
            Ok(i32::try_from(c.data().call.input.len()).unwrap_or(i32::MAX))
        },
    )?;
    l.func_wrap(
        m,
        "input_read",
        |mut c: Caller<'_, CallState<'_>>, ptr: i32| -> HostResult<()> {
            charge(&mut c, fuel::CALL)?;
            let input = c.data().call.input.clone();
            write_bytes(&mut c, ptr, &input)
        },
    )?;
    l.func_wrap(
        m,
        "output",
        |mut c: Caller<'_, CallState<'_>>, ptr: i32, len: i32| -> HostResult<()> {
            charge(&mut c, fuel::CALL)?;
            let max = c.data().limits.max_output_bytes;
            let out = read_bytes(&mut c, ptr, len, "the output", max)?;
            c.data_mut().output = out;
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        "get",
        |mut c: Caller<'_, CallState<'_>>,
         kp: i32,
         kl: i32,
         buf: i32,
         cap: i32|
         -> HostResult<i32> {
            charge(&mut c, fuel::CALL + fuel::READ)?;
            let key = key_arg(&mut c, kp, kl)?;
            match current(c.data(), &key) {
                Some(value) => copy_out(&mut c, &value, buf, cap),
                None => Ok(-1),
            }
        },
    )?;
    l.func_wrap(
        m,
        "put",
        |mut c: Caller<'_, CallState<'_>>, kp: i32, kl: i32, vp: i32, vl: i32| -> HostResult<()> {
            let key = key_arg(&mut c, kp, kl)?;
            let max = c.data().limits.max_value_bytes;
            let value = read_bytes(&mut c, vp, vl, "a value", max)?;
            write(&mut c, key, Some(value))
        },
    )?;
    l.func_wrap(
        m,
        "delete",
        |mut c: Caller<'_, CallState<'_>>, kp: i32, kl: i32| -> HostResult<()> {
            let key = key_arg(&mut c, kp, kl)?;
            write(&mut c, key, None)
        },
    )?;
    l.func_wrap(
        m,
        "scan",
        |mut c: Caller<'_, CallState<'_>>,
         fp: i32,
         fl: i32,
         tp: i32,
         tl: i32,
         buf: i32,
         cap: i32|
         -> HostResult<i32> {
            charge(&mut c, fuel::CALL + fuel::READ)?;
            let from = key_arg(&mut c, fp, fl)?;
            // The namespace's end bounds every scan: `contract/<name>0`.
            let to = if tl == 0 {
                let mut end = namespaced(&c.data().call.contract, b"");
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                end
            } else {
                key_arg(&mut c, tp, tl)?
            };
            match first_key(c.data(), &from, Some(&to)) {
                Some(full) => {
                    let relative = strip_namespace(c.data(), &full);
                    copy_out(&mut c, &relative, buf, cap)
                }
                None => Ok(-1),
            }
        },
    )?;
    l.func_wrap(
        m,
        "caller",
        |mut c: Caller<'_, CallState<'_>>, ptr: i32| -> HostResult<()> {
            charge(&mut c, fuel::CALL)?;
            let who = c.data().call.caller;
            write_bytes(&mut c, ptr, &who)
        },
    )?;
    l.func_wrap(
        m,
        "block_height",
        |mut c: Caller<'_, CallState<'_>>| -> HostResult<i64> {
            charge(&mut c, fuel::CALL)?;
            Ok(i64::try_from(c.data().call.height).unwrap_or(i64::MAX))
        },
    )?;
    l.func_wrap(
        m,
        "block_time_ms",
        |mut c: Caller<'_, CallState<'_>>| -> HostResult<i64> {
            charge(&mut c, fuel::CALL)?;
            Ok(i64::try_from(c.data().call.time_ms).unwrap_or(i64::MAX))
        },
    )?;
    l.func_wrap(
        m,
        "emit",
        |mut c: Caller<'_, CallState<'_>>, tp: i32, tl: i32, dp: i32, dl: i32| -> HostResult<()> {
            charge(&mut c, fuel::CALL)?;
            let max = c.data().limits.max_event_bytes;
            let topic = read_bytes(&mut c, tp, tl, "an event topic", max)?;
            let data = read_bytes(&mut c, dp, dl, "an event", max)?;
            let s = c.data_mut();
            let max_events = s.limits.max_events;
            if s.events.len() >= max_events {
                return refuse(
                    &mut c,
                    Failure::TooMany {
                        what: "events",
                        max: max_events,
                    },
                );
            }
            s.event_bytes += topic.len() + data.len();
            s.events.push(Event { topic, data });
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        "abort",
        |mut c: Caller<'_, CallState<'_>>, mp: i32, ml: i32| -> HostResult<()> {
            let message = read_bytes(&mut c, mp, ml, "an abort message", 1024)?;
            let text = String::from_utf8_lossy(&message).into_owned();
            refuse(&mut c, Failure::Abort(text))
        },
    )?;
    Ok(l)
}
