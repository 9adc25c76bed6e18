//! The ttrpc Task service: each RPC is a short operation on one [`Task`] and one of its
//! processes (the init, or an exec named by `exec_id`). A shim serves every container of a pod:
//! wasm containers run as the shim's own container processes, Linux ones (the pause container,
//! sidecars) through runc.
use super::{
    classify::{classify, Containerd},
    options,
    task::{Exec, IoPaths, Process, Runtime, Status, Task},
};
use crate::container::{cgroup, exec::ExecPlan, launch, runc::Runc, rootfs, spawn, stdio::Stdio, Launch};
use crate::image::detect::Kind;
use crate::trace::{self, Span, Trace};
use anyhow::{anyhow, Context};
use containerd_shim::{
    api,
    monitor::{Subject, Topic},
    protos::{
        events::task::{TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused, TaskResumed, TaskStart},
        protobuf::MessageDyn,
        topics,
        ttrpc::{self, Code},
    },
    publisher::RemotePublisher,
    util::{convert_to_any, timestamp},
    ExitSignal, TtrpcContext, TtrpcResult,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an exit nobody claimed is kept: a process can exit before the shim has recorded its
/// pid (a short exec, a container killed right after runc created it).
const UNCLAIMED_EXIT_TTL: Duration = Duration::from_secs(60);

/// The exit status of an exec that could not be started: 125, as for a container that could
/// not be set up.
const EXEC_START_FAILED: u32 = 125;

#[derive(Default)]
struct Registry {
    tasks: HashMap<String, Arc<Task>>,
    unclaimed: Vec<(i32, u32, Instant)>,
}

impl Registry {
    /// The live process with this pid: (its task, its exec id or `None` for the init).
    fn find(&self, pid: i32) -> Option<(Arc<Task>, Option<String>)> {
        let live = |p: &Process| {
            let state = p.state();
            state.pid == Some(pid) && state.exit.is_none()
        };
        self.tasks.values().find_map(|task| {
            if live(&task.init) {
                return Some((task.clone(), None));
            }
            let execs = task.execs.lock().unwrap();
            execs.values().find(|e| live(&e.process)).map(|e| (task.clone(), Some(e.id.clone())))
        })
    }

    /// Takes the exit of `pid` if one arrived since `since`, before the pid was recorded.
    fn claim(&mut self, pid: i32, since: Instant) -> Option<u32> {
        let at = self.unclaimed.iter().position(|(p, _, t)| *p == pid && *t >= since)?;
        Some(self.unclaimed.remove(at).1)
    }
}

#[derive(Clone)]
pub struct Service {
    namespace: String,
    /// containerd's gRPC address (the shim's `-address`), to look images up.
    address: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    registry: Arc<Mutex<Registry>>,
}

fn rpc_error(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.to_string()))
}

fn internal(e: anyhow::Error) -> ttrpc::Error {
    rpc_error(Code::INTERNAL, format!("{e:#}"))
}

