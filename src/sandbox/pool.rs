//! Warm slots: for Python and JavaScript, containers created and started ahead of requests,
//! each with its interpreter initialised and blocked on stdin for one request (`warm/python.py`,
//! the JavaScript runtime's `--request-on-stdin`). An execution takes a slot, writes its files
//! into the slot's scratch directory and its script, args, env and stdin into the slot's stdin,
//! and waits for the exit. A slot runs one request at most; it is then removed, and another is
//! started in the background.
//!
//! A slot is the same container an execution gets without the pool (the same spec, confinement
//! and memory limit), made before the code is known; so only requests with the default memory
//! limit take one. The time limit is the service's: it kills the container at the request's
//! deadline. The shim's own limit, the slot's lifetime plus the longest request, is a backstop,
//! and it ends slots that no request took.
use super::compiler::{Compiled, Language};
use super::container::{self, Ended, Run};
use super::spec::{self, WASMEDGE_RUNTIME, WORKDIR};
use super::limits::{self, Limits};
use super::metrics::Metrics;
use super::{unique_suffix, Service};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch, Notify};

/// How long a request waits for a slot on its way to ready, at most, before it takes a
/// container of its own.
pub const WAIT_FOR_SLOT: Duration = Duration::from_secs(5);
/// How long a slot waits for a request; an older one is not taken.
const SLOT_LIFETIME: Duration = Duration::from_secs(600);
/// The wait after a slot failed to start, before the next try (and the filler's period).
const RETRY: Duration = Duration::from_secs(5);
/// How often a starting slot looks for its ready file.
const READY_POLL: Duration = Duration::from_millis(5);
/// How often an idle slot checks that its task still runs.
const WATCH_PERIOD: Duration = Duration::from_secs(1);
const PYTHON_BOOTSTRAP: &str = include_str!("warm/python.py");

/// The start of every warm slot's container id.
pub const SLOT_PREFIX: &str = "wsbx-warm-";
/// The languages with warm slots.
pub const WARM_LANGUAGES: &[&str] = &["python", "javascript"];

/// The file a slot's runtime makes in its scratch directory once it is initialised; the
/// service removes it before the slot is taken.
const READY_FILE: &str = ".ready";

/// How a warm slot of `language` starts its runtime, from the entrypoint of a program of it:
/// the interpreter, told to make the ready file and wait for its request on stdin.
fn warm_args(language: &str, entrypoint: &[String]) -> Option<Vec<String>> {
    let runtime = entrypoint.first()?.clone();
    let ready = format!("{WORKDIR}/{READY_FILE}");
    match language {
        "python" => Some(vec![runtime, "-c".into(), PYTHON_BOOTSTRAP.into(), ready]),
        "javascript" => Some(vec![runtime, "--request-on-stdin".into(), ready]),
        _ => None,
    }
}

/// A slot's request on its stdin: a JSON line, the script, then the script's stdin.
pub fn request_bytes(script: &str, args: &[String], env: &std::collections::BTreeMap<String, String>, code: &str, stdin: &str) -> Vec<u8> {
    let header = serde_json::json!({"script": script, "args": args, "env": env, "code": code.len()});
    let mut bytes = header.to_string().into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(code.as_bytes());
    bytes.extend_from_slice(stdin.as_bytes());
    bytes
}

pub struct Pool {
    /// Slots wanted per language; 0: the pool is off.
    per_language: usize,
    /// What all slots together may hold, bytes.
    memory_budget: u64,
    /// The memory limit of a slot's container: the default one.
    memory_limit: u64,
    /// The shim's time limit of a slot.
    shim_limit: Duration,
    state: Mutex<State>,
    /// Wakes the filler: a slot was taken or has gone.
    wake: Notify,
    metrics: Arc<Metrics>,
    /// Slot tasks that still run (ready, starting or serving).
    live: AtomicUsize,
    gone: Notify,
}

