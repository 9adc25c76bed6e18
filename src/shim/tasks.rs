//! The task state machine: the shim's tasks and the transitions of their processes (create,
//! start, exec, kill, exit, delete). Its side effects go through [`Host`] and each task's
//! [`Runtime`](super::runtime::Runtime), so it is unit-tested with fakes of both.
use super::host::Host;
use super::lock::lock;
use super::task::{Exec, Process, State, Status, Task};
use crate::launch::stdio::Stdio;
use crate::trace::{self, Span};
use anyhow::Context;
use containerd_shim::{
    monitor::{Subject, Topic},
    protos::{
        events::task::{TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskStart},
        protobuf::well_known_types::timestamp::Timestamp,
        topics,
        ttrpc::{self, Code},
    },
    util::timestamp,
    TtrpcResult,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an exit nobody claimed is kept: a process can exit before the shim has recorded its
/// pid (a short exec, a container killed right after runc created it).
const UNCLAIMED_EXIT_TTL: Duration = Duration::from_secs(60);

/// The exit status of an exec that could not be started: 125, as for a container that could
/// not be set up.
const EXEC_START_FAILED: u32 = 125;

pub fn rpc_error(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.to_string()))
}

pub fn internal(e: anyhow::Error) -> ttrpc::Error {
    rpc_error(Code::INTERNAL, format!("{e:#}"))
}

/// How a deleted process ended.
pub struct Deleted {
    pub pid: u32,
    pub status: u32,
    pub at: Timestamp,
}

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
            let execs = lock(&task.execs);
            execs.values().find(|e| live(&e.process)).map(|e| (task.clone(), Some(e.id.clone())))
        })
    }

    /// Takes the exit of `pid` if one arrived since `since`, before the pid was recorded.
    fn claim(&mut self, pid: i32, since: Instant) -> Option<u32> {
        let at = self.unclaimed.iter().position(|(p, _, t)| *p == pid && *t >= since)?;
        Some(self.unclaimed.remove(at).1)
    }
}

pub struct Tasks {
    namespace: String,
    host: Arc<dyn Host>,
    registry: Mutex<Registry>,
}