impl Service {
    pub fn new(namespace: &str, address: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Service {
        let service = Service {
            namespace: namespace.to_string(),
            address: address.to_string(),
            publisher: Arc::new(publisher),
            exit,
            registry: Arc::default(),
        };
        let reaper = service.clone();
        std::thread::spawn(move || reaper.handle_exits());
        service
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap()
    }

    /// The containerd-shim crate reaps every child (and every orphan: the shim is a subreaper,
    /// so runc's containers end up here too); their exits arrive here.
    fn handle_exits(&self) {
        let exits = containerd_shim::monitor::monitor_subscribe(Topic::All).expect("subscribing to exits");
        for event in exits.rx.iter() {
            let Subject::Pid(pid) = event.subject else { continue };
            let status = event.exit_code as u32;
            let mut registry = self.registry();
            match registry.find(pid) {
                Some((task, exec_id)) => {
                    drop(registry);
                    self.exited(&task, exec_id.as_deref(), pid, status);
                }
                None => {
                    registry.unclaimed.retain(|(_, _, at)| at.elapsed() < UNCLAIMED_EXIT_TTL);
                    registry.unclaimed.push((pid, status, Instant::now()));
                }
            }
        }
    }

    /// Records an exit and publishes TaskExit, unless the process is between its start and its
    /// TaskStart: then the exit waits in `held` for [`Self::release`].
    fn exited(&self, task: &Task, exec_id: Option<&str>, pid: i32, status: u32) {
        let process = match exec_id {
            None => &task.init,
            Some(id) => match task.exec(id) {
                Some(exec) => return self.exited_process(task, Some(id), &exec.process, pid, status),
                None => return,
            },
        };
        self.exited_process(task, None, process, pid, status)
    }

    fn exited_process(&self, task: &Task, exec_id: Option<&str>, process: &Process, pid: i32, status: u32) {
        {
            let mut state = process.state();
            if state.hold_exit {
                state.held = Some(status);
                return;
            }
        }
        let at = timestamp().unwrap_or_default();
        if process.set_exit(status, at.clone()) {
            let name = exec_id.map_or(task.id.clone(), |e| format!("{}/{e}", task.id));
            log::info!("{name}: exited with status {status}");
            self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(TaskExit {
                container_id: task.id.clone(),
                id: exec_id.unwrap_or(&task.id).to_string(),
                pid: pid as u32,
                exit_status: status,
                exited_at: Some(at).into(),
                ..Default::default()
            }));
        }
    }

    /// Ends the hold on a process's exit (its start event is out) and delivers a held exit.
    fn release(&self, task: &Task, exec_id: Option<&str>, process: &Process) {
        let (pid, held) = {
            let mut state = process.state();
            state.hold_exit = false;
            (state.pid.unwrap_or(0), state.held.take())
        };
        if let Some(status) = held {
            self.exited_process(task, exec_id, process, pid, status);
        }
    }

    /// Records the pid of a process that just started, with the exit it may already have had.
    fn record_pid(&self, process: &Process, pid: i32, since: Instant) {
        let mut registry = self.registry();
        let early = registry.claim(pid, since);
        let mut state = process.state();
        state.pid = Some(pid);
        if early.is_some() {
            state.held = early;
        }
    }