#[derive(Default)]
struct State {
    ready: HashMap<String, VecDeque<Slot>>,
    /// Requests waiting for a slot, in their order.
    waiting: HashMap<String, VecDeque<oneshot::Sender<Slot>>>,
    starting: HashMap<String, usize>,
    /// Memory of one ready slot by language, bytes (a running mean).
    slot_bytes: HashMap<String, u64>,
    /// When a slot of the language last failed to start: no other starts for [`RETRY`].
    failed_at: HashMap<String, Instant>,
    closing: bool,
}

/// A warm slot, ready for one request.
pub struct Slot {
    pub id: String,
    /// The scratch directory, `/work` in the container.
    pub work: PathBuf,
    born: Instant,
    job: oneshot::Sender<Job>,
}

struct Job {
    input: Vec<u8>,
    deadline: Duration,
    cancel: watch::Receiver<()>,
    reply: oneshot::Sender<Result<Ended>>,
}

impl Slot {
    /// Runs the request `input` (see [`request_bytes`]) to its end. `None`: the slot had ended
    /// before it took the request, which then never reached it.
    pub async fn run(self, input: Vec<u8>, deadline: Duration, cancel: watch::Receiver<()>) -> Option<Result<Ended>> {
        let (reply, answer) = oneshot::channel();
        self.job.send(Job { input, deadline, cancel, reply }).ok()?;
        answer.await.ok()
    }
}

