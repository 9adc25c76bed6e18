//! The service's Prometheus metrics (prometheus-client), served at `/metrics`.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub language: String,
    /// ok, exit_nonzero, compile_error, timed_out, out_of_memory, cancelled, error
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Language {
    pub language: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub executions: Family<Outcome, Counter>,
    pub compile_seconds: Family<Language, Histogram>,
    pub start_seconds: Family<Language, Histogram>,
    pub run_seconds: Family<Language, Histogram>,
    pub memory_peak_bytes: Family<Language, Histogram>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub queue_depth: Gauge,
    pub containers_in_flight: Gauge,
    pub rejected: Family<Rejected, Counter>,
    pub warm_hits: Family<Language, Counter>,
    pub warm_misses: Family<Language, Counter>,
    pub warm_ready: Family<Language, Gauge>,
    pub warm_target: Family<Language, Gauge>,
    pub warm_slot_bytes: Family<Language, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Rejected {
    /// The HTTP status of the refusal.
    pub status: u16,
}

fn seconds() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0])
}

fn bytes() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1024.0 * 1024.0, 2.0, 12))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wasmedge_sandbox");
        let executions = Family::<Outcome, Counter>::default();
        let compile_seconds = Family::<Language, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let start_seconds = Family::<Language, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let run_seconds = Family::<Language, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let memory_peak_bytes = Family::<Language, Histogram>::new_with_constructor(bytes as fn() -> Histogram);
        let (cache_hits, cache_misses) = (Counter::default(), Counter::default());
        let (queue_depth, containers_in_flight) = (Gauge::default(), Gauge::default());
        let rejected = Family::<Rejected, Counter>::default();
        let (warm_hits, warm_misses) = (Family::<Language, Counter>::default(), Family::<Language, Counter>::default());
        let (warm_ready, warm_target) = (Family::<Language, Gauge>::default(), Family::<Language, Gauge>::default());
        let warm_slot_bytes = Family::<Language, Gauge>::default();
        registry.register("executions", "Executions by language and outcome", executions.clone());
        registry.register("compile_seconds", "Compile time of cache misses", compile_seconds.clone());
        registry.register("start_seconds", "Container create and start", start_seconds.clone());
        registry.register("run_seconds", "From start to exit", run_seconds.clone());
        registry.register("memory_peak_bytes", "Peak memory of an execution's cgroup", memory_peak_bytes.clone());
        registry.register("cache_hits", "Compile cache hits", cache_hits.clone());
        registry.register("cache_misses", "Compile cache misses", cache_misses.clone());
        registry.register("queue_depth", "Requests waiting for a slot", queue_depth.clone());
        registry.register("containers_in_flight", "Containers that exist now", containers_in_flight.clone());
        registry.register("rejected_requests", "Requests refused, by HTTP status", rejected.clone());
        registry.register("warm_hits", "Executions that took a warm slot", warm_hits.clone());
        registry.register("warm_misses", "Executions of a warm language that found no slot ready", warm_misses.clone());
        registry.register("warm_ready", "Warm slots ready now", warm_ready.clone());
        registry.register("warm_target", "Warm slots wanted: --pool, as far as --pool-memory goes", warm_target.clone());
        registry.register("warm_slot_bytes", "Memory of one warm slot (its cgroup once ready, a running mean)", warm_slot_bytes.clone());
        Metrics {
            registry,
            executions,
            compile_seconds,
            start_seconds,
            run_seconds,
            memory_peak_bytes,
            cache_hits,
            cache_misses,
            queue_depth,
            containers_in_flight,
            rejected,
            warm_hits,
            warm_misses,
            warm_ready,
            warm_target,
            warm_slot_bytes,
        }
    }

    pub fn language(language: &str) -> Language {
        Language { language: language.into() }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