    /// The container's spans are complete at its delete: the root span is logged and exported.
    fn end_trace(&self, task: &Task, status: u32, exited: Option<SystemTime>) {
        let attrs = [("container.id", task.id.clone()), ("containerd.namespace", self.namespace.clone()), ("exit.status", status.to_string())];
        let (root, spans) = task.trace.finish(&task.id, exited, attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        log::info!("{}: span {root}", task.id);
        trace::export(&root, &spans);
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self.publisher.publish(Default::default(), topic, &self.namespace, event) {
            log::warn!("publishing {topic}: {e}");
        }
    }

    fn task(&self, id: &str) -> TtrpcResult<Arc<Task>> {
        self.registry().tasks.get(id).cloned().ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("container {id} not found")))
    }

    fn exec_of(task: &Task, exec_id: &str) -> TtrpcResult<Arc<Exec>> {
        task.exec(exec_id).ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("exec {exec_id} of container {} not found", task.id)))
    }

    /// Mounts the rootfs, classifies the container and prepares what runs it: for wasm its
    /// cgroup and stdio (the process starts at Task.Start), for Linux `runc create`.
    fn prepare(&self, req: &api::CreateTaskRequest, trace: Trace) -> anyhow::Result<Task> {
        let bundle = Path::new(&req.bundle);
        let spec: oci_spec::runtime::Spec = {
            let path = bundle.join("config.json");
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            // serde_json says what is wrong and where; oci-spec's own loader only "serde failed".
            serde_json::from_slice(&bytes).context("malformed config.json")?
        };
        let options = options::runtime_options(req.options.as_ref())?;
        let launch = Launch::from_spec(&req.id, bundle, &spec, &options.engine, options.systemd_cgroup)?;
        if req.terminal {
            return Err(anyhow!("a terminal (-t) is not supported by the wasmedge shim"));
        }
        let mounted = rootfs::mount(&req.rootfs, &launch.rootfs)?;
        let undo = |e: anyhow::Error| {
            if mounted {
                let _ = rootfs::unmount(&launch.rootfs);
            }
            e
        };
        let io = IoPaths { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal };
        let stdio = Stdio::open(&req.stdin, &req.stdout, &req.stderr).map_err(undo)?;
        match classify(&spec, &launch, &Containerd { address: &self.address, namespace: &self.namespace }) {
            Kind::Wasm(why) => {
                log::info!("{}: wasm container: {why}", req.id);
                launch::refuse_unsupported(&spec).map_err(undo)?;
                if launch.systemd_cgroup && cgroup::systemd_manages_cgroups() {
                    log::warn!("{}: systemd runs this node, but the shim makes cgroup {} itself: no transient unit over D-Bus", req.id, launch.cgroup.as_deref().unwrap_or_default());
                }
                if let Some(path) = &launch.cgroup {
                    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
                    cgroup::create(path, resources).map_err(undo)?;
                    // The container process joins it soon: the wait the kernel makes that
                    // move pay starts now.
                    cgroup::warm_up();
                }
                trace.add(&req.id, Span::since("prepare", trace.created()).with("kind", "wasm"));
                let since = Instant::now();
                let spawned_at = SystemTime::now();
                let (pid, plan) = spawn::create(&launch, &stdio, &trace).map_err(|e| {
                    if let Some(path) = &launch.cgroup {
                        let _ = cgroup::remove(path);
                    }
                    undo(e)
                })?;
                drop(stdio); // the container process holds it now
                trace.add(&req.id, Span::since("spawn", spawned_at));
                let init = Process::new(io, None);
                init.state().hold_exit = true; // until TaskCreate is out
                self.record_pid(&init, pid.as_raw(), since);
                Ok(Task::new(&req.id, bundle, launch, Runtime::Wasm(Mutex::new(Some(plan))), init, mounted, trace))
            }
            Kind::Linux => {
                log::info!("{}: Linux container ({} is not wasm): running it with runc", req.id, launch.entrypoint.display());
                let runc = Runc::new(&req.id, bundle, launch.systemd_cgroup);
                trace.add(&req.id, Span::since("prepare", trace.created()).with("kind", "linux"));
                let since = Instant::now();
                let spawned_at = SystemTime::now();
                let pid = runc.create(&stdio).map_err(|e| {
                    let _ = runc.delete();
                    undo(e)
                })?;
                drop(stdio); // runc's container holds it now
                trace.add(&req.id, Span::since("spawn", spawned_at).with("runtime", "runc"));
                let init = Process::new(io, None);
                init.state().hold_exit = true; // until TaskCreate is out
                self.record_pid(&init, pid, since);
                Ok(Task::new(&req.id, bundle, launch, Runtime::Linux(runc), init, mounted, trace))
            }
        }
    }

    fn start_init(&self, task: &Arc<Task>) -> TtrpcResult<i32> {
        let start = SystemTime::now();
        {
            let mut state = task.init.state();
            if state.status() != Status::Created || state.hold_exit {
                return Err(rpc_error(Code::FAILED_PRECONDITION, format!("container {} was already started", task.id)));
            }
            state.hold_exit = true;
        }
        let started = match &task.runtime {
            Runtime::Wasm(plan) => match plan.lock().unwrap().take() {
                Some(plan) => plan.send(&task.launch),
                None => Err(anyhow!("container {} has no process to start", task.id)),
            },
            Runtime::Linux(runc) => runc.start(),
        };
        let pid = {
            let mut state = task.init.state();
            if let Err(e) = started {
                state.hold_exit = false;
                return Err(internal(e));
            }
            state.started = true;
            state.pid.unwrap_or(0)
        };
        log::info!("{}: started as pid {pid}", task.id);
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(TaskStart { container_id: task.id.clone(), pid: pid as u32, ..Default::default() }));
        task.trace.add(&task.id, Span::since("start", start));
        self.release(task, None, &task.init);
        Ok(pid)
    }

    fn start_exec(&self, task: &Arc<Task>, exec: &Arc<Exec>) -> TtrpcResult<i32> {
        let init_pid = task
            .init
            .running_pid()
            .ok_or_else(|| rpc_error(Code::FAILED_PRECONDITION, format!("container {} is not running", task.id)))?;
        {
            let mut state = exec.process.state();
            if state.status() != Status::Created || state.hold_exit {
                return Err(rpc_error(Code::FAILED_PRECONDITION, format!("exec {} was already started", exec.id)));
            }
            state.hold_exit = true;
        }
        let since = Instant::now();
        // The process holds its stdio once spawned: the shim's copies go at the end of this.
        let spawned = exec.process.stdio.lock().unwrap().take().context("stdio of a created exec").and_then(|stdio| match &task.runtime {
            Runtime::Wasm(_) => serde_json::from_slice::<oci_spec::runtime::Process>(&exec.spec)
                .context("malformed exec process")
                .and_then(|process| ExecPlan::new(&task.launch, &exec.id, init_pid, &process))
                .and_then(|plan| crate::container::exec::spawn(&plan, &stdio, &task.trace))
                .map(|pid| pid.as_raw()),
            Runtime::Linux(runc) => runc.exec(&exec.id, &exec.spec, &stdio),
        });
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                // It never ran, but it still ends: containerd waits on every exec it makes (CRI's
                // ExecSync before the start), and a Wait left pending keeps the shim from exiting.
                exec.process.state().hold_exit = false;
                exec.process.set_exit(EXEC_START_FAILED, timestamp().unwrap_or_default());
                return Err(internal(e));
            }
        };
        self.record_pid(&exec.process, pid, since);
        exec.process.state().started = true;
        log::info!("{}/{}: exec started as pid {pid}", task.id, exec.id);
        self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(TaskExecStarted {
            container_id: task.id.clone(),
            exec_id: exec.id.clone(),
            pid: pid as u32,
            ..Default::default()
        }));
        self.release(task, Some(&exec.id), &exec.process);
        Ok(pid)
    }

    /// Sends `signal` to a process; one that never started ends as if the signal killed it.
    fn signal(&self, task: &Task, exec_id: Option<&str>, process: &Process, signal: u32, all: bool) -> TtrpcResult<()> {
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| rpc_error(Code::INVALID_ARGUMENT, format!("invalid signal {signal}")))?;
        let (status, pid) = {
            let state = process.state();
            (state.status(), state.pid)
        };
        match (status, pid, &task.runtime) {
            (Status::Stopped, _, _) => Err(rpc_error(Code::NOT_FOUND, format!("container {}: process already finished", task.id))),
            // A created wasm process waits for its plan and runs nothing yet: it ends as if the
            // signal had killed it (it may not have its handlers yet, so SIGKILL does it).
            (Status::Created, Some(pid), Runtime::Wasm(_)) if exec_id.is_none() => {
                self.exited_process(task, None, process, pid, 128 + signal);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                Ok(())
            }
            (_, Some(_), Runtime::Linux(runc)) if exec_id.is_none() && all => runc.kill(signal, true).map_err(internal),
            (_, Some(pid), _) => {
                if all && exec_id.is_none() {
                    for exec in task.execs.lock().unwrap().values() {
                        if let Some(pid) = exec.process.running_pid() {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                        }
                    }
                }
                match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                    Err(e) => Err(rpc_error(Code::INTERNAL, format!("signalling {}: {e}", task.id))),
                }
            }
            (_, None, _) => {
                self.exited_process(task, exec_id, process, 0, 128 + signal);
                Ok(())
            }
        }
    }
}

