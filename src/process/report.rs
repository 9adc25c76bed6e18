//! A container process's log lines and spans go to the shim through a pipe (fd
//! [`crate::protocol::REPORT_FD`]): the process's stderr belongs to the container, and it cannot
//! open the shim's log. The shim's end is [`crate::launch::relay`].
use crate::trace;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

struct PipeLogger(Mutex<File>);

impl log::Log for PipeLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}\n", record.level(), record.args()).replace('\n', " ");
            let _ = self.0.lock().unwrap_or_else(|e| e.into_inner()).write_all(format!("{}\n", line.trim_end()).as_bytes());
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
