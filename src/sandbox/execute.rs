//! One execution: the request checked, the code compiled (or taken from the cache), then run in
//! a container of its own through the WasmEdge shim — its own snapshot on the program's, a
//! fresh scratch directory at `/work`, a new network namespace (no network), the memory limit
//! as cgroup limit and engine cap, the time limit as the shim's. Python and JavaScript take a
//! warm slot when one is ready (see [`super::pool`]).
use super::compiler::{Compiled, Language, Program};
use super::container::{self, Ended, Run};
use super::pool::Slot;
use super::spec::{chown_tree, spec, WASMEDGE_RUNTIME, WORKDIR};
use super::limits::{self, Limits};
use super::metrics::{Metrics, Outcome};
use super::telemetry::Span;
use super::Service;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The exit code the shim gives a module stopped at its time limit.
const TIMED_OUT_EXIT: i32 = 124;
/// The service's own deadline past an execution's time limit, which the shim enforces (and
/// stops while it AOT-compiles a new module, up to its compile bound of 15 minutes).
const DEADLINE_ALLOWANCE: Duration = Duration::from_secs(15 * 60 + 30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub language: String,
    pub code: String,
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<File>,
    pub limits: Option<limits::Requested>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Durations {
    pub compile: u64,
    pub start: u64,
    pub run: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct Response {
    /// `compile` when the compiler refused the code, else `run`.
    pub phase: &'static str,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub out_of_memory: bool,
    pub truncated: bool,
    pub cache: &'static str,
    /// Ran in a warm slot (see `pool`).
    pub warm: bool,
    pub duration_ms: Durations,
    pub memory_peak_bytes: u64,
}

/// A request that cannot run, as a caller must be told.
#[derive(Debug, PartialEq)]
pub enum Invalid {
    /// 400, with the reason.
    Bad(String),
    /// 413, with the reason.
    TooLarge(String),
}

/// Checks what the limits module does not: sizes, the language, file paths, env names.
pub fn check<'a>(request: &Request, languages: &'a [Language]) -> Result<&'a Language, Invalid> {
    if request.code.len() > limits::MAX_CODE {
        return Err(Invalid::TooLarge(format!("code is {} bytes; the bound is {}", request.code.len(), limits::MAX_CODE)));
    }
    if request.stdin.len() > limits::MAX_STDIN {
        return Err(Invalid::TooLarge(format!("stdin is {} bytes; the bound is {}", request.stdin.len(), limits::MAX_STDIN)));
    }
    let files: usize = request.files.iter().map(|f| f.path.len() + f.content.len()).sum::<usize>()
        + request.env.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>();
    if files > limits::MAX_FILES {
        return Err(Invalid::TooLarge(format!("files and env are {files} bytes; the bound is {}", limits::MAX_FILES)));
    }
    if request.args.iter().map(|a| a.len() + 1).sum::<usize>() > limits::MAX_ARGS {
        return Err(Invalid::TooLarge(format!("args are over the bound of {} bytes", limits::MAX_ARGS)));
    }
    let wanted = request.language.to_ascii_lowercase();
    let language = languages.iter().find(|l| l.name == wanted || l.aliases.contains(&wanted)).ok_or_else(|| {
        let known: Vec<&str> = languages.iter().map(|l| l.name.as_str()).collect();
        Invalid::Bad(format!("unknown language {:?}; known languages: {}", request.language, known.join(", ")))
    })?;
    for (name, value) in &request.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(Invalid::Bad(format!("env name {name:?} is not a valid variable name")));
        }
    }
    for file in &request.files {
        scratch_path(&file.path).map_err(Invalid::Bad)?;
    }
    if request.args.iter().any(|a| a.contains('\0')) {
        return Err(Invalid::Bad("args may not hold NUL bytes".into()));
    }
    Ok(language)
}

/// Where a request's file goes under the scratch directory: `data.txt` and `/work/data.txt`
/// alike are `/work/data.txt`; nothing may leave it.
fn scratch_path(path: &str) -> Result<PathBuf, String> {
    let rel = path.strip_prefix(WORKDIR).filter(|r| r.starts_with('/')).unwrap_or(path).trim_start_matches('/');
    let rel = Path::new(rel);
    let ok = !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if ok && !path.starts_with('/') || ok && path.starts_with(&format!("{WORKDIR}/")) {
        Ok(rel.to_path_buf())
    } else {
        Err(format!("file path {path:?} must be relative, or under {WORKDIR}/, without `..`"))
    }
}