/// What containerd-shim's cgroup v1 collection leaves out and `docker stats` shows: the memory
/// limit and peak, and CPU time (v1 keeps it in cpuacct, not in cpu.stat).
fn complete_v1_metrics(cg: &cgroups_rs::fs::Cgroup, metrics: &mut containerd_shim::protos::cgroups::metrics::Metrics) {
    use cgroups_rs::fs::{cpuacct::CpuAcctController, memory::MemController};
    if let Some(mem) = cg.controller_of::<MemController>() {
        let stat = mem.memory_stat();
        // Unlimited is a huge number in v1: the node's memory is the real bound.
        let node = node_memory().unwrap_or(u64::MAX);
        let limit = u64::try_from(stat.limit_in_bytes).unwrap_or(u64::MAX).min(node);
        let usage = metrics.mut_memory().mut_usage();
        usage.set_limit(limit);
        usage.set_max(stat.max_usage_in_bytes);
        usage.set_failcnt(stat.fail_cnt);
    }
    if let Some(acct) = cg.controller_of::<CpuAcctController>() {
        let acct = acct.cpuacct();
        let cpu = metrics.mut_cpu().mut_usage();
        if cpu.total() == 0 {
            cpu.set_total(acct.usage);
            cpu.set_user(acct.usage_user);
            cpu.set_kernel(acct.usage_sys);
            cpu.set_per_cpu(acct.usage_percpu.split_whitespace().filter_map(|v| v.parse().ok()).collect());
        }
    }
}

