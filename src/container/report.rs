//! Log lines of a container process reach the shim's log (containerd's log pipe) through a
//! pipe: the process's stderr belongs to the container, and it cannot open the shim's log.
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::sync::Mutex;
use crate::trace::{self, Trace};

/// The file descriptor a container process writes its log lines to.
pub const REPORT_FD: i32 = 4;

struct PipeLogger(Mutex<File>);

impl log::Log for PipeLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}\n", record.level(), record.args()).replace('\n', " ");
            let _ = self.0.lock().unwrap().write_all(format!("{}\n", line.trim_end()).as_bytes());
        }
    }

    fn flush(&self) {}
}

/// In the container process: send `log` records (`RUST_LOG` sets the level) and spans to the shim.
pub fn log_to_shim(pipe: File) {
    if let Ok(spans) = pipe.try_clone() {
        trace::report_to(spans);
    }
    let level = std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(log::LevelFilter::Info);
    if log::set_boxed_logger(Box::new(PipeLogger(Mutex::new(pipe)))).is_ok() {
        log::set_max_level(level);
    }
}

/// In the shim: log each line of a container process with the container's id, and record its
/// spans in `trace`, until it exits.
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
