//! Spans of one container's way through the runtime, for the start-up breakdown: `create`,
//! `prepare`, `spawn`, `start` and `delete` in the shim; `setup`, `load` (AOT cache hit or
//! compile), `instantiate` and `run` in the container process, which sends them to the shim on
//! its log pipe; `exit` from the module's end to the shim's TaskExit.
//!
//! The shim logs each span as it ends (`ID: span load 1.9 ms aot=hit`), and with the `otlp`
//! feature exports a container's spans as one trace over OTLP when the container is deleted
//! (see [`otlp`]; off unless the standard `OTEL_*` variables ask for it). A container whose
//! spec has the annotation [`PARENT_ANNOTATION`] (a W3C `traceparent`) joins that trace: its
//! root span is a child of the caller's span.
#[cfg(feature = "otlp")]
pub mod otlp;

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A finished span: wall-clock times, comparable between the shim and its container processes.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attrs: Vec<(String, String)>,
}

impl Span {
    /// A span from `start` until now.
    pub fn since(name: &str, start: SystemTime) -> Span {
        Span { name: name.into(), start, end: SystemTime::now(), attrs: Vec::new() }
    }

    pub fn with(mut self, key: &str, value: impl fmt::Display) -> Span {
        self.attrs.push((key.into(), value.to_string()));
        self
    }

    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// The form a container process sends: `NAME START_NS END_NS [KEY=VALUE...]`.
    fn to_wire(&self) -> String {
        let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let attrs: String = self.attrs.iter().map(|(k, v)| format!(" {k}={}", v.replace(char::is_whitespace, "_"))).collect();
        format!("{} {} {}{attrs}", self.name, ns(self.start), ns(self.end))
    }

    fn from_wire(line: &str) -> Option<Span> {
        let mut words = line.split_whitespace();
        let name = words.next()?.to_string();
        let mut time = || words.next()?.parse::<u64>().ok().map(|ns| UNIX_EPOCH + Duration::from_nanos(ns));
        let (start, end) = (time()?, time()?);
        let attrs = words.map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect::<Option<_>>()?;
        Some(Span { name, start, end, attrs })
    }
}

/// How the shim logs a span.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:.1} ms", self.name, self.duration().as_secs_f64() * 1000.0)?;
        self.attrs.iter().try_for_each(|(k, v)| write!(f, " {k}={v}"))
    }
}

/// The annotation that names the caller's span (W3C `traceparent`: `00-TRACE-SPAN-FLAGS`).
pub const PARENT_ANNOTATION: &str = "wasmedge.io/traceparent";

/// The marker of a span line on a container process's log pipe.
const WIRE_PREFIX: &str = "SPAN ";

/// How long [`Trace::finish`] waits for the container processes' last span lines.
const PIPE_DRAIN: Duration = Duration::from_millis(200);

/// In the shim: the spans of one container, from the start of its Task.Create.
#[derive(Clone)]
pub struct Trace(Arc<(Mutex<Spans>, Condvar)>);

struct Spans {
    created: SystemTime,
    spans: Vec<Span>,
    /// The caller's span, from [`PARENT_ANNOTATION`].
    parent: Option<String>,
    /// Log pipes of the container's processes not yet read to their end.
    open_pipes: usize,
}

impl Trace {
    pub fn new(created: SystemTime) -> Trace {
        Trace(Arc::new((Mutex::new(Spans { created, spans: Vec::new(), parent: None, open_pipes: 0 }), Condvar::new())))
    }