impl Tasks {
    pub fn new(namespace: &str, host: Arc<dyn Host>) -> Tasks {
        Tasks { namespace: namespace.to_string(), host, registry: Mutex::default() }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// The containerd-shim crate reaps every child (and every orphan: the shim is a subreaper,
    /// so runc's containers end up here too); their exits arrive here. A panic while handling
    /// one exit is logged and the next is handled: a dead loop would leave every Wait hanging.
    pub fn handle_exits(&self) {
        let exits = match containerd_shim::monitor::monitor_subscribe(Topic::All) {
            Ok(exits) => exits,
            Err(e) => {
                log::error!("subscribing to exits: {e}: no exit will be published");
                return;
            }
        };
        for event in exits.rx.iter() {
            let Subject::Pid(pid) = event.subject else { continue };
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.on_exit(pid, event.exit_code as u32)));
            if handled.is_err() {
                log::error!("handling the exit of pid {pid} panicked");
            }
        }
    }

    /// One reaped child: a process of a task, or an exit kept until its pid is recorded.
    pub fn on_exit(&self, pid: i32, status: u32) {
        let mut registry = self.registry();
        match registry.find(pid) {
            Some((task, exec_id)) => {
                drop(registry);
                match exec_id {
                    None => self.exited(&task, None, &task.init, pid, status),
                    Some(id) => {
                        if let Some(exec) = task.exec(&id) {
                            self.exited(&task, Some(&id), &exec.process, pid, status);
                        }
                    }
                }
            }
            None => {
                registry.unclaimed.retain(|(_, _, at)| at.elapsed() < UNCLAIMED_EXIT_TTL);
                registry.unclaimed.push((pid, status, Instant::now()));
            }
        }
    }

    /// Records an exit and publishes TaskExit, unless the process is between its start and its
    /// TaskStart: then the exit waits in `held` for [`Self::release`].
    fn exited(&self, task: &Task, exec_id: Option<&str>, process: &Process, pid: i32, status: u32) {
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
            self.host.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(TaskExit {
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
            self.exited(task, exec_id, process, pid, status);
        }
    }

    /// Records the pid of a process spawned since `since`, with the exit it may already have
    /// had, and a pidfd on it.
    pub fn record_pid(&self, process: &Process, pid: i32, since: Instant) {
        let pidfd = self.host.pidfd(pid);
        let mut registry = self.registry();
        let early = registry.claim(pid, since);
        let mut state = process.state();
        state.pid = Some(pid);
        // After an early exit the pid may name another process already.
        state.pidfd = pidfd.filter(|_| early.is_none());
        if early.is_some() {
            state.held = early;
        }
    }

    pub fn exists(&self, id: &str) -> bool {
        self.registry().tasks.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.registry().tasks.is_empty()
    }

    pub fn task(&self, id: &str) -> TtrpcResult<Arc<Task>> {
        self.registry().tasks.get(id).cloned().ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("container {id} not found")))
    }

    pub fn exec_of(task: &Task, exec_id: &str) -> TtrpcResult<Arc<Exec>> {
        task.exec(exec_id).ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("exec {exec_id} of container {} not found", task.id)))
    }

    /// A created task (its init holding its exit): registered, announced by TaskCreate (given
    /// without its pid); returns the init's pid.
    pub fn created(&self, task: Arc<Task>, mut event: TaskCreate) -> u32 {
        self.registry().tasks.insert(task.id.clone(), task.clone());
        event.pid = task.init.state().pid.unwrap_or(0) as u32;
        let pid = event.pid;
        self.host.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event));
        task.trace.add(&task.id, Span::since("create", task.trace.created()));
        self.release(&task, None, &task.init);
        pid
    }

    pub fn start_init(&self, task: &Task) -> TtrpcResult<i32> {
        let start = SystemTime::now();
        {
            let mut state = task.init.state();
            if state.status() != Status::Created || state.hold_exit {
                return Err(rpc_error(Code::FAILED_PRECONDITION, format!("container {} was already started", task.id)));
            }
            state.hold_exit = true;
        }
        let started = task.runtime.start(&task.launch);
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
        self.host.publish(topics::TASK_START_EVENT_TOPIC, Box::new(TaskStart { container_id: task.id.clone(), pid: pid as u32, ..Default::default() }));
        task.trace.add(&task.id, Span::since("start", start));
        self.release(task, None, &task.init);
        Ok(pid)
    }

    /// Adds a created exec, its stdio open, and announces it.
    pub fn add_exec(&self, task: &Task, exec: Exec) -> TtrpcResult<()> {
        let mut execs = lock(&task.execs);
        if execs.contains_key(&exec.id) {
            return Err(rpc_error(Code::ALREADY_EXISTS, format!("exec {} of container {} already exists", exec.id, task.id)));
        }
        let exec_id = exec.id.clone();
        execs.insert(exec_id.clone(), Arc::new(exec));
        drop(execs);
        self.host.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(TaskExecAdded {
            container_id: task.id.clone(),
            exec_id,
            ..Default::default()
        }));
        Ok(())
    }

    pub fn start_exec(&self, task: &Task, exec: &Exec) -> TtrpcResult<i32> {
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
        let spawned = lock(&exec.process.stdio)
            .take()
            .context("stdio of a created exec")
            .and_then(|stdio: Stdio| task.runtime.exec(&task.launch, &task.trace, &exec.id, &exec.spec, init_pid, &stdio));
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
        self.host.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(TaskExecStarted {
            container_id: task.id.clone(),
            exec_id: exec.id.clone(),
            pid: pid as u32,
            ..Default::default()
        }));
        self.release(task, Some(&exec.id), &exec.process);
        Ok(pid)
    }

    /// Sends `signal` to the init (`exec_id` `None`; with `all`, to the execs too) or to an
    /// exec; one that never started ends as if the signal killed it.
    pub fn kill(&self, task: &Task, exec_id: Option<&str>, signal: u32, all: bool) -> TtrpcResult<()> {
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| rpc_error(Code::INVALID_ARGUMENT, format!("invalid signal {signal}")))?;
        let exec = exec_id.map(|id| Self::exec_of(task, id)).transpose()?;
        let process = exec.as_ref().map_or(&task.init, |e| &e.process);
        let all = all && exec.is_none();
        let (status, pid) = {
            let state = process.state();
            (state.status(), state.pid)
        };
        match (status, pid) {
            (Status::Stopped, _) => Err(rpc_error(Code::NOT_FOUND, format!("container {}: process already finished", task.id))),
            // A created init that runs nothing yet ends as if the signal had killed it (it may
            // not have its handlers yet, so SIGKILL does it).
            (Status::Created, Some(pid)) if exec.is_none() && task.runtime.idle_until_started() => {
                self.exited(task, None, process, pid, 128 + signal);
                let _ = self.signal(process, nix::sys::signal::Signal::SIGKILL);
                Ok(())
            }
            (_, Some(_)) => {
                if all {
                    if let Some(killed) = task.runtime.kill_all(signal) {
                        return killed.map_err(internal);
                    }
                    for exec in lock(&task.execs).values() {
                        if exec.process.running_pid().is_some() {
                            let _ = self.signal(&exec.process, sig);
                        }
                    }
                }
                match self.signal(process, sig) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                    Err(e) => Err(rpc_error(Code::INTERNAL, format!("signalling {}: {e}", task.id))),
                }
            }
            (_, None) => {
                self.exited(task, exec_id, process, 0, 128 + signal);
                Ok(())
            }
        }
    }

    fn signal(&self, process: &Process, signal: nix::sys::signal::Signal) -> nix::Result<()> {
        let state = process.state();
        let pid = state.pid.ok_or(nix::errno::Errno::ESRCH)?;
        self.host.signal(pid, state.pidfd.as_ref(), signal)
    }

    pub fn delete_exec(&self, task: &Task, exec_id: &str) -> TtrpcResult<Deleted> {
        let exec = Self::exec_of(task, exec_id)?;
        let deleted = {
            let state = exec.process.state();
            if state.status() == Status::Running {
                return Err(rpc_error(Code::FAILED_PRECONDITION, format!("exec {exec_id} is still running")));
            }
            ended(&state)
        };
        lock(&task.execs).remove(exec_id);
        Ok(deleted)
    }

    /// Deletes a container that is not running: one created and never started goes with its
    /// waiting process.
    pub fn delete(&self, task: &Task) -> TtrpcResult<Deleted> {
        let status = task.init.state().status();
        match status {
            Status::Running => return Err(rpc_error(Code::FAILED_PRECONDITION, format!("container {} is still running", task.id))),
            Status::Created => {
                let _ = self.signal(&task.init, nix::sys::signal::Signal::SIGKILL);
            }
            Status::Stopped => {}
        }
        let start = SystemTime::now();
        task.cleanup();
        self.registry().tasks.remove(&task.id);
        let (deleted, exited) = {
            let state = task.init.state();
            let exited = state.exit.as_ref().map(|e| UNIX_EPOCH + Duration::new(e.at.seconds as u64, e.at.nanos as u32));
            (ended(&state), exited)
        };
        task.trace.add(&task.id, Span::since("delete", start));
        self.end_trace(task, deleted.status, exited);
        self.host.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(TaskDelete {
            container_id: task.id.clone(),
            id: task.id.clone(),
            pid: deleted.pid,
            exit_status: deleted.status,
            exited_at: Some(deleted.at.clone()).into(),
            ..Default::default()
        }));
        Ok(deleted)
    }

    /// The container's spans are complete at its delete: the root span is logged and exported.
    fn end_trace(&self, task: &Task, status: u32, exited: Option<SystemTime>) {
        let attrs = [("container.id", task.id.clone()), ("containerd.namespace", self.namespace.clone()), ("exit.status", status.to_string())];
        let (root, spans) = task.trace.finish(&task.id, exited, attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        log::info!("{}: span {root}", task.id);
        trace::export(&root, &spans, task.trace.parent().as_deref());
    }
}

