//! The module itself: arbitrary bytes handed to WasmEdge's loader and validator the way the
//! container process does (interpreter path, no AOT), with and without a memory cap. Any
//! outcome but a crash is fine. WasmEdge (C++) is not instrumented, so coverage guidance is
//! weak here: seed it with real modules.
#![no_main]
use containerd_shim_wasmedge::engine::{prepare, EngineOptions, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let capped = EngineOptions { aot_dir: None, aot_max_bytes: 0, limits: Limits { max_memory_pages: Some(16), time_limit: None } };
    let _ = prepare(data, &capped);
    let free = EngineOptions { aot_dir: None, ..EngineOptions::default() };
    if let Err(e) = prepare(data, &free) {
        assert!(!e.to_string().contains('\n'), "a load error must be one line: {e}");
    }
});