impl Pool {
    pub fn new(per_language: usize, memory_budget: u64, policy: &limits::Policy, metrics: Arc<Metrics>) -> Pool {
        Pool {
            per_language,
            memory_budget,
            memory_limit: policy.default_memory,
            shim_limit: SLOT_LIFETIME + policy.max_timeout + Duration::from_secs(60),
            state: Mutex::default(),
            wake: Notify::new(),
            metrics,
            live: AtomicUsize::new(0),
            gone: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request with `limits` may take a slot.
    fn serves(&self, limits: &Limits) -> bool {
        self.per_language > 0 && limits.memory_bytes == self.memory_limit
    }

    /// A ready slot of `language` for a request with `limits`, or the first of those on their
    /// way to ready if it comes within `within` (it is further along than a container started
    /// now). Requests that wait are served in their order.
    pub async fn take(&self, language: &str, limits: &Limits, within: Duration) -> Option<Slot> {
        if !self.serves(limits) {
            return None;
        }
        let waiting = {
            let mut state = self.state();
            if let Some(slot) = self.pop_ready(&mut state, language) {
                return Some(slot);
            }
            if state.starting.get(language).copied().unwrap_or(0) == 0 {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.entry(language.to_string()).or_default().push_back(tx);
            rx
        };
        // Timed out: the sender left in the queue fails, and its slot goes to the next.
        tokio::time::timeout(within, waiting).await.ok()?.ok()
    }

    fn pop_ready(&self, state: &mut State, language: &str) -> Option<Slot> {
        let ready = state.ready.get_mut(language)?;
        // Too old ones are dropped: their task sees the sender go and removes them.
        let slot = loop {
            let slot = ready.pop_front()?;
            if slot.born.elapsed() < SLOT_LIFETIME {
                break slot;
            }
        };
        self.metrics.warm_ready.get_or_create(&Metrics::language(language)).set(ready.len() as i64);
        self.wake.notify_one();
        Some(slot)
    }

    /// A slot that is ready: to the first request that waits for one, else to the ready ones.
    fn offer(&self, state: &mut State, language: &str, mut slot: Slot) {
        if let Some(waiting) = state.waiting.get_mut(language) {
            while let Some(request) = waiting.pop_front() {
                match request.send(slot) {
                    Ok(()) => {
                        self.wake.notify_one();
                        return;
                    }
                    Err(back) => slot = back,
                }
            }
        }
        let ready = state.ready.entry(language.to_string()).or_default();
        ready.push_back(slot);
        self.metrics.warm_ready.get_or_create(&Metrics::language(language)).set(ready.len() as i64);
    }

    /// Slots wanted of `language`: as many as asked, as far as its share of the memory budget
    /// (an equal part for each of `languages`) goes; one at least.
    fn wanted(&self, state: &State, language: &str, languages: usize) -> usize {
        match state.slot_bytes.get(language) {
            None | Some(0) => self.per_language,
            Some(bytes) => self.per_language.min((self.memory_budget / languages.max(1) as u64 / bytes).max(1) as usize),
        }
    }

    /// Stops making slots and removes the ready ones; returns when every slot is gone (or
    /// after `within`).
    pub async fn close(&self, within: Duration) {
        let dropped: Vec<Slot> = {
            let mut state = self.state();
            state.closing = true;
            state.waiting.clear();
            state.ready.drain().flat_map(|(_, slots)| slots).collect()
        };
        drop(dropped);
        self.wake.notify_one();
        let _ = tokio::time::timeout(within, async {
            while self.live.load(Ordering::SeqCst) > 0 {
                let gone = self.gone.notified();
                if self.live.load(Ordering::SeqCst) == 0 {
                    break;
                }
                gone.await;
            }
        })
        .await;
    }
}

/// Keeps the pool filled, for as long as the service runs.
pub async fn keep_filled(service: Arc<Service>) {
    let pool = &service.pool;
    if pool.per_language == 0 {
        return;
    }
    let languages: Vec<Language> =
        service.languages.iter().filter(|l| WARM_LANGUAGES.contains(&l.name.as_str())).cloned().collect();
    loop {
        let wake = pool.wake.notified();
        for language in &languages {
            loop {
                {
                    let mut state = pool.state();
                    if state.closing {
                        return;
                    }
                    if state.failed_at.get(&language.name).is_some_and(|at| at.elapsed() < RETRY) {
                        break;
                    }
                    let wanted = pool.wanted(&state, &language.name, languages.len());
                    let lang = Metrics::language(&language.name);
                    service.metrics.warm_target.get_or_create(&lang).set(wanted as i64);
                    if let Some(bytes) = state.slot_bytes.get(&language.name) {
                        service.metrics.warm_slot_bytes.get_or_create(&lang).set(*bytes as i64);
                    }
                    let have = state.ready.get(&language.name).map_or(0, VecDeque::len)
                        + state.starting.get(&language.name).copied().unwrap_or(0);
                    if have >= wanted {
                        break;
                    }
                    *state.starting.entry(language.name.clone()).or_default() += 1;
                }
                pool.live.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(slot_task(service.clone(), language.clone()));
            }
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One slot's life: made, ready, perhaps used once, removed.
async fn slot_task(service: Arc<Service>, language: Language) {
    let pool = &service.pool;
    let mut counted = true; // in `starting`, until it is ready or fails
    let result = slot(&service, &language, &mut counted).await;
    {
        let mut state = pool.state();
        if counted {
            *state.starting.entry(language.name.clone()).or_default() -= 1;
        }
        if let Err(e) = &result {
            log::warn!("warm slot of {}: {e:#}", language.name);
            state.failed_at.insert(language.name.clone(), Instant::now());
        }
    }
    pool.live.fetch_sub(1, Ordering::SeqCst);
    pool.gone.notify_waiters();
    pool.wake.notify_one();
}

async fn slot(service: &Service, language: &Language, counted: &mut bool) -> Result<()> {
    let pool = &service.pool;
    // The runtime's image: any program of the language has it; the slot runs the interpreter
    // with its own arguments.
    let (_keep, never) = watch::channel(());
    let program = match service.compiler.compile(language, "", never.clone()).await? {
        Compiled::Ready { program, .. } => program,
        Compiled::Failed { diagnostics, .. } => bail!("the empty program did not compile: {diagnostics}"),
    };
    let Some(args) = warm_args(&language.name, &program.entrypoint) else {
        bail!("no warm start for {} (entrypoint {:?})", language.name, program.entrypoint);
    };
    let id = format!("{SLOT_PREFIX}{}-{}", language.name, unique_suffix());
    let dir = service.state_dir.join("scratch").join(&id);
    let result = async {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        spec::chown_tree(&work)?;
        let stdin_path = dir.join("stdin");
        nix::unistd::mkfifo(&stdin_path, nix::sys::stat::Mode::from_bits_truncate(0o600)).context("creating the stdin FIFO")?;
        // Read-write: the shim's read end opens without a writer; the request closes it.
        let mut stdin = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&stdin_path)
            .context("opening the stdin FIFO")?;
        let limits = Limits { memory_bytes: pool.memory_limit, timeout: pool.shim_limit };
        let run = Run {
            id: id.clone(),
            runtime: WASMEDGE_RUNTIME,
            spec: spec::spec(&id, &args, &program.env, limits, &work, None),
            parent_snapshot: Some(&program.snapshot),
            stdin: Some(stdin_path),
            deadline: pool.shim_limit,
            output_bound: limits::MAX_OUTPUT,
            cancel: never.clone(),
        };
        let mut started = container::start(&service.cd, &service.metrics, &service.state_dir.join("runs"), &run).await?;
        // Ready once initialised (the first start of a runtime AOT-compiles it, for minutes).
        let ready = work.join(READY_FILE);
        while !ready.exists() {
            if pool.state().closing {
                return started.remove(&service.cd, &service.metrics).await;
            }
            if started.exited() {
                let ended = started.wait(&service.cd, WATCH_PERIOD, &mut never.clone()).await;
                let _ = started.remove(&service.cd, &service.metrics).await;
                let ended = ended?;
                bail!("the runtime exited ({}) before it was ready: {}", ended.exit_code, String::from_utf8_lossy(&ended.stderr.data).trim());
            }
            tokio::time::sleep(READY_POLL).await;
        }
        std::fs::remove_file(&ready).with_context(|| format!("removing {}", ready.display()))?;
        let bytes = container::memory_current(&id);
        let (job, mut jobs) = oneshot::channel();
        {
            let mut state = pool.state();
            if bytes > 0 {
                let mean = state.slot_bytes.entry(language.name.clone()).or_insert(bytes);
                *mean = (*mean * 7 + bytes) / 8;
            }
            *state.starting.entry(language.name.clone()).or_default() -= 1;
            *counted = false;
            if !state.closing {
                pool.offer(&mut state, &language.name, Slot { id: id.clone(), work, born: Instant::now(), job });
            }
        }
        // Until a request comes, the slot is dropped, or the task ends on its own.
        let job = loop {
            tokio::select! {
                job = &mut jobs => break job.ok(),
                _ = tokio::time::sleep(WATCH_PERIOD) => if started.exited() { break None },
            }
        };
        match job {
            Some(mut job) => {
                let writer = tokio::spawn(async move {
                    let _ = stdin.write_all(&job.input).await;
                    // Dropped here: the script's stdin ends.
                });
                let ended = started.wait(&service.cd, job.deadline, &mut job.cancel).await;
                writer.abort();
                let _ = job.reply.send(ended);
            }
            None => {
                if let Some(ready) = pool.state().ready.get_mut(&language.name) {
                    ready.retain(|s| s.id != id);
                    service.metrics.warm_ready.get_or_create(&Metrics::language(&language.name)).set(ready.len() as i64);
                }
            }
        }
        started.remove(&service.cd, &service.metrics).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    drop(program);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_a_json_line_then_the_script_then_its_stdin() {
        let env = [("WHO".to_string(), "x".to_string())].into();
        let bytes = request_bytes("/app/main.py", &["a".into()], &env, "print(1)\n", "in");
        let text = String::from_utf8(bytes).unwrap();
        let (header, rest) = text.split_once('\n').unwrap();
        let header: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(header, serde_json::json!({"script": "/app/main.py", "args": ["a"], "env": {"WHO": "x"}, "code": 9}));
        assert_eq!(rest, "print(1)\nin");
    }

    #[test]
    fn only_the_warm_languages_start_warm_and_each_is_told_its_ready_file() {
        let python = warm_args("python", &["/python/python.wasm".into(), "/app/main.py".into()]).unwrap();
        assert_eq!((python[1].as_str(), python[3].as_str()), ("-c", "/work/.ready"));
        let js = warm_args("javascript", &["/js/quickjs.wasm".into(), "/app/main.js".into()]).unwrap();
        assert_eq!(js, ["/js/quickjs.wasm", "--request-on-stdin", "/work/.ready"]);
        assert!(warm_args("rust", &["/app.wasm".into()]).is_none());
        assert!(WARM_LANGUAGES.iter().all(|l| warm_args(l, &["x".into()]).is_some()));
    }
}
