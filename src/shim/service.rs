//! The ttrpc Task service: each RPC reads its request and hands one [`Task`] (and one of its
//! processes: the init, or an exec named by `exec_id`) to the state machine in [`Tasks`]. A shim
//! serves every container of a pod.
use super::{
    host::Host,
    classify::{container_kind, ContainerdApi},
    host::Node,
    metrics, options,
    runtime::{self, Runtime},
    lock::lock,
    task::{Exec, IoPaths, Process, Status, Task},
    tasks::{internal, rpc_error, Tasks},
};
use crate::launch::{rootfs, stdio::Stdio, Launch};
use crate::image::detect::Kind;
use crate::trace::Trace;
use anyhow::{anyhow, Context};
use containerd_shim::{
    api,
    protos::{
        events::task::{TaskCreate, TaskIO, TaskPaused, TaskResumed},
        topics,
        ttrpc::Code,
    },
    publisher::RemotePublisher,
    ExitSignal, TtrpcContext, TtrpcResult,
};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

#[derive(Clone)]
pub struct Service {
    namespace: String,
    /// containerd's gRPC address (the shim's `-address`), to look images up.
    address: String,
    host: Arc<Node>,
    exit: Arc<ExitSignal>,
    tasks: Arc<Tasks>,
}

impl Service {
    pub fn new(namespace: &str, address: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Service {
        let host = Arc::new(Node { publisher, namespace: namespace.to_string() });
        let tasks = Arc::new(Tasks::new(namespace, host.clone()));
        let reaper = tasks.clone();
        std::thread::spawn(move || reaper.handle_exits());
        Service { namespace: namespace.to_string(), address: address.to_string(), host, exit, tasks }
    }

    /// Mounts the rootfs, classifies the container and creates its init in its runtime (for
    /// wasm its cgroup and a process waiting for its plan, for Linux `runc create`).
    fn prepare(&self, req: &api::CreateTaskRequest, trace: Trace) -> anyhow::Result<Task> {
        let bundle = Path::new(&req.bundle);
        let spec: oci_spec::runtime::Spec = {
            let path = bundle.join("config.json");
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            // serde_json says what is wrong and where; oci-spec's own loader only "serde failed".
            serde_json::from_slice(&bytes).context("malformed config.json")?
        };
        if let Some(parent) = spec.annotations().as_ref().and_then(|a| a.get(crate::trace::PARENT_ANNOTATION)) {
            trace.set_parent(parent);
        }
        let options = options::runtime_options(req.options.as_ref())?;
        let launch = Launch::from_spec(&req.id, bundle, &spec, &options.engine, options.systemd_cgroup)?;
        if req.terminal {
            return Err(anyhow!("a terminal (-t) is not supported by the wasmedge shim"));
        }
        let mounted = rootfs::mount(&req.rootfs, &launch.rootfs)?;
        let created = Stdio::open(&req.stdin, &req.stdout, &req.stderr).and_then(|stdio| {
            let kind = container_kind(&spec, &launch, &ContainerdApi { address: &self.address, namespace: &self.namespace });
            let since = Instant::now();
            let (runtime, pid): (Box<dyn Runtime>, i32) = match kind {
                Kind::Wasm(why) => {
                    log::info!("{}: wasm container: {why}", req.id);
                    let (wasm, pid) = runtime::create_wasm(&spec, &launch, &stdio, &trace)?;
                    (Box::new(wasm), pid)
                }
                Kind::Linux => {
                    log::info!("{}: Linux container ({} is not wasm): running it with runc", req.id, launch.entrypoint.display());
                    let (runc, pid) = runtime::create_runc(bundle, &launch, &stdio, &trace)?;
                    (Box::new(runc), pid)
                }
            };
            // The init holds its stdio now: the shim's copies close here.
            Ok((runtime, pid, since))
        });
        let (runtime, pid, since) = created.inspect_err(|_| {
            if mounted {
                let _ = rootfs::unmount(&launch.rootfs);
            }
        })?;
        let init = Process::new(IoPaths::new(&req.stdin, &req.stdout, &req.stderr, req.terminal), None);
        init.state().hold_exit = true; // until TaskCreate is out
        self.tasks.record_pid(&init, pid, since);
        Ok(Task::new(&req.id, bundle, launch, runtime, init, mounted, trace))
    }
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
        if self.tasks.exists(&req.id) {
            return Err(rpc_error(Code::ALREADY_EXISTS, format!("container {} already exists", req.id)));
        }
        let trace = Trace::new(SystemTime::now());
        let task = Arc::new(self.prepare(&req, trace).map_err(|e| {
            log::error!("{}: create failed: {e:#}", req.id);
            rpc_error(Code::FAILED_PRECONDITION, format!("{e:#}"))
        })?);
        let pid = self.tasks.created(task, TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal, ..Default::default() }).into(),
            ..Default::default()
        });
        Ok(api::CreateTaskResponse { pid, ..Default::default() })
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let task = self.tasks.task(&req.id)?;
        let result = if req.exec_id.is_empty() {
            self.tasks.start_init(&task)
        } else {
            let exec = Tasks::exec_of(&task, &req.exec_id)?;
            self.tasks.start_exec(&task, &exec)
        };
        let pid = result.inspect_err(|e| log::error!("{}: start {} failed: {e:?}", req.id, req.exec_id))?;
        // The container runs from here on, mostly for longer than it took to start: what its
        // start left free goes back to the kernel.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
        Ok(api::StartResponse { pid: pid as u32, ..Default::default() })
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let task = self.tasks.task(&req.id)?;
        let exec = if req.exec_id.is_empty() { None } else { Some(Tasks::exec_of(&task, &req.exec_id)?) };
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
        let task = self.tasks.task(&req.id)?;
        let exit = if req.exec_id.is_empty() { task.init.wait() } else { Tasks::exec_of(&task, &req.exec_id)?.process.wait() };
        Ok(api::WaitResponse { exit_status: exit.status, exited_at: Some(exit.at).into(), ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let task = self.tasks.task(&req.id)?;
        let exec_id = Some(req.exec_id.as_str()).filter(|id| !id.is_empty());
        self.tasks.kill(&task, exec_id, req.signal, req.all)?;
        Ok(api::Empty::default())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let task = self.tasks.task(&req.id)?;
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
        let io = IoPaths::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        self.tasks.add_exec(&task, Exec { id: req.exec_id, process: Process::new(io, Some(stdio)), spec })?;
        Ok(api::Empty::default())
    }

    /// No process of this shim has a terminal.
    fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        self.tasks.task(&req.id)?;
        Ok(api::Empty::default())
    }

    /// The process holds its own end of stdin; containerd closing its end is the EOF.
    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        self.tasks.task(&req.id)?;
        Ok(api::Empty::default())
    }

    fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        let task = self.tasks.task(&req.id)?;
        let deleted = if req.exec_id.is_empty() { self.tasks.delete(&task)? } else { self.tasks.delete_exec(&task, &req.exec_id)? };
        Ok(api::DeleteResponse { pid: deleted.pid, exit_status: deleted.status, exited_at: Some(deleted.at).into(), ..Default::default() })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let task = self.tasks.task(&req.id)?;
        let mut pids = match task.init.running_pid() {
            Some(pid) => task.runtime.pids(pid).map_err(internal)?,
            None => Vec::new(),
        };
        for exec in lock(&task.execs).values() {
            pids.extend(exec.process.running_pid().filter(|p| !pids.contains(p)));
        }
        let processes = pids
            .into_iter()
            .map(|pid| containerd_shim::protos::api::ProcessInfo { pid: pid as u32, ..Default::default() })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let task = self.tasks.task(&req.id)?;
        Ok(api::StatsResponse { stats: Some(metrics::stats(&task)?).into(), ..Default::default() })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let task = self.tasks.task(&req.id)?;
        metrics::freezer(&task)?.freeze().map_err(|e| rpc_error(Code::INTERNAL, format!("freezing {}: {e}", req.id)))?;
        task.paused.store(true, Ordering::SeqCst);
        self.host.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(TaskPaused { container_id: req.id, ..Default::default() }));
        Ok(api::Empty::default())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        let task = self.tasks.task(&req.id)?;
        metrics::freezer(&task)?.thaw().map_err(|e| rpc_error(Code::INTERNAL, format!("thawing {}: {e}", req.id)))?;
        task.paused.store(false, Ordering::SeqCst);
        self.host.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(TaskResumed { container_id: req.id, ..Default::default() }));
        Ok(api::Empty::default())
    }

    /// New cgroup limits for a running container (`ctr task update`, `docker update`, CRI
    /// UpdateContainerResources): containerd sends the OCI `LinuxResources` as JSON.
    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let task = self.tasks.task(&req.id)?;
        let any = req.resources.as_ref().ok_or_else(|| rpc_error(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("malformed resources for {}: {e}", req.id)))?;
        let cg = metrics::cgroup_of(&task)?;
        containerd_shim::cgroup::update_resources(&cg, &resources).map_err(|e| rpc_error(Code::INTERNAL, format!("updating {}: {e}", req.id)))?;
        log::info!("{}: resources updated", req.id);
        Ok(api::Empty::default())
    }

    fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.tasks.task(&req.id).ok().and_then(|t| t.init.state().pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    /// A pod's shim serves all its containers: it exits once the last one is deleted.
    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.tasks.is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