/// A process's pid and exit, as Delete reports them (status 0, now, for one that never ran).
fn ended(state: &State) -> Deleted {
    let (status, at) = state.exit.as_ref().map_or((0, timestamp().unwrap_or_default()), |e| (e.status, e.at.clone()));
    Deleted { pid: state.pid.unwrap_or(0) as u32, status, at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::Launch;
    use crate::shim::runtime::Runtime;
    use crate::shim::task::IoPaths;
    use crate::trace::Trace;
    use nix::sys::signal::Signal;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::sync::OnceLock;

    /// Events and signals, as they would have gone out.
    #[derive(Default)]
    struct FakeHost {
        events: Mutex<Vec<String>>,
        /// (pid, through a pidfd, signal)
        signals: Mutex<Vec<(i32, bool, Signal)>>,
    }

    impl Host for FakeHost {
        fn publish(&self, topic: &str, _event: Box<dyn containerd_shim::protos::protobuf::MessageDyn>) {
            lock(&self.events).push(topic.rsplit('/').next().unwrap_or(topic).to_string());
        }
        fn pidfd(&self, _pid: i32) -> Option<OwnedFd> {
            std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
        }
        fn signal(&self, pid: i32, pidfd: Option<&OwnedFd>, signal: Signal) -> nix::Result<()> {
            lock(&self.signals).push((pid, pidfd.is_some(), signal));
            Ok(())
        }
    }

    /// A runtime that spawns nothing: execs get pid 300; with `exit_on_start`, the init exits
    /// while it is being started.
    #[derive(Default)]
    struct FakeRuntime {
        idle: bool,
        kills_all: bool,
        fail_exec: bool,
        calls: Arc<Mutex<Vec<String>>>,
        exit_on_start: Arc<OnceLock<Arc<Tasks>>>,
    }

    impl Runtime for FakeRuntime {
        fn start(&self, _launch: &Launch) -> anyhow::Result<()> {
            lock(&self.calls).push("start".into());
            if let Some(tasks) = self.exit_on_start.get() {
                tasks.on_exit(INIT_PID, 3);
            }
            Ok(())
        }
        fn exec(&self, _: &Launch, _: &Trace, _: &str, _: &[u8], _: i32, _: &Stdio) -> anyhow::Result<i32> {
            lock(&self.calls).push("exec".into());
            if self.fail_exec {
                anyhow::bail!("no such module");
            }
            Ok(EXEC_PID)
        }
        fn idle_until_started(&self) -> bool {
            self.idle
        }
        fn kill_all(&self, signal: u32) -> Option<anyhow::Result<()>> {
            self.kills_all.then(|| {
                lock(&self.calls).push(format!("kill_all {signal}"));
                Ok(())
            })
        }
        fn pids(&self, init_pid: i32) -> anyhow::Result<Vec<i32>> {
            Ok(vec![init_pid])
        }
        fn cleanup(&self, _launch: &Launch) -> anyhow::Result<()> {
            lock(&self.calls).push("cleanup".into());
            Ok(())
        }
    }

    const INIT_PID: i32 = 100;
    const EXEC_PID: i32 = 300;

    fn launch() -> Launch {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/app.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"}
        }))
        .unwrap();
        Launch::from_spec("c", Path::new("/b"), &spec, &Default::default(), false).unwrap()
    }

    /// A created task `c` whose init is pid 100, as Task.Create leaves it.
    fn created(runtime: FakeRuntime) -> (Arc<FakeHost>, Arc<Tasks>, Arc<Task>) {
        let host = Arc::new(FakeHost::default());
        let tasks = Arc::new(Tasks::new("ns", host.clone()));
        let init = Process::new(IoPaths::default(), None);
        init.state().hold_exit = true;
        tasks.record_pid(&init, INIT_PID, Instant::now());
        let task = Arc::new(Task::new("c", Path::new("/b"), launch(), Box::new(runtime), init, false, Trace::new(SystemTime::now())));
        assert_eq!(tasks.created(task.clone(), TaskCreate::default()), INIT_PID as u32);
        (host, tasks, task)
    }

    fn events(host: &FakeHost) -> Vec<String> {
        lock(&host.events).clone()
    }

    fn calls(runtime: &FakeRuntime) -> impl Fn() -> Vec<String> {
        let calls = runtime.calls.clone();
        move || lock(&calls).clone()
    }

    fn add_exec(tasks: &Tasks, task: &Task) -> Arc<Exec> {
        let stdio = Stdio::open("", "", "").unwrap();
        tasks.add_exec(task, Exec { id: "e".into(), process: Process::new(IoPaths::default(), Some(stdio)), spec: Vec::new() }).unwrap();
        task.exec("e").unwrap()
    }

    #[test]
    fn create_start_exit_delete() {
        let runtime = FakeRuntime::default();
        let calls = calls(&runtime);
        let (host, tasks, task) = created(runtime);
        assert_eq!(task.init.state().status(), Status::Created);
        assert_eq!(tasks.start_init(&task).unwrap(), INIT_PID);
        assert_eq!(task.init.state().status(), Status::Running);
        assert!(tasks.delete(&task).is_err(), "a running container is not deleted");
        tasks.on_exit(INIT_PID, 7);
        assert_eq!(task.init.wait().status, 7);
        let deleted = tasks.delete(&task).unwrap();
        assert_eq!((deleted.pid, deleted.status), (INIT_PID as u32, 7));
        assert!(tasks.task("c").is_err());
        assert_eq!(events(&host), ["create", "start", "exit", "delete"]);
        assert_eq!(calls(), ["start", "cleanup"]);
    }

    #[test]
    fn an_exit_during_start_follows_the_start_event() {
        let runtime = FakeRuntime::default();
        let exit_on_start = runtime.exit_on_start.clone();
        let (host, tasks, task) = created(runtime);
        let _ = exit_on_start.set(tasks.clone());
        tasks.start_init(&task).unwrap();
        assert_eq!(task.init.wait().status, 3);
        assert_eq!(events(&host), ["create", "start", "exit"]);
        assert!(tasks.start_init(&task).is_err(), "started once");
    }

    #[test]
    fn an_exit_before_the_pid_is_recorded_is_claimed() {
        let host = Arc::new(FakeHost::default());
        let tasks = Tasks::new("ns", host.clone());
        let since = Instant::now();
        tasks.on_exit(INIT_PID, 2);
        let process = Process::new(IoPaths::default(), None);
        process.state().hold_exit = true;
        tasks.record_pid(&process, INIT_PID, since);
        let state = process.state();
        assert_eq!(state.held, Some(2));
        assert!(state.pidfd.is_none(), "the pid may be another process's by now");
    }

    #[test]
    fn killing_a_created_idle_init_ends_it_as_the_signal_would() {
        let (host, tasks, task) = created(FakeRuntime { idle: true, ..Default::default() });
        tasks.kill(&task, None, Signal::SIGTERM as u32, false).unwrap();
        assert_eq!(task.init.wait().status, 128 + Signal::SIGTERM as u32);
        assert_eq!(lock(&host.signals).as_slice(), [(INIT_PID, true, Signal::SIGKILL)]);
        assert_eq!(events(&host), ["create", "exit"]);
        // Its reaped exit changes nothing.
        tasks.on_exit(INIT_PID, 137);
        assert_eq!(task.init.wait().status, 128 + Signal::SIGTERM as u32);
        assert!(tasks.kill(&task, None, Signal::SIGTERM as u32, false).is_err(), "already finished");
    }

    #[test]
    fn kill_all_signals_execs_through_pidfds_unless_the_runtime_does() {
        let (host, tasks, task) = created(FakeRuntime::default());
        tasks.start_init(&task).unwrap();
        let exec = add_exec(&tasks, &task);
        assert_eq!(tasks.start_exec(&task, &exec).unwrap(), EXEC_PID);
        tasks.kill(&task, None, Signal::SIGTERM as u32, true).unwrap();
        let signals = lock(&host.signals).clone();
        assert_eq!(signals, [(EXEC_PID, true, Signal::SIGTERM), (INIT_PID, true, Signal::SIGTERM)]);

        let runtime = FakeRuntime { kills_all: true, ..Default::default() };
        let calls = calls(&runtime);
        let (host, tasks, task) = created(runtime);
        tasks.start_init(&task).unwrap();
        tasks.kill(&task, None, Signal::SIGKILL as u32, true).unwrap();
        assert!(lock(&host.signals).is_empty());
        assert_eq!(calls(), ["start", "kill_all 9"]);
    }

    #[test]
    fn an_exec_runs_exits_and_is_deleted() {
        let (host, tasks, task) = created(FakeRuntime::default());
        tasks.start_init(&task).unwrap();
        let exec = add_exec(&tasks, &task);
        assert!(tasks.add_exec(&task, Exec { id: "e".into(), process: Process::new(IoPaths::default(), None), spec: Vec::new() }).is_err());
        tasks.start_exec(&task, &exec).unwrap();
        assert!(tasks.delete_exec(&task, "e").is_err(), "still running");
        tasks.on_exit(EXEC_PID, 4);
        assert_eq!(exec.process.wait().status, 4);
        assert_eq!(tasks.delete_exec(&task, "e").unwrap().status, 4);
        assert!(task.exec("e").is_none());
        assert_eq!(task.init.state().status(), Status::Running, "the init goes on");
        assert_eq!(events(&host), ["create", "start", "exec-added", "exec-started", "exit"]);
    }

    #[test]
    fn an_exec_that_cannot_start_still_ends() {
        let (_host, tasks, task) = created(FakeRuntime { fail_exec: true, ..Default::default() });
        let exec = add_exec(&tasks, &task);
        assert!(tasks.start_exec(&task, &exec).is_err(), "the container is not running yet");
        tasks.start_init(&task).unwrap();
        assert!(tasks.start_exec(&task, &exec).is_err());
        assert_eq!(exec.process.wait().status, EXEC_START_FAILED);
    }

    #[test]
    fn a_panic_holding_a_process_lock_does_not_wedge_exits() {
        let (host, tasks, task) = created(FakeRuntime::default());
        tasks.start_init(&task).unwrap();
        let poisoner = task.clone();
        let _ = std::thread::spawn(move || {
            let _state = poisoner.init.state();
            panic!("poisoning the lock");
        })
        .join();
        tasks.on_exit(INIT_PID, 1);
        assert_eq!(task.init.wait().status, 1);
        assert_eq!(events(&host), ["create", "start", "exit"]);
    }
}