/// Runs a checked request to its end. `cancel` fires when the client goes away.
pub async fn execute(
    service: &Service,
    request: Request,
    language: Language,
    limits: Limits,
    cancel: watch::Receiver<()>,
    span: &Span,
) -> Result<Response> {
    let started = Instant::now();
    span.set("language", &language.name);
    let compiling = span.child("compile");
    let compiled = service.compiler.compile(&language, &request.code, cancel.clone()).await;
    if let Ok(Compiled::Ready { cache_hit, .. }) = &compiled {
        compiling.set("cache", if *cache_hit { "hit" } else { "miss" });
    }
    compiling.end();
    let compiled = compiled?;
    let (program, cache_hit, compile) = match compiled {
        Compiled::Ready { program, cache_hit, compile } => (program, cache_hit, compile),
        Compiled::Failed { exit_code, diagnostics, compile } => {
            record(&service.metrics, &language.name, "compile_error");
            return Ok(Response {
                phase: "compile",
                exit_code,
                stdout: String::new(),
                stderr: diagnostics,
                timed_out: false,
                out_of_memory: false,
                truncated: false,
                cache: "miss",
                warm: false,
                duration_ms: Durations { compile: ms(compile), total: ms(started.elapsed()), ..Default::default() },
                memory_peak_bytes: 0,
            });
        }
    };
    let running = span.child("run");
    let lang = Metrics::language(&language.name);
    let mut warm = None;
    let taking = Instant::now();
    if let Some(slot) = service.pool.take(&language.name, &limits, super::pool::WAIT_FOR_SLOT).await {
        service.metrics.warm_hits.get_or_create(&lang).inc();
        let id = slot.id.clone();
        running.set("container.id", &id);
        running.set("warm", true);
        let waited = taking.elapsed();
        warm = run_warm(slot, &request, &program, limits, cancel.clone()).await.map(|ended| {
            // The slot's container was started before the request: its start is the wait for it.
            (id, ended.map(|ended| Ended { start: waited, ..ended }))
        });
    } else if super::pool::WARM_LANGUAGES.contains(&language.name.as_str()) {
        service.metrics.warm_misses.get_or_create(&lang).inc();
    }
    let (id, ended) = match warm {
        Some(warm) => warm,
        None => {
            let id = format!("wsbx-run-{}", super::unique_suffix());
            let dir = service.state_dir.join("scratch").join(&id);
            running.set("container.id", &id);
            let result = run(service, &request, &program, limits, &id, &dir, cancel, running.traceparent()).await;
            let _ = std::fs::remove_dir_all(&dir);
            (id, result)
        }
    };
    let warm = id.starts_with(super::pool::SLOT_PREFIX);
    running.end();
    let mut ended = ended?;
    // Killed by the service at the deadline: the shim's own code for a time limit.
    if ended.killed_at_deadline {
        ended.exit_code = TIMED_OUT_EXIT;
    }
    service.metrics.start_seconds.get_or_create(&lang).observe(ended.start.as_secs_f64());
    service.metrics.run_seconds.get_or_create(&lang).observe(ended.run.as_secs_f64());
    service.metrics.memory_peak_bytes.get_or_create(&lang).observe(ended.memory_peak_bytes as f64);
    let stderr = String::from_utf8_lossy(&ended.stderr.data).into_owned();
    let timed_out = ended.killed_at_deadline || (ended.exit_code == TIMED_OUT_EXIT && stderr.contains("time limit"));
    // The OOM killer, or the engine's cap refusing the module's memory growth.
    let out_of_memory = ended.oom_killed || stderr.lines().any(|l| l.starts_with(crate::engine::OUT_OF_MEMORY_NOTICE));
    let outcome = match () {
        _ if ended.cancelled => "cancelled",
        _ if timed_out => "timed_out",
        _ if out_of_memory => "out_of_memory",
        _ if ended.exit_code != 0 => "exit_nonzero",
        _ => "ok",
    };
    record(&service.metrics, &language.name, outcome);
    log::info!(
        "execution id={id} language={} outcome={outcome} warm={warm} exit_code={} cache={} compile_ms={} run_ms={} peak_bytes={}",
        language.name,
        ended.exit_code,
        if cache_hit { "hit" } else { "miss" },
        ms(compile),
        ms(ended.run),
        ended.memory_peak_bytes
    );
    Ok(Response {
        phase: "run",
        exit_code: ended.exit_code,
        stdout: String::from_utf8_lossy(&ended.stdout.data).into_owned(),
        stderr,
        timed_out,
        out_of_memory,
        truncated: ended.stdout.truncated || ended.stderr.truncated,
        cache: if cache_hit { "hit" } else { "miss" },
        warm,
        duration_ms: Durations { compile: ms(compile), start: ms(ended.start), run: ms(ended.run), total: ms(started.elapsed()) },
        memory_peak_bytes: ended.memory_peak_bytes,
    })
}