    fn spans(&self) -> MutexGuard<'_, Spans> {
        self.0 .0.lock().unwrap()
    }

    pub fn created(&self) -> SystemTime {
        self.spans().created
    }

    /// The container's trace continues the caller's (a W3C `traceparent`).
    pub fn set_parent(&self, traceparent: &str) {
        self.spans().parent = Some(traceparent.to_string());
    }

    pub fn parent(&self) -> Option<String> {
        self.spans().parent.clone()
    }

    /// Records a finished span and logs it with the container's (or exec's) name.
    pub fn add(&self, name: &str, span: Span) {
        log::info!("{name}: span {span}");
        self.spans().spans.push(span);
    }

    /// A process's log pipe is read from now on, until [`Self::pipe_closed`].
    pub fn pipe_opened(&self) {
        self.spans().open_pipes += 1;
    }

    pub fn pipe_closed(&self) {
        self.spans().open_pipes -= 1;
        self.0 .1.notify_all();
    }

    /// Takes a log line of a container process: a span line is recorded and `true` returned.
    pub fn take_line(&self, name: &str, line: &str) -> bool {
        let Some(wire) = line.strip_prefix(WIRE_PREFIX) else { return false };
        match Span::from_wire(wire) {
            Some(span) => self.add(name, span),
            None => log::warn!("{name}: malformed span line: {wire}"),
        }
        true
    }

    /// At Task.Delete: adds `exit` (from the module's end to `exited`, when the shim learnt of
    /// the container process's exit) and returns
    /// the root span, from create until now, with the spans under it. The processes have
    /// exited, so their pipes end within moments: their last spans are waited for, briefly.
    pub fn finish(&self, id: &str, exited: Option<SystemTime>, root_attrs: Vec<(String, String)>) -> (Span, Vec<Span>) {
        let run_end = {
            let (spans, _) = self.0 .1.wait_timeout_while(self.spans(), PIPE_DRAIN, |s| s.open_pipes > 0).unwrap();
            spans.spans.iter().rev().find(|s| s.name == "run").map(|s| s.end).zip(exited)
        };
        if let Some((start, end)) = run_end {
            self.add(id, Span { name: "exit".into(), start, end: end.max(start), attrs: Vec::new() });
        }
        let spans = self.spans();
        let root = Span { name: "container".into(), start: spans.created, end: SystemTime::now(), attrs: root_attrs };
        (root, spans.spans.clone())
    }
}

/// Exports a container's finished trace (with the `otlp` feature and export configured), under
/// the `parent` span (a W3C `traceparent`) if given.
#[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
pub fn export(root: &Span, spans: &[Span], parent: Option<&str>) {
    #[cfg(feature = "otlp")]
    otlp::export(root, spans, parent);
}

/// Sends what is left to export; the shim calls it before it exits.
pub fn shutdown() {
    #[cfg(feature = "otlp")]
    otlp::shutdown();
}

/// In a container process: the pipe its spans go to (its log pipe to the shim).
static REPORT: OnceLock<Mutex<File>> = OnceLock::new();

pub fn report_to(pipe: File) {
    let _ = REPORT.set(Mutex::new(pipe));
}

/// In a container process: sends a finished span to the shim, whatever the log level. Outside
/// a container process (unit tests) it goes nowhere.
pub fn report(span: Span) {
    if let Some(pipe) = REPORT.get() {
        // One write of less than PIPE_BUF: never interleaved with a log line.
        let _ = pipe.lock().unwrap().write_all(format!("{WIRE_PREFIX}{}\n", span.to_wire()).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_survives_the_log_pipe() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = Span { name: "load".into(), start, end: start + Duration::from_micros(1900), attrs: vec![] }.with("aot", "hit");
        assert_eq!(Span::from_wire(&span.to_wire()), Some(span.clone()));
        assert_eq!(span.to_string(), "load 1.9 ms aot=hit");
    }

    #[test]
    fn malformed_span_lines_are_refused() {
        for line in ["", "run", "run 1", "run x 2", "run 1 2 novalue"] {
            assert_eq!(Span::from_wire(line), None, "{line:?}");
        }
    }

    #[test]
    fn finish_adds_the_exit_and_the_root_span() {
        let created = SystemTime::now();
        let trace = Trace::new(created);
        assert!(trace.take_line("c", &format!("{WIRE_PREFIX}{}", Span::since("run", created).to_wire())));
        assert!(!trace.take_line("c", "INFO aot cache Hit"));
        let (root, spans) = trace.finish("c", Some(SystemTime::now()), vec![("container.id".into(), "c".into())]);
        assert_eq!(spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["run", "exit"]);
        assert_eq!((root.name.as_str(), root.start), ("container", created));
        assert!(spans.iter().all(|s| s.start >= root.start && s.end <= root.end));
    }
}