/// MemTotal of /proc/meminfo, in bytes.
fn node_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The cgroup of a running container's process.
fn cgroup_of(task: &Task) -> TtrpcResult<cgroups_rs::fs::Cgroup> {
    let pid = task.init.running_pid().ok_or_else(|| rpc_error(Code::FAILED_PRECONDITION, format!("container {} is not running", task.id)))?;
    containerd_shim::cgroup::get_cgroup(pid as u32).map_err(|e| rpc_error(Code::INTERNAL, e))
}

fn freezer(task: &Task) -> TtrpcResult<cgroups_rs::fs::freezer::FreezerController> {
    let cg = cgroup_of(task)?;
    cg.controller_of::<cgroups_rs::fs::freezer::FreezerController>()
        .cloned()
        .ok_or_else(|| rpc_error(Code::FAILED_PRECONDITION, format!("container {} has no freezer cgroup", task.id)))
}

fn status_of(status: Status) -> api::Status {
    match status {
        Status::Created => api::Status::CREATED,
        Status::Running => api::Status::RUNNING,
        Status::Stopped => api::Status::STOPPED,
    }
}

impl containerd_shim::Task for Service {
    fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        if self.registry().tasks.contains_key(&req.id) {
            return Err(rpc_error(Code::ALREADY_EXISTS, format!("container {} already exists", req.id)));
        }
        let trace = Trace::new(SystemTime::now());
        let task = Arc::new(self.prepare(&req, trace.clone()).map_err(|e| {
            log::error!("{}: create failed: {e:#}", req.id);
            rpc_error(Code::FAILED_PRECONDITION, format!("{e:#}"))
        })?);
        self.registry().tasks.insert(req.id.clone(), task.clone());
        let pid = task.init.state().pid.unwrap_or(0) as u32;
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal, ..Default::default() }).into(),
            pid,
            ..Default::default()
        }));
        trace.add(&req.id, Span::since("create", trace.created()));
        self.release(&task, None, &task.init);
        Ok(api::CreateTaskResponse { pid, ..Default::default() })
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let task = self.task(&req.id)?;
        let result = if req.exec_id.is_empty() {
            self.start_init(&task)
        } else {
            let exec = Self::exec_of(&task, &req.exec_id)?;
            self.start_exec(&task, &exec)
        };
        let pid = result.inspect_err(|e| log::error!("{}: start {} failed: {e:?}", req.id, req.exec_id))?;
        Ok(api::StartResponse { pid: pid as u32, ..Default::default() })
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let task = self.task(&req.id)?;
        let exec = if req.exec_id.is_empty() { None } else { Some(Self::exec_of(&task, &req.exec_id)?) };
        let process = exec.as_ref().map_or(&task.init, |e| &e.process);
        let state = process.state();
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() { task.id.clone() } else { req.exec_id.clone() },
            exec_id: req.exec_id.clone(),
            bundle: task.bundle.to_string_lossy().into_owned(),
            pid: state.pid.unwrap_or(0) as u32,
            status: if exec.is_none() && state.status() == Status::Running && task.paused.load(Ordering::SeqCst) {
                api::Status::PAUSED
            } else {
                status_of(state.status())
            }
            .into(),
            stdin: process.io.stdin.clone(),
            stdout: process.io.stdout.clone(),
            stderr: process.io.stderr.clone(),
            terminal: process.io.terminal,
            exit_status: state.exit.as_ref().map_or(0, |e| e.status),
            exited_at: state.exit.as_ref().map(|e| e.at.clone()).into(),
            ..Default::default()
        })
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let task = self.task(&req.id)?;
        let exit = if req.exec_id.is_empty() { task.init.wait() } else { Self::exec_of(&task, &req.exec_id)?.process.wait() };
        Ok(api::WaitResponse { exit_status: exit.status, exited_at: Some(exit.at).into(), ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let task = self.task(&req.id)?;
        if req.exec_id.is_empty() {
            self.signal(&task, None, &task.init, req.signal, req.all)?;
        } else {
            let exec = Self::exec_of(&task, &req.exec_id)?;
            self.signal(&task, Some(&exec.id), &exec.process, req.signal, false)?;
        }
        Ok(api::Empty::default())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let task = self.task(&req.id)?;
        if req.terminal {
            return Err(rpc_error(Code::INVALID_ARGUMENT, "a terminal (-t) is not supported by the wasmedge shim"));
        }
        if task.init.running_pid().is_none() {
            return Err(rpc_error(Code::FAILED_PRECONDITION, format!("container {} is not running", req.id)));
        }
        let spec = req.spec.as_ref().map(|any| any.value.clone()).unwrap_or_default();
        serde_json::from_slice::<oci_spec::runtime::Process>(&spec)
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("malformed exec process: {e}")))?;
        if task.exec(&req.exec_id).is_some() {
            return Err(rpc_error(Code::ALREADY_EXISTS, format!("exec {} of container {} already exists", req.exec_id, req.id)));
        }
        let stdio = Stdio::open(&req.stdin, &req.stdout, &req.stderr).map_err(internal)?;
        let mut execs = task.execs.lock().unwrap();
        if execs.contains_key(&req.exec_id) {
            return Err(rpc_error(Code::ALREADY_EXISTS, format!("exec {} of container {} already exists", req.exec_id, req.id)));
        }
        let io = IoPaths { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal };
        let exec = Exec { id: req.exec_id.clone(), process: Process::new(io, Some(stdio)), spec };
        execs.insert(req.exec_id.clone(), Arc::new(exec));
        drop(execs);
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        }));
        Ok(api::Empty::default())
    }

    /// No process of this shim has a terminal.
    fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        self.task(&req.id)?;
        Ok(api::Empty::default())
    }

    /// The process holds its own end of stdin; containerd closing its end is the EOF.
    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        self.task(&req.id)?;
        Ok(api::Empty::default())
    }

    fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        let task = self.task(&req.id)?;
        if !req.exec_id.is_empty() {
            let exec = Self::exec_of(&task, &req.exec_id)?;
            let state = exec.process.state();
            if state.status() == Status::Running {
                return Err(rpc_error(Code::FAILED_PRECONDITION, format!("exec {} is still running", req.exec_id)));
            }
            let (status, at) = state.exit.as_ref().map_or((0, timestamp().unwrap_or_default()), |e| (e.status, e.at.clone()));
            let pid = state.pid.unwrap_or(0) as u32;
            drop(state);
            task.execs.lock().unwrap().remove(&req.exec_id);
            return Ok(api::DeleteResponse { pid, exit_status: status, exited_at: Some(at).into(), ..Default::default() });
        }
        let (status, pid) = {
            let state = task.init.state();
            (state.status(), state.pid)
        };
        match (status, pid) {
            (Status::Running, _) => {
                return Err(rpc_error(Code::FAILED_PRECONDITION, format!("container {} is still running", req.id)))
            }
            // Created and never started: its process waits; it goes with the container.
            (Status::Created, Some(pid)) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            _ => {}
        }
        let start = SystemTime::now();
        task.cleanup();
        self.registry().tasks.remove(&req.id);
        let state = task.init.state();
        let (status, at) = state.exit.as_ref().map_or((0, timestamp().unwrap_or_default()), |e| (e.status, e.at.clone()));
        let pid = state.pid.unwrap_or(0) as u32;
        let exited = state.exit.as_ref().map(|e| UNIX_EPOCH + Duration::new(e.at.seconds as u64, e.at.nanos as u32));
        drop(state);
        task.trace.add(&req.id, Span::since("delete", start));
        self.end_trace(&task, status, exited);
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid,
            exit_status: status,
            exited_at: Some(at.clone()).into(),
            ..Default::default()
        }));
        Ok(api::DeleteResponse { pid, exit_status: status, exited_at: Some(at).into(), ..Default::default() })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let task = self.task(&req.id)?;
        let mut pids: Vec<i32> = match &task.runtime {
            Runtime::Linux(runc) if task.init.running_pid().is_some() => runc.ps().map_err(internal)?,
            _ => task.init.running_pid().into_iter().collect(),
        };
        for exec in task.execs.lock().unwrap().values() {
            pids.extend(exec.process.running_pid().filter(|p| !pids.contains(p)));
        }
        let processes = pids
            .into_iter()
            .map(|pid| containerd_shim::protos::api::ProcessInfo { pid: pid as u32, ..Default::default() })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let task = self.task(&req.id)?;
        let pid = task.init.running_pid().ok_or_else(|| rpc_error(Code::FAILED_PRECONDITION, format!("container {} is not running", req.id)))?;
        let cg = containerd_shim::cgroup::get_cgroup(pid as u32).map_err(|e| rpc_error(Code::INTERNAL, e))?;
        let stats = if cg.v2() {
            convert_to_any(Box::new(containerd_shim::cgroup::collect_metrics_v2(&cg).map_err(|e| rpc_error(Code::INTERNAL, e))?))
        } else {
            let mut metrics = containerd_shim::cgroup::collect_metrics(&cg).map_err(|e| rpc_error(Code::INTERNAL, e))?;
            complete_v1_metrics(&cg, &mut metrics);
            convert_to_any(Box::new(metrics))
        };
        Ok(api::StatsResponse { stats: Some(stats.map_err(|e| rpc_error(Code::INTERNAL, e))?).into(), ..Default::default() })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let task = self.task(&req.id)?;
        freezer(&task)?.freeze().map_err(|e| rpc_error(Code::INTERNAL, format!("freezing {}: {e}", req.id)))?;
        task.paused.store(true, Ordering::SeqCst);
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(TaskPaused { container_id: req.id, ..Default::default() }));
        Ok(api::Empty::default())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        let task = self.task(&req.id)?;
        freezer(&task)?.thaw().map_err(|e| rpc_error(Code::INTERNAL, format!("thawing {}: {e}", req.id)))?;
        task.paused.store(false, Ordering::SeqCst);
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(TaskResumed { container_id: req.id, ..Default::default() }));
        Ok(api::Empty::default())
    }

    /// New cgroup limits for a running container (`ctr task update`, `docker update`, CRI
    /// UpdateContainerResources): containerd sends the OCI `LinuxResources` as JSON.
    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let task = self.task(&req.id)?;
        let any = req.resources.as_ref().ok_or_else(|| rpc_error(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("malformed resources for {}: {e}", req.id)))?;
        let cg = cgroup_of(&task)?;
        containerd_shim::cgroup::update_resources(&cg, &resources).map_err(|e| rpc_error(Code::INTERNAL, format!("updating {}: {e}", req.id)))?;
        log::info!("{}: resources updated", req.id);
        Ok(api::Empty::default())
    }

    fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.registry().tasks.get(&req.id).and_then(|t| t.init.state().pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    /// A pod's shim serves all its containers: it exits once the last one is deleted.
    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.registry().tasks.is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
