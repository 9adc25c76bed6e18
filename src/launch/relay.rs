//! The shim's end of a container process's report pipe: its log lines go to the shim's log
//! (containerd's log pipe) with the container's id, its spans to the container's trace. The
//! process's end is [`crate::process::report`].
use crate::trace::Trace;
use std::fs::File;
use std::io::{BufRead, BufReader};

/// Logs each line of a container process with the container's id and records its spans in
/// `trace`, until the process exits.
pub fn forward(id: String, pipe: File, trace: Trace) {
    trace.pipe_opened();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if trace.take_line(&id, &line) {
                continue;
            }
            let (level, message) = line.split_once(' ').unwrap_or(("INFO", &line));
            log::log!(level.parse().unwrap_or(log::Level::Info), "{id}: {message}");
        }
        trace.pipe_closed();
    });
}