fn record(metrics: &Metrics, language: &str, outcome: &str) {
    metrics.executions.get_or_create(&Outcome { language: language.into(), outcome: outcome.into() }).inc();
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[allow(clippy::too_many_arguments)] // one execution's parts, each used once
async fn run(
    service: &Service,
    request: &Request,
    program: &Program,
    limits: Limits,
    id: &str,
    dir: &Path,
    cancel: watch::Receiver<()>,
    traceparent: Option<String>,
) -> Result<Ended> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    write_files(&work, &request.files)?;
    let stdin = if request.stdin.is_empty() {
        None
    } else {
        let path = dir.join("stdin");
        std::fs::write(&path, &request.stdin).context("writing stdin")?;
        Some(path)
    };
    let mut args = program.entrypoint.clone();
    args.extend(request.args.iter().cloned());
    let mut env = program.env.clone();
    env.extend(request.env.iter().map(|(k, v)| format!("{k}={v}")));
    let spec = spec(id, &args, &env, limits, &work, traceparent);
    let run = Run {
        id: id.to_string(),
        runtime: WASMEDGE_RUNTIME,
        spec,
        parent_snapshot: Some(&program.snapshot),
        stdin,
        deadline: limits.timeout + DEADLINE_ALLOWANCE,
        output_bound: limits::MAX_OUTPUT,
        cancel,
    };
    container::run(&service.cd, &service.metrics, &service.state_dir.join("runs"), run).await
}

/// An execution in a warm slot: the files written into its scratch directory, the request
/// into its stdin. `None`: the slot was gone before it took the request.
async fn run_warm(slot: Slot, request: &Request, program: &Program, limits: Limits, cancel: watch::Receiver<()>) -> Option<Result<Ended>> {
    if let Err(e) = write_files(&slot.work, &request.files) {
        return Some(Err(e));
    }
    let script = program.entrypoint.get(1).map_or("main", String::as_str);
    let input = super::pool::request_bytes(script, &request.args, &request.env, &request.code, &request.stdin);
    slot.run(input, limits.timeout, cancel).await
}

/// The request's files in the scratch directory `work`, owned by the user the program runs as.
fn write_files(work: &Path, files: &[File]) -> Result<()> {
    for file in files {
        let path = work.join(scratch_path(&file.path).map_err(anyhow::Error::msg)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.content).with_context(|| format!("writing {}", path.display()))?;
    }
    chown_tree(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn languages() -> Vec<Language> {
        vec![Language { name: "python".into(), aliases: vec!["py".into()], extension: "py".into() }]
    }

    fn request(language: &str) -> Request {
        serde_json::from_value(serde_json::json!({"language": language, "code": "print(1)"})).unwrap()
    }

    #[test]
    fn languages_by_name_or_alias_and_unknown_ones_list_the_known() {
        assert_eq!(check(&request("Python"), &languages()).unwrap().name, "python");
        assert_eq!(check(&request("py"), &languages()).unwrap().name, "python");
        let Err(Invalid::Bad(why)) = check(&request("cobol"), &languages()) else { panic!() };
        assert_eq!(why, "unknown language \"cobol\"; known languages: python");
    }

    #[test]
    fn sizes_are_bounded() {
        let mut r = request("python");
        r.code = "x".repeat(limits::MAX_CODE + 1);
        assert!(matches!(check(&r, &languages()), Err(Invalid::TooLarge(_))));
        let mut r = request("python");
        r.stdin = "x".repeat(limits::MAX_STDIN + 1);
        assert!(matches!(check(&r, &languages()), Err(Invalid::TooLarge(_))));
    }

    #[test]
    fn file_paths_stay_in_the_scratch_directory() {
        assert_eq!(scratch_path("data.txt").unwrap(), PathBuf::from("data.txt"));
        assert_eq!(scratch_path("/work/d/x.txt").unwrap(), PathBuf::from("d/x.txt"));
        for bad in ["../x", "/etc/passwd", "/work", "/work/../x", "", "a/../../b", "/workx/y"] {
            assert!(scratch_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<Request, _> = serde_json::from_value(serde_json::json!({"language": "py", "code": "", "colour": 1}));
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }
}
