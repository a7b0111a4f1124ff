#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kubeledger_fuzz::transaction(data));
