//! Contract execution costs on this machine, in one run:
//! compiling a contract (cold, and from the cache), the fixed cost of a
//! call (an empty entry point: store, host functions, instantiation),
//! asset-transfer calls against the same transfer written in Rust over
//! the same state, the escrow figures, and ed25519 verification (what
//! bounds how many transactions a node can admit per core) for scale.
//!
//! `cargo run --release -p kubeledger-contract --example bench [-- CALLS]`

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey, Verifier};
use kubeledger_contract::{namespaced, Call, ContractState, Engine, EngineLimits, MapState};

fn example(name: &str) -> Vec<u8> {
    let path = format!("{}/../../contracts/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn account(name: &str) -> Vec<u8> {
    let mut v = vec![name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v
}

fn call(function: &str, input: Vec<u8>, read_only: bool) -> Call {
    Call {
        contract: "bank".into(),
        function: function.into(),
        input,
        caller: [7; 32],
        height: 1,
        time_ms: 0,
        fuel: 10_000_000,
        read_only,
    }
}

fn per(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let transfer_code = example("asset_transfer");
    let figures_code = example("escrow_figures");
    let empty_code =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "noop")))"#)
            .expect("wat");

    // Compile: a fresh engine each time (nothing cached), then the cache.
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        Engine::new(EngineLimits::default())
            .compile(&transfer_code)
            .expect("compiles");
    }
    let cold = per(started.elapsed(), rounds);
    let engine = Engine::new(EngineLimits::default());
    let transfer = engine.compile(&transfer_code).expect("compiles");
    let started = Instant::now();
    for _ in 0..calls {
        engine.compile(&transfer_code).expect("cached");
    }
    let cached = per(started.elapsed(), calls);
    println!(
        "compile asset_transfer ({} bytes): cold {cold:.1} us; from the cache (SHA-256 of the code and a lookup) {cached:.2} us",
        transfer_code.len()
    );

    // The fixed cost of a call.
    let empty = engine.compile(&empty_code).expect("compiles");
    let state = MapState::default();
    let started = Instant::now();
    for _ in 0..calls {
        let out = engine.execute(&empty, call("noop", Vec::new(), false), &state);
        assert!(out.result.is_ok());
    }
    let fixed = per(started.elapsed(), calls);
    println!("empty call (store, host functions, instantiation): {fixed:.2} us");

    // Asset transfers, each applied, alternating directions.
    let mut state = MapState::default();
    let mut init = account("A");
    init.extend_from_slice(&1_000_000_000i64.to_le_bytes());
    init.extend(account("B"));
    init.extend_from_slice(&1_000_000_000i64.to_le_bytes());
    let out = engine.execute(&transfer, call("init", init, false), &state);
    state.apply(&out.writes);
    let transfer_input = |from: &str, to: &str| {
        let mut v = account(from);
        v.extend(account(to));
        v.extend_from_slice(&7i64.to_le_bytes());
        v
    };
    let inputs = [transfer_input("A", "B"), transfer_input("B", "A")];
    let mut fuel = 0;
    let started = Instant::now();
    for i in 0..calls {
        let out = engine.execute(
            &transfer,
            call("transfer", inputs[i % 2].clone(), false),
            &state,
        );
        assert!(out.result.is_ok(), "{out:?}");
        fuel = out.fuel_used;
        state.apply(&out.writes);
    }
    let contract_us = per(started.elapsed(), calls);

    // The same transfer in Rust, over the same kind of state.
    let mut native = state.clone();
    let (a, b) = (namespaced("bank", b"A"), namespaced("bank", b"B"));
    let started = Instant::now();
    for i in 0..calls {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let read = |k: &[u8], s: &MapState| {
            i64::from_le_bytes(s.get(k).expect("account").try_into().expect("8 bytes"))
        };
        let (f, t) = (read(from, &native), read(to, &native));
        assert!(f >= 7);
        native
            .0
            .insert(from.clone(), (f - 7).to_le_bytes().to_vec());
        let t = if from == to { f - 7 } else { t };
        native.0.insert(to.clone(), (t + 7).to_le_bytes().to_vec());
    }
    let native_us = per(started.elapsed(), calls);
    println!(
        "asset transfer: contract {contract_us:.2} us and {fuel} fuel per call ({:.0} calls/s on one core); the same in Rust {native_us:.3} us",
        1e6 / contract_us
    );

    let figures = engine.compile(&figures_code).expect("compiles");
    let input: Vec<u8> = [1_000_000i64, 1_000_000, 3000, 10000, 4_000_000_000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let started = Instant::now();
    let mut figures_fuel = 0;
    for _ in 0..calls {
        let out = engine.execute(&figures, call("figures", input.clone(), true), &state);
        assert!(out.result.is_ok());
        figures_fuel = out.fuel_used;
    }
    let figures_us = per(started.elapsed(), calls);
    println!("escrow figures (query): {figures_us:.2} us and {figures_fuel} fuel per call");

    // ed25519 verification of a transaction-sized message, one at a time.
    let key = SigningKey::from_bytes(&[9; 32]);
    let message = [0x5au8; 200];
    let signature = key.sign(&message);
    let public = key.verifying_key();
    let started = Instant::now();
    for _ in 0..calls {
        public.verify(&message, &signature).expect("verifies");
    }
    let verify_us = per(started.elapsed(), calls);
    println!(
        "ed25519 verify (200-byte message, one at a time): {verify_us:.2} us ({:.0}/s on one core)",
        1e6 / verify_us
    );
    println!(
        "an asset-transfer call costs {:.2}x a signature check; a transfer transaction (signature + call) {:.2}x a plain put's signature check",
        contract_us / verify_us,
        (contract_us + verify_us) / verify_us
    );
}
